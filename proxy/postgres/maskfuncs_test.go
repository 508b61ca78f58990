package postgres

import (
	"slices"
	"testing"

	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies/decision"
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
		sqlFn("discarded", []string{"n"}, "SELECT email FROM customers; SELECT name FROM customers"),
		sqlFn("param", []string{"param"}, "SELECT lower(email)"), // email: a parameter, no relation
		sqlFn("wrap", []string{"wrap"}, "SELECT upper(get_email())"),
		sqlFn("wrap2", []string{"wrap2"}, "SELECT wrap()"),
		sqlFn("stash", []string{"stash"}, "INSERT INTO notes SELECT email FROM customers; SELECT 1"),
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
	}}
	calls := fs.taint([]decision.Mask{{Column: "email"}}, nil, rowFuncs{}, nil)
	type want struct {
		hides bool
		names []string
	}
	wants := map[string]want{
		"get_email": {true, []string{"get_email"}},
		"all_rows":  {false, nil}, // email comes out as email: masked by name
		"swap":      {true, []string{"contact"}},
		"same":      {false, nil},
		"wrap":      {true, []string{"wrap"}},
		"wrap2":     {true, []string{"wrap2"}},
		"stash":     {true, []string{"stash"}},
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
	for _, name := range []string{"all_orders", "discarded", "param", "pl_count"} {
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
