package postgres

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies/decision"
)

// TestColumnDDL: the columns a session's statements create, redefine or
// rename, with what a generated one reads, and the masks they get.
func TestColumnDDL(t *testing.T) {
	p := sql.NewParser(0)
	stmts, err := p.Parse(`CREATE TABLE s.c (id int, email text,
			dom text GENERATED ALWAYS AS (split_part(c.email, '@', 2) || id::text) STORED);
		ALTER TABLE c ADD COLUMN g text GENERATED ALWAYS AS (md5(email)) STORED, ADD COLUMN h int,
			ADD COLUMN one int GENERATED ALWAYS AS (1) STORED,
			ALTER COLUMN k SET EXPRESSION AS (upper(name));
		ALTER TABLE t RENAME COLUMN a TO ssn;
		ALTER TABLE t RENAME TO u;
		SELECT email FROM c`)
	if err != nil {
		t.Fatal(err)
	}
	got := columnDDL(stmts)
	// A generated column's sources come in no particular order.
	slices.SortStableFunc(got, func(a, b derivedCol) int {
		return strings.Compare(fmt.Sprint(a.table, a.column, a.source), fmt.Sprint(b.table, b.column, b.source))
	})
	want := []derivedCol{
		{schema: "s", table: "c", column: "dom", source: "email"},
		{schema: "s", table: "c", column: "dom", source: "id"},
		{schema: "s", table: "c", column: "email"},
		{table: "c", column: "g", source: "email"},
		{table: "c", column: "h"},
		{schema: "s", table: "c", column: "id"},
		{table: "c", column: "k", source: "name"},
		{table: "c", column: "one"}, // generated from no column
		{table: "t", column: "ssn", renamed: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("columnDDL:\n got %+v\nwant %+v", got, want)
	}

	// A generated column reading a masked column gets that mask's
	// replacement; one reading other columns gets none.
	cols := withDerived([]decision.Mask{{Column: "email", With: "x"}, {Column: "other.name"}}, got)
	if want := []decision.Mask{{Column: "email", With: "x"}, {Column: "other.name"},
		{Column: "s.c.dom", With: "x"}, {Column: "c.g", With: "x"}}; !slices.Equal(cols, want) {
		t.Errorf("withDerived: got %+v, want %+v", cols, want)
	}
	for _, c := range []struct {
		masks   []decision.Mask
		unknown bool
		tables  map[string]bool
	}{
		{[]decision.Mask{{Column: "email"}}, true, nil},            // s.c.email added
		{[]decision.Mask{{Column: "c.h"}}, true, nil},              // c.h added
		{[]decision.Mask{{Column: "other.s.c.email"}}, false, nil}, // not a mask name regate knows
		{[]decision.Mask{{Column: "x.c.email"}}, false, nil},       // another schema
		{[]decision.Mask{{Column: "ssn"}}, false, map[string]bool{"t": true}},
		{[]decision.Mask{{Column: "name"}}, false, nil}, // read, not added
	} {
		unknown, tables := pendingMasks(c.masks, got)
		if unknown != c.unknown || !maps.Equal(tables, c.tables) {
			t.Errorf("pendingMasks(%v) = %v, %v; want %v, %v", c.masks, unknown, tables, c.unknown, c.tables)
		}
	}
	if unknown, tables := pendingMasks(withDerived([]decision.Mask{{Column: "name"}}, got), got); !unknown || tables != nil {
		t.Errorf("a generated column reading a masked one: unknown %v tables %v", unknown, tables)
	}
}

// TestWithInherited: a mask naming a table covers its descendants at any
// depth, in the schema a three-part mask names; a mask by name alone needs
// nothing more.
func TestWithInherited(t *testing.T) {
	edges := []inheritEdge{
		{"public", "logins", "public", "logins_2026"},
		{"public", "logins_2026", "part", "logins_2026_a"},
		{"other", "logins", "other", "logins_x"},
		{"public", "t", "public", "t_child"},
	}
	got := withInherited([]decision.Mask{{Column: "public.logins.secret", With: "h"}, {Column: "email"},
		{Column: "t.x"}}, edges)
	want := []decision.Mask{{Column: "public.logins.secret", With: "h"}, {Column: "email"}, {Column: "t.x"},
		{Column: "public.logins_2026.secret", With: "h"}, {Column: "public.t_child.x"},
		{Column: "part.logins_2026_a.secret", With: "h"}}
	if !slices.Equal(got, want) {
		t.Errorf("withInherited:\n got %+v\nwant %+v", got, want)
	}
	if got := withInherited([]decision.Mask{{Column: "logins.secret"}}, edges); len(got) != 4 {
		t.Errorf("a two-part mask covers the descendants of every schema's logins: %+v", got)
	}
}
