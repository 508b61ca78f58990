package sql

import "testing"

func FuzzParse(f *testing.F) {
	for _, q := range []string{
		"SELECT * FROM public.users WHERE id = 1",
		"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
		"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
		"COPY t TO PROGRAM 'x'; DROP SCHEMA s CASCADE; DROP DATABASE d",
		"GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob",
		"SELECT pg_catalog.pg_read_file('/etc/passwd')",
		"CREATE TABLE n (LIKE t, b int REFERENCES o(id)) INHERITS (par)",
		"COMMENT ON COLUMN a.b.c.d IS 'x'",
		"",
		";;",
		"SELECT * FROMM t",
		"\x00\xff garbage )(",
		"SELECT 'unterminated",
	} {
		f.Add(q)
	}
	p := NewParser(64)
	f.Fuzz(func(t *testing.T, query string) {
		stmts, err := p.Parse(query)
		if err != nil {
			return
		}
		if stmts == nil {
			t.Fatalf("Parse(%q) returned nil statements and no error", query)
		}
		for i, s := range stmts {
			if s.Command == "" || s.Node == "" || s.Relations == nil || s.Functions == nil || s.AST == nil {
				t.Fatalf("Parse(%q): statement %d incomplete: %+v", query, i, s)
			}
		}
	})
}
