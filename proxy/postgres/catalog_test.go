package postgres

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/regate/regate/test/testenv"
)

// TestRowFuncQuery runs the catalog query of functions of a row on a real
// PostgreSQL: its built-ins, less the harmless ones, are exactly the static
// list the syntax check starts from (which PostgreSQL 15's pg_proc was read
// for; hstore's is an extension's), a function of the database's own that
// takes a table's row or any type is found, functions that attribute notation
// cannot call with a row are not, and a count of the database's own is
// reported.
func TestRowFuncQuery(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE customers (id int, email text);
		CREATE FUNCTION display(c customers) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$;
		CREATE FUNCTION "Shout"(r anyelement, n int DEFAULT 1) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
		CREATE FUNCTION two(c customers, n int) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$;
		CREATE FUNCTION of_text(t text) RETURNS text LANGUAGE sql AS $$ SELECT t $$;
		CREATE AGGREGATE count(text) (SFUNC = textcat, STYPE = text);`)
	out := pg.Psql(t, "app", rowFuncQuery)
	builtin, own := map[string]bool{}, map[string]bool{}
	ownCount := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("unexpected row %q", line)
		}
		name := strings.ToLower(f[0])
		switch {
		case f[2] != "t":
			ownCount = true
		case f[1] == "t" && !harmlessRowFuncs[name]:
			builtin[name] = true
		case f[1] != "t":
			own[name] = true
		}
	}
	want := maps.Clone(wholeRowFuncs)
	delete(want, "hstore")
	if !maps.Equal(builtin, want) {
		t.Errorf("built-in functions of a row:\n got %v\nwant %v", slices.Sorted(maps.Keys(builtin)), slices.Sorted(maps.Keys(want)))
	}
	if !own["display"] || !own["shout"] || own["two"] || own["of_text"] {
		t.Errorf("the database's own functions of a row: %v (want display and shout, not two or of_text)", slices.Sorted(maps.Keys(own)))
	}
	if !ownCount {
		t.Error("the database's own count(text) is not reported")
	}
}
