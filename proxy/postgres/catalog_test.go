package postgres

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies/decision"
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

// TestRowFuncsRefresh checks the function set's cache on a real PostgreSQL: a
// set past rowFuncRefresh is still served at once and reloaded in the
// background (the next lookups see a function created meanwhile), one past
// rowFuncTTL is reloaded before it is served, and a closed catalog reloads
// nothing.
func TestRowFuncsRefresh(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE customers (id int, email text)`)
	c, get := testCatalog(t, pg)
	age := func(f *rowFuncSet, d time.Duration) {
		c.mu.Lock()
		f.loaded = time.Now().Add(-d)
		c.mu.Unlock()
	}

	f1 := get()
	if f1.names["later"] {
		t.Fatal("function later found before it was created")
	}
	pg.Psql(t, "app", `CREATE FUNCTION later(c customers) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$`)
	if f := get(); f != f1 || f.names["later"] {
		t.Fatal("a fresh set was not served from the cache")
	}

	// Due for a reload: served as it is, reloaded behind the caller's back.
	age(f1, rowFuncRefresh+time.Second)
	if f := get(); f != f1 || f.names["later"] {
		t.Fatal("a set due for a reload was not served as it was")
	}
	// Polled for less time than the set has left before it expires (when
	// the lookup itself would reload it).
	deadline := time.Now().Add(rowFuncTTL - rowFuncRefresh - 2*time.Second)
	for !get().names["later"] {
		if time.Now().After(deadline) {
			t.Fatal("the background reload did not bring function later in")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f2 := get()
	c.mu.Lock()
	fresh := time.Since(f2.loaded) < rowFuncRefresh
	c.mu.Unlock()
	if f2 == f1 || !fresh {
		t.Fatalf("after the reload: same set %v, fresh %v", f2 == f1, fresh)
	}

	// Expired: reloaded before it is served.
	pg.Psql(t, "app", `DROP FUNCTION later(customers)`)
	age(f2, rowFuncTTL+time.Second)
	if f := get(); f.names["later"] {
		t.Fatal("an expired set was served without a reload")
	}

	// Closed: a set due for a reload is served, nothing reconnects.
	f3 := get()
	age(f3, rowFuncRefresh+time.Second)
	c.close()
	if f := get(); f != f3 {
		t.Fatal("a closed catalog did not serve its set")
	}
	c.bg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.refreshing) != 0 {
		t.Errorf("reloads still marked in progress after close: %v", c.refreshing)
	}
	for name, db := range c.dbs {
		if db.conn != nil {
			t.Errorf("database %q has a catalog connection after close", name)
		}
	}
}

// TestViewMasks: the catalog reads the database's views (parsed once, read
// again only when one is created, replaced or altered), and the masks derived
// from them follow masked columns through view columns, views of views, set
// operations and computed values.
func TestViewMasks(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE customers (id int, email text, name text);
		CREATE VIEW v1 AS SELECT id, email AS contact, lower(email) AS low, name FROM customers;
		CREATE VIEW v2 AS SELECT contact AS c2, name FROM v1;
		CREATE VIEW u AS SELECT id, name FROM customers UNION SELECT id, email FROM customers;
		CREATE VIEW clean AS SELECT id, name FROM customers WHERE email <> '';
		CREATE MATERIALIZED VIEW mv AS SELECT email FROM customers`)
	c, get := testCatalog(t, pg)
	defer c.close()
	expire := func() {
		c.invalidate("app")
	}
	f1 := get()
	if f1.views == nil || len(f1.views.views) != 5 {
		t.Fatalf("views: %+v", f1.views)
	}
	for _, v := range f1.views.views {
		if v.query == nil {
			t.Errorf("view %s.%s: definition not parsed", v.schema, v.name)
		}
	}
	masks := func(f *rowFuncSet) []string {
		var out []string
		for _, o := range f.views.withViews([]decision.Mask{{Column: "email"}}, 1, rowFuncs{})[1:] {
			out = append(out, o.Column)
		}
		slices.Sort(out)
		return out
	}
	// u's second column carries email in one branch of its UNION; its first
	// carries id in both.
	want := []string{"public.mv.email", "public.u.name", "public.v1.contact", "public.v1.low", "public.v2.c2"}
	if got := masks(f1); !slices.Equal(got, want) {
		t.Errorf("derived masks:\n got %v\nwant %v", got, want)
	}
	// Nothing changed: the parsed definitions are reused.
	expire()
	if f2 := get(); f2.views != f1.views {
		t.Error("unchanged views were read again")
	}
	// A replaced view and a renamed view column are read again.
	pg.Psql(t, "app", `CREATE OR REPLACE VIEW clean AS SELECT id, name, email AS e FROM customers`)
	expire()
	f3 := get()
	if f3.views == f1.views || !slices.Contains(masks(f3), "public.clean.e") {
		t.Errorf("a replaced view: same set %v, masks %v", f3.views == f1.views, masks(f3))
	}
	pg.Psql(t, "app", `ALTER VIEW v2 RENAME COLUMN c2 TO c3`)
	expire()
	if f4 := get(); f4.views == f3.views || !slices.Contains(masks(f4), "public.v2.c3") {
		t.Errorf("a renamed view column: same set %v, masks %v", f4.views == f3.views, masks(f4))
	}
}

// testCatalog returns a catalog on pg's database app, and a lookup of its
// function set that fails the test on an error.
func testCatalog(t *testing.T, pg *testenv.Postgres) (*catalog, func() *rowFuncSet) {
	s := &Server{cfg: Config{Upstream: pg.Addr(), Credentials: Credentials{User: pg.AppUser, Password: pg.AppPassword},
		Parser: sql.NewParser(0)}, log: hclog.NewNullLogger()}
	c := &s.catalog
	c.s = s
	return c, func() *rowFuncSet {
		t.Helper()
		f, err := c.rowFuncs(context.Background(), "app")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
}
