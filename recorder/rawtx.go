package recorder

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
)

// rawStmts are the writer's statements prepared on the driver connection
// itself: a batch runs them through database/sql's Conn.Raw, without a
// database/sql transaction (whose goroutine, context and per-call argument
// conversion cost more than SQLite's own work for small batches) and without
// compiling BEGIN and COMMIT again for every batch.
type rawStmts struct {
	conn                                  driver.Conn // the connection they were prepared on
	begin, commit, rollback, head, insert driver.Stmt
}

func (r *rawStmts) close() error {
	var errs []error
	for _, st := range []driver.Stmt{r.begin, r.commit, r.rollback, r.head, r.insert} {
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
		{&r.head, headSQL}, {&r.insert, insertSQL},
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

// headRaw reads the chain head (seq 0 and GenesisPrevHash when empty).
func headRaw(ctx context.Context, st driver.Stmt) (int64, string, error) {
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, nil)
	if err != nil {
		return 0, "", err
	}
	dest := make([]driver.Value, 2)
	err = rows.Next(dest)
	cerr := rows.Close()
	if errors.Is(err, io.EOF) {
		return 0, GenesisPrevHash, cerr
	}
	if err != nil {
		return 0, "", err
	}
	seq, ok1 := dest[0].(int64)
	var hash string
	switch h := dest[1].(type) {
	case string:
		hash = h
	case []byte:
		hash = string(h)
	default:
		ok1 = false
	}
	if !ok1 {
		return 0, "", fmt.Errorf("unexpected chain head types %T, %T", dest[0], dest[1])
	}
	return seq, hash, cerr
}
