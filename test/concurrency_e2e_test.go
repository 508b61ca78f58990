package test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// TestConcurrentClients: many pooled connections through regate at once, as
// pgx's stdlib TestConnConcurrency does, in each extended-protocol mode.
func TestConcurrentClients(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", "CREATE TABLE conc (id int PRIMARY KEY, str text); ALTER TABLE conc OWNER TO app;")
	tok := iss.Token(t, "agent-c", audience, "agents")
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := pgx.ParseConfig(connString(gw.Listen, tok))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			db := stdlib.OpenDB(*cfg)
			defer db.Close()
			pg.Psql(t, "app", "DELETE FROM conc")
			const n = 50
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for i := 1; i <= n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					errs <- roundTrip(db, i)
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func roundTrip(db *sql.DB, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "INSERT INTO conc VALUES ($1)", i); err != nil {
		return fmt.Errorf("insert %d: %w", i, err)
	}
	if _, err := db.ExecContext(ctx, "UPDATE conc SET str = $1 WHERE id = $2", fmt.Sprint(i), i); err != nil {
		return fmt.Errorf("update %d: %w", i, err)
	}
	var s string
	if err := db.QueryRowContext(ctx, "SELECT str FROM conc WHERE id = $1", i).Scan(&s); err != nil || s != fmt.Sprint(i) {
		return fmt.Errorf("select %d: %q %v", i, s, err)
	}
	return nil
}
