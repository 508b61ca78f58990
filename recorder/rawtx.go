package recorder

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
)

// rawStmts are the ingester's statements prepared on the driver connection
// itself: a copy runs them through database/sql's Conn.Raw, without a
// database/sql transaction (whose goroutine, context and per-call argument
// conversion cost more than SQLite's own work for small batches) and without
// compiling BEGIN and COMMIT again for every batch.
type rawStmts struct {
	conn                                      driver.Conn // the connection they were prepared on
	begin, commit, rollback, insert, insertID driver.Stmt
}

func (r *rawStmts) close() error {
	var errs []error
	for _, st := range []driver.Stmt{r.begin, r.commit, r.rollback, r.insert, r.insertID} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	*r = rawStmts{}
	return errors.Join(errs...)
}

// prepare makes sure r holds statements prepared on dc.
func (r *rawStmts) prepare(ctx context.Context, dc driver.Conn) error {
	if r.conn == dc && r.insert != nil {
		return nil
	}
	if r.conn != nil {
		// A new connection (the old one broke): the old statements died
		// with it.
		*r = rawStmts{}
	}
	pc, ok := dc.(driver.ConnPrepareContext)
	if !ok {
		return fmt.Errorf("driver connection %T cannot prepare statements", dc)
	}
	for _, x := range []struct {
		dst *driver.Stmt
		sql string
	}{
		{&r.begin, "BEGIN IMMEDIATE"}, {&r.commit, "COMMIT"}, {&r.rollback, "ROLLBACK"},
		{&r.insert, insertBlockSQL}, {&r.insertID, insertIDSQL},
	} {
		st, err := pc.PrepareContext(ctx, x.sql)
		if err != nil {
			return errors.Join(fmt.Errorf("prepare %q: %w", x.sql, err), r.close())
		}
		*x.dst = st
	}
	r.conn = dc
	return nil
}

func execRaw(ctx context.Context, st driver.Stmt, args []driver.NamedValue) error {
	_, err := st.(driver.StmtExecContext).ExecContext(ctx, args)
	return err
}

// idChecker looks event IDs up in the database on a query-only connection of
// its own, with statements prepared on the driver connection (one per number
// of IDs up to idCheckChunk): the leader of every batch asks it, so it must
// cost little more than SQLite's index lookups.
type idChecker struct {
	db    *sql.DB // one query_only connection; used by the leader only
	conn  driver.Conn
	stmts map[int]driver.Stmt
}

const idCheckChunk = 32

// stored reports which IDs of batch are in the database.
func (c *idChecker) stored(batch []*pending) (map[string]bool, error) {
	ctx := context.Background()
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var taken map[string]bool
	err = conn.Raw(func(dc any) error {
		if c.conn != dc {
			c.closeStmts()
			c.conn, _ = dc.(driver.Conn)
			c.stmts = map[int]driver.Stmt{}
		}
		if c.conn == nil {
			return fmt.Errorf("driver connection %T", dc)
		}
		for len(batch) > 0 {
			n := min(len(batch), idCheckChunk)
			st, err := c.stmt(ctx, n)
			if err != nil {
				return err
			}
			args := make([]driver.NamedValue, n)
			for i := range n {
				args[i] = driver.NamedValue{Ordinal: i + 1, Value: batch[i].draft.ID()}
			}
			rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
			if err != nil {
				return err
			}
			dest := make([]driver.Value, 1)
			for {
				if err := rows.Next(dest); err != nil {
					rows.Close()
					if !errors.Is(err, io.EOF) {
						return err
					}
					break
				}
				if taken == nil {
					taken = map[string]bool{}
				}
				switch id := dest[0].(type) {
				case string:
					taken[id] = true
				case []byte:
					taken[string(id)] = true
				}
			}
			batch = batch[n:]
		}
		return nil
	})
	return taken, err
}

func (c *idChecker) stmt(ctx context.Context, n int) (driver.Stmt, error) {
	if st := c.stmts[n]; st != nil {
		return st, nil
	}
	q := `SELECT id FROM event_ids WHERE id IN (?` + strings.Repeat(",?", n-1) + `)`
	st, err := c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", q, err)
	}
	c.stmts[n] = st
	return st, nil
}

func (c *idChecker) closeStmts() {
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts = nil
}

// close closes the statements and the connection.
func (c *idChecker) close() error {
	if c.db == nil {
		return nil
	}
	conn, err := c.db.Conn(context.Background())
	if err == nil {
		err = conn.Raw(func(any) error { c.closeStmts(); return nil })
		err = errors.Join(err, conn.Close())
	}
	return errors.Join(err, c.db.Close())
}
