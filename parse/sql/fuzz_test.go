package sql

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

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

// FuzzTemplates checks that a text parsed through a template (made from a
// variant of it with other integer values) is exactly what parsing it gives.
func FuzzTemplates(f *testing.F) {
	for _, q := range templateQueries {
		f.Add(q, uint64(1))
	}
	f.Fuzz(func(t *testing.T, query string, seed uint64) {
		want, werr := parseSQL(query)
		r := rand.New(rand.NewPCG(seed, seed>>1))
		p := NewParser(8)
		// Another value for each candidate literal (same length, no leading
		// zero), everything else kept: the same shape.
		lits, _ := scanLiterals(query)
		b := []byte(query)
		for _, l := range lits {
			b[l.off] = byte('1' + r.IntN(9))
			for i := l.off + 1; i < l.end; i++ {
				b[i] = byte('0' + r.IntN(10))
			}
		}
		if _, err := p.Parse(string(b)); err != nil {
			return
		}
		got, gerr := p.Parse(query)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: parse error %v, through the parser %v", query, werr, gerr)
		}
		for i := range got {
			checkPatches(t, got[i])
			got[i].Base, got[i].Patches = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", query, got, want)
		}
	})
}
