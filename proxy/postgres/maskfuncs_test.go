package postgres

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/test/testenv"
)

// TestFuncTaint: which of a database's functions return masked values, and
// under which result columns, from their definitions.
func TestFuncTaint(t *testing.T) {
	p := sql.NewParser(0)
	def := func(name string, outs []string, lang, src string) *funcDef {
		fd := &funcDef{name: name, outs: outs}
		fd.read(p, lang, src)
		return fd
	}
	sqlFn := func(name string, outs []string, body string) *funcDef {
		return def(name, outs, "sql", "CREATE FUNCTION "+name+"() RETURNS text LANGUAGE sql AS $f$"+body+"$f$")
	}
	plFn := func(name string, body string) *funcDef {
		return def(name, []string{name}, "plpgsql", "CREATE FUNCTION "+name+"() RETURNS text LANGUAGE plpgsql AS $f$"+body+"$f$")
	}
	python := &funcDef{name: "py", outs: []string{"py"}, opaque: "is written in plpython3u, whose code regate does not read"}
	fs := &funcSet{funcs: []*funcDef{
		sqlFn("get_email", []string{"get_email"}, "SELECT email FROM customers WHERE id = 1"),
		sqlFn("all_rows", []string{"id", "email", "name"}, "SELECT * FROM customers"),
		sqlFn("all_orders", []string{"id", "total"}, "SELECT * FROM orders"),
		sqlFn("swap", []string{"email", "contact"}, "SELECT name, email FROM customers"),
		sqlFn("same", []string{"id", "email"}, "SELECT 1; SELECT id, email FROM customers"),
		sqlFn("unioned", []string{"id", "contact"}, "SELECT id, name FROM customers UNION SELECT id, email FROM customers"),
		sqlFn("lowered", []string{"id", "email"}, "SELECT id, lower(email) FROM customers"),
		sqlFn("discarded", []string{"n"}, "SELECT email FROM customers; SELECT name FROM customers"),
		sqlFn("param", []string{"param"}, "SELECT lower(email)"), // email: a parameter, no relation
		sqlFn("wrap", []string{"wrap"}, "SELECT upper(get_email())"),
		sqlFn("wrap2", []string{"wrap2"}, "SELECT wrap()"),
		sqlFn("stash", []string{"stash"}, "INSERT INTO notes SELECT email FROM customers; SELECT 1"),
		sqlFn("copier", []string{"copier"}, "UPDATE customers SET name = email; SELECT 1"),
		sqlFn("archiver", []string{"archiver"}, "INSERT INTO archive SELECT * FROM orders; SELECT 1"),
		plFn("pl_into", "DECLARE v text; BEGIN SELECT email INTO v FROM customers; RETURN 'x'; END"),
		plFn("pl_assign", "DECLARE v text; BEGIN v := (SELECT max(email) FROM customers); RETURN v; END"),
		plFn("pl_count", "BEGIN RETURN (SELECT count(*) FROM customers); END"),
		plFn("pl_dyn", "BEGIN EXECUTE 'SELECT 1'; RETURN 'x'; END"),
		def("pl_query", []string{"id", "contact"}, "plpgsql", "CREATE FUNCTION pl_query() RETURNS TABLE (id int, contact text) "+
			"LANGUAGE plpgsql AS $f$BEGIN RETURN QUERY SELECT id, email FROM customers; END$f$"),
		python,
	}, relCols: map[string]map[string]bool{
		"customers": {"id": true, "email": true, "name": true},
		"orders":    {"id": true, "total": true},
		"archive":   {"id": true, "total": true},
	}}
	calls := fs.taint([]decision.Mask{{Column: "email"}}, nil, rowFuncs{}, nil)
	type want struct {
		hides bool
		names []string
	}
	wants := map[string]want{
		"get_email": {true, []string{"get_email"}},
		"all_rows":  {false, []string{"email"}}, // email comes out as email: masked by name
		"swap":      {true, []string{"contact"}},
		"same":      {false, []string{"email"}},
		"unioned":   {true, []string{"contact"}},
		"lowered":   {false, []string{"email"}},
		"wrap":      {true, []string{"wrap"}},
		"wrap2":     {true, []string{"wrap2"}},
		"stash":     {true, []string{"stash"}},
		"copier":    {true, []string{"copier"}},
		"pl_into":   {true, []string{"pl_into"}},
		"pl_assign": {true, []string{"pl_assign"}},
		"pl_dyn":    {true, []string{"pl_dyn"}},
		"pl_query":  {true, []string{"contact"}},
		"py":        {true, []string{"py"}},
	}
	for name, w := range wants {
		got, ok := calls[name]
		if !ok || got.hides != w.hides || !slices.Equal(got.names, w.names) {
			t.Errorf("%s: got %+v (found %v), want hides=%v names=%v", name, got, ok, w.hides, w.names)
		}
	}
	for _, name := range []string{"all_orders", "discarded", "param", "pl_count", "archiver"} {
		if got, ok := calls[name]; ok {
			t.Errorf("%s returns no masked value, got %+v", name, got)
		}
	}
	if calls["pl_dyn"].why != "runs SQL it builds while it runs (EXECUTE)" {
		t.Errorf("pl_dyn: why %q", calls["pl_dyn"].why)
	}
	// Under a mask that names the table, email coming out as email is
	// matched by no name mask: all_rows hides it too.
	calls = fs.taint([]decision.Mask{{Column: "customers.email"}}, nil, rowFuncs{}, nil)
	if got := calls["all_rows"]; !got.hides {
		t.Errorf("all_rows under customers.email: got %+v, want hides", got)
	}
}

// TestFunctionsLoad reads a real PostgreSQL's functions: the result columns
// of each kind of function, definitions read once and again when replaced,
// and the columns of the relations their code names, read at every load, so
// that a column added to such a relation is seen.
func TestFunctionsLoad(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE customers (id int, email text, name text);
		CREATE TABLE orders (id int, total int);
		CREATE FUNCTION scalar_fn(p int) RETURNS text LANGUAGE sql AS 'SELECT name FROM customers WHERE id = p';
		CREATE FUNCTION table_fn() RETURNS TABLE (i int, contact text) LANGUAGE sql BEGIN ATOMIC SELECT id, email FROM customers; END;
		CREATE FUNCTION setof_fn() RETURNS SETOF customers LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY SELECT * FROM customers; END $$;
		CREATE FUNCTION out_fn(p int, OUT a int, OUT b text) LANGUAGE sql AS 'SELECT id, name FROM customers WHERE id = p';
		CREATE PROCEDURE inout_proc(p int, INOUT e text) LANGUAGE plpgsql AS $$ BEGIN SELECT email INTO e FROM customers; END $$;
		CREATE FUNCTION orders_fn() RETURNS TABLE (x int, y int) LANGUAGE sql AS 'SELECT * FROM orders';
		CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;`)
	c, get := testCatalog(t, pg)
	defer c.close()
	f1 := get()
	if f1.fns == nil {
		t.Fatal("no functions loaded")
	}
	got := map[string][]string{}
	for _, fd := range f1.fns.funcs {
		if fd.opaque != "" {
			t.Errorf("%s: %s", fd.name, fd.opaque)
		}
		got[fd.name] = fd.outs
	}
	want := map[string][]string{
		"scalar_fn": {"scalar_fn"}, "table_fn": {"i", "contact"}, "setof_fn": {"id", "email", "name"},
		"out_fn": {"a", "b"}, "inout_proc": {"e"}, "orders_fn": {"x", "y"},
	}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("functions and result columns:\n got %v\nwant %v", got, want)
	}
	calls := func(f *rowFuncSet) []string {
		_, c := f.derivedMasks([]decision.Mask{{Column: "email"}}, rowFuncs{})
		return slices.Sorted(maps.Keys(c))
	}
	if got, want := calls(f1), []string{"inout_proc", "setof_fn", "table_fn"}; !slices.Equal(got, want) {
		t.Errorf("functions returning masked values: got %v, want %v", got, want)
	}
	c.invalidate("app")
	if f2 := get(); f2.fns != f1.fns {
		t.Error("unchanged functions were read again")
	}
	// A column added to a relation a function reads with *.
	pg.Psql(t, "app", `ALTER TABLE orders ADD COLUMN email text`)
	c.invalidate("app")
	f3 := get()
	if f3.fns == f1.fns || !slices.Contains(calls(f3), "orders_fn") {
		t.Errorf("a column added to orders: same set %v, functions %v", f3.fns == f1.fns, calls(f3))
	}
	// A replaced function is read again.
	pg.Psql(t, "app", `CREATE OR REPLACE FUNCTION scalar_fn(p int) RETURNS text LANGUAGE sql AS 'SELECT email FROM customers WHERE id = p'`)
	c.invalidate("app")
	if f4 := get(); !slices.Contains(calls(f4), "scalar_fn") {
		t.Errorf("a replaced function: %v", calls(f4))
	}
	// Many functions: how long a load takes (reported, not asserted).
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "CREATE FUNCTION many_%d(p int) RETURNS text LANGUAGE plpgsql AS $$ DECLARE v text; BEGIN "+
			"SELECT name INTO v FROM customers WHERE id = p; RETURN v; END $$;\n", i)
	}
	pg.Psql(t, "app", b.String())
	c.invalidate("app")
	start := time.Now()
	f5 := get()
	cold := time.Since(start)
	c.invalidate("app")
	start = time.Now()
	get()
	t.Logf("load with %d functions: %v, again unchanged: %v", len(f5.fns.funcs), cold, time.Since(start))
	if got := calls(f5); slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, "many_") }) {
		t.Errorf("functions reading no masked column: %v", got)
	}
}

// TestMaskCheckWithColumns: knowing the columns of the relations a
// statement names, the check lets through a whole row or * of a relation
// without masked columns, which it refuses by name alone, and nothing else.
func TestMaskCheckWithColumns(t *testing.T) {
	p := sql.NewParser(0)
	policy := []decision.Mask{{Column: "email"}}
	derived := []decision.Mask{{Column: "public.v.contact"}}
	relCols := map[string]map[string]bool{
		"orders":    {"id": true, "total": true},
		"archive":   {"id": true, "total": true},
		"customers": {"id": true, "email": true, "name": true},
		"v":         {"id": true, "contact": true},
	}
	cases := []struct {
		q                string
		byName, withCols bool // refused
	}{
		{"CREATE TABLE b AS SELECT * FROM orders", true, false},
		{"INSERT INTO archive SELECT * FROM orders", true, false},
		{"INSERT INTO archive SELECT * FROM (SELECT * FROM orders) s", true, false},
		{"SELECT row_to_json(o) FROM orders o", true, false},
		{"SELECT o FROM orders o", true, false},
		{"SELECT json_agg(t.*) FROM public.orders t", true, false},
		{"COPY (SELECT * FROM orders) TO STDOUT", true, false},
		{"SELECT * FROM orders", false, false},
		{"SELECT row_to_json(c) FROM customers c", true, true},
		{"CREATE TABLE b AS SELECT * FROM orders o JOIN customers c USING (id)", true, true},
		{"CREATE TABLE b AS SELECT * FROM unknown_t", true, true},
		{"CREATE TABLE b AS WITH x AS (SELECT email FROM customers) SELECT * FROM x", true, true},
		{"CREATE TABLE b AS WITH orders AS (SELECT email FROM customers) SELECT * FROM orders", true, true},
		{"CREATE TABLE b AS SELECT * FROM orders, generate_series(1, 2)", true, true},
		{"CREATE TABLE b AS SELECT * FROM v", true, true},
		{"SELECT row_to_json(v) FROM v", true, true},
		{"SELECT lower(email) FROM customers", true, true},
		{"SELECT (SELECT o FROM orders o LIMIT 1), (SELECT c FROM customers c LIMIT 1)", true, true},
	}
	for _, tc := range cases {
		stmts, err := p.Parse(tc.q)
		if err != nil {
			t.Fatalf("parse %q: %v", tc.q, err)
		}
		byName := checkMasks(policy, derived, stmts, rowFuncs{})
		withCols := checkMasksIn(policy, derived, stmts, rowFuncs{}, relCols)
		if (byName != nil) != tc.byName || (withCols != nil) != tc.withCols {
			t.Errorf("%s: by name %v, with columns %v; want refused %v, %v", tc.q, byName, withCols, tc.byName, tc.withCols)
		}
	}
}

// TestOpaqueQueryFuncs: functions that read what the statement does not
// name (a query's text, a table's pages, the changes logged to it) are
// refused under column masks, with or without a schema.
func TestOpaqueQueryFuncs(t *testing.T) {
	p := sql.NewParser(0)
	checkMaskCases(t, p, []decision.Mask{{Column: "customers.email"}}, nil, []maskCase{
		{"SELECT t_data FROM heap_page_items(get_raw_page('customers', 0))", true},
		{"SELECT data FROM pg_catalog.pg_logical_slot_get_changes('s', NULL, NULL)", true},
		{"SELECT * FROM public.crosstab('SELECT 1, 2, 3') AS ct(a int, b int)", true},
		{"SELECT x FROM dblink('dbname=app', 'SELECT email FROM customers') AS t(x text)", true},
		{"SELECT g.n FROM generate_series(1, 2) AS g(n)", false},
		{"SELECT n FROM generate_series(1, 2) AS n", false},
	})
}

// TestFunctionItemsWholeRow: the whole row of a function in FROM (a scalar
// one's alias is also its value) holds no masked value unless the function
// is one of the database's that returns masked values (or the session's
// open transaction changed functions); its arguments are checked anyway.
func TestFunctionItemsWholeRow(t *testing.T) {
	p := sql.NewParser(0)
	policy := []decision.Mask{{Column: "email"}}
	funcs := rowFuncs{calls: map[string]funcTaint{"search_customers": {column: "email", names: []string{"email"}}}}
	cases := []struct {
		q      string
		refuse bool
	}{
		{"SELECT n FROM generate_series(1, 3) AS n", false},
		{"SELECT row_to_json(j) FROM json_each('{\"a\": 1}') AS j", false},
		{"SELECT s FROM search_customers('A%') s", true},
		{"SELECT t FROM unnest(ARRAY[(SELECT email FROM customers LIMIT 1)]) AS t", true},
		{"SELECT e FROM customers c, LATERAL unnest(ARRAY[c.email]) AS e", true},
	}
	for _, tc := range cases {
		stmts, err := p.Parse(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkColumnMasks(policy, stmts, funcs); (err != nil) != tc.refuse {
			t.Errorf("%s: err %v, want refused %v", tc.q, err, tc.refuse)
		}
	}
	stmts, _ := p.Parse("SELECT n FROM generate_series(1, 3) AS n")
	if err := checkColumnMasks(policy, stmts, rowFuncs{all: true}); err == nil {
		t.Error("functions changed in the open transaction: the whole row of a function in FROM passed")
	}
}
