package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// A function of the database returns what its code reads: with email masked,
// a DBA's get_email(id) (SELECT email FROM customers WHERE id = $1), or
// contacts() RETURNS TABLE (id int, contact text) selecting id, email, would
// return raw emails, under the function's name or its own column names, which
// RowDescription reports without a source. checkMaskable therefore reads the
// definitions of the database's functions and procedures in SQL and PL/pgSQL
// (from its catalog, loaded and refreshed with the function set of a row),
// runs the mask check over what each returns (column by column), and
// refuses a statement that returns what such a function returns: a call in
// a select list (or a value written elsewhere, or CALL), or, for the
// function in FROM, a result column that carries a masked value under a name
// no mask matches by itself, or under an alias (RETURNS SETOF customers,
// selecting * from customers, still gives email as email, masked by name). A function whose code regate cannot follow (another
// language than SQL, PL/pgSQL, C or internal; SQL built while it runs; a
// definition that does not parse) counts as returning any masked column.
// Functions calling such functions, and views calling them (maskviews.go),
// are followed round after round.

// funcDef is a function or procedure of the database, not built in.
type funcDef struct {
	name   string   // lower case
	outs   []string // its result columns, lower case
	stmts  []funcStmt
	opaque string   // why regate cannot follow its code ("": it can)
	rels   []string // the relations its code names, lower case
}

// funcStmt is one statement of a function's code.
type funcStmt struct {
	ast map[string]any
	// result: its rows are the function's result; kept: what it selects is
	// kept (a PL/pgSQL query's, put into variables), not discarded (an SQL
	// function's statements before its last).
	result, kept bool
}

// funcSet is the functions of a database.
type funcSet struct {
	funcs []*funcDef
	// relCols: the columns (lower case) of the relations the functions'
	// code names, by relation name (lower case; of every schema).
	relCols        map[string]map[string]bool
	listFP, colsFP string
}

// funcTaint is what a call of a database function may return.
type funcTaint struct {
	column string   // the masked column it returns ("": any of them)
	names  []string // its result columns that carry masked values (lower case)
	// hides: one of them has a name no mask matches by itself.
	hides bool
	why   string // what it does, for a refusal's text
}

// plpgsqlParser reads the SQL of a PL/pgSQL function (parse/sql's Parser).
type plpgsqlParser interface {
	PlpgsqlQueries(def string) ([]parse.PlpgsqlQuery, bool, error)
}

// funcListQuery lists the database's functions and procedures with what
// changes when one is created, replaced or renamed, and their result columns:
// a composite result type's attributes, else OUT/INOUT/TABLE parameters, else
// the function's name. Trigger functions cannot be called.
const funcListQuery = `SELECT p.oid, p.xmin, p.proname, l.lanname,
  pg_catalog.array_to_json(COALESCE(
    (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_type t
      JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
      WHERE t.oid = p.prorettype AND t.typrelid <> 0),
    (SELECT pg_catalog.array_agg(x.n ORDER BY x.o)
      FROM ROWS FROM (pg_catalog.unnest(p.proargnames), pg_catalog.unnest(p.proargmodes::text[]))
        WITH ORDINALITY AS x(n, m, o)
      WHERE x.m IN ('o', 'b', 't')),
    ARRAY[p.proname::text]))::text
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
  AND l.lanname NOT IN ('c', 'internal')
  AND p.prorettype NOT IN ('pg_catalog.trigger'::pg_catalog.regtype, 'pg_catalog.event_trigger'::pg_catalog.regtype)
ORDER BY p.oid`

const funcDefQuery = `SELECT p.oid, pg_catalog.pg_get_functiondef(p.oid)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
  AND l.lanname IN ('sql', 'plpgsql')
  AND p.prorettype NOT IN ('pg_catalog.trigger'::pg_catalog.regtype, 'pg_catalog.event_trigger'::pg_catalog.regtype)`

// loadFunctions reads database's functions (db.mu held), reusing prev's
// parsed definitions when they did not change.
func (c *catalog) loadFunctions(ctx context.Context, db *catalogDB, database string, prev *funcSet) (*funcSet, error) {
	rows, err := c.query(ctx, db, database, funcListQuery, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot look up the database's functions in the catalog: %w", err)
	}
	listFP := fingerprint(rows)
	fs := &funcSet{listFP: listFP}
	if prev != nil && prev.listFP == listFP {
		fs.funcs = prev.funcs
	} else if len(rows) > 0 {
		byOID := map[string]*funcDef{}
		lang := map[string]string{}
		for _, row := range rows {
			fd := &funcDef{name: strings.ToLower(string(row[2]))}
			var outs []string
			if err := json.Unmarshal(row[4], &outs); err != nil {
				return nil, fmt.Errorf("cannot read the result columns of function %s: %w", row[2], err)
			}
			for _, o := range outs {
				fd.outs = append(fd.outs, strings.ToLower(o))
			}
			if l := string(row[3]); l != "sql" && l != "plpgsql" {
				fd.opaque = "is written in " + l + ", whose code regate does not read"
			} else {
				fd.opaque = "has a definition regate could not read" // until it is read below
			}
			byOID[string(row[0])] = fd
			lang[string(row[0])] = string(row[3])
			fs.funcs = append(fs.funcs, fd)
		}
		defs, err := c.query(ctx, db, database, funcDefQuery, nil)
		if err != nil {
			return nil, fmt.Errorf("cannot read the database's function definitions from the catalog: %w", err)
		}
		for _, row := range defs {
			if fd := byOID[string(row[0])]; fd != nil {
				fd.read(c.s.cfg.Parser, lang[string(row[0])], string(row[1]))
			}
		}
	}
	names := map[string]bool{}
	for _, fd := range fs.funcs {
		for _, r := range fd.rels {
			names[r] = true
		}
	}
	if len(names) > 0 {
		cols, err := c.query(ctx, db, database, relColsQuery, [][]byte{textArray(slices.Sorted(maps.Keys(names)))})
		if err != nil {
			return nil, fmt.Errorf("cannot look up the columns of the relations the database's functions read: %w", err)
		}
		fs.colsFP = fingerprint(cols)
		fs.relCols = relColsOf(cols)
	}
	if prev != nil && prev.listFP == fs.listFP && prev.colsFP == fs.colsFP {
		return prev, nil
	}
	return fs, nil
}

// fingerprint is rows as one string, to compare with an earlier load.
func fingerprint(rows [][][]byte) string {
	var fp strings.Builder
	for _, row := range rows {
		for _, f := range row {
			fp.Write(f)
			fp.WriteByte(0)
		}
		fp.WriteByte('\n')
	}
	return fp.String()
}

// read parses fd's definition (pg_get_functiondef's CREATE statement).
func (fd *funcDef) read(p Parser, lang, def string) {
	fd.opaque = "has a definition regate could not parse"
	var stmts []funcStmt
	switch lang {
	case "sql":
		parsed, err := p.Parse(def)
		if err != nil || len(parsed) != 1 {
			return
		}
		cf := child(parsed[0].AST, "CreateFunctionStmt")
		var body []map[string]any
		if sb := child(cf, "sql_body"); sb != nil { // BEGIN ATOMIC … END
			lists, _ := child(sb, "List")["items"].([]any)
			for _, l := range lists {
				items, _ := child(l, "List")["items"].([]any)
				for _, it := range items {
					if m, ok := it.(map[string]any); ok {
						body = append(body, m)
					}
				}
			}
		} else {
			opts, _ := cf["options"].([]any)
			for _, o := range opts {
				de := child(o, "DefElem")
				if name, _ := de["defname"].(string); name != "as" {
					continue
				}
				items, _ := child(de["arg"], "List")["items"].([]any)
				if len(items) == 0 {
					return
				}
				src, err := p.Parse(stringNode(items[0]))
				if err != nil {
					return
				}
				for _, st := range src {
					body = append(body, st.AST)
				}
			}
		}
		for i, ast := range body {
			last := i == len(body)-1
			stmts = append(stmts, funcStmt{ast: ast, result: last, kept: last})
		}
	case "plpgsql":
		pp, ok := p.(plpgsqlParser)
		if !ok {
			return
		}
		queries, dynamic, err := pp.PlpgsqlQueries(def)
		if err != nil {
			return
		}
		if dynamic {
			fd.opaque = "runs SQL it builds while it runs (EXECUTE)"
			return
		}
		for _, q := range queries {
			parsed, err := p.Parse(q.SQL)
			if err != nil {
				return
			}
			for _, st := range parsed {
				stmts = append(stmts, funcStmt{ast: st.AST, result: q.Result, kept: true})
			}
		}
	default:
		return
	}
	fd.stmts, fd.opaque = stmts, ""
	trees := make([]map[string]any, len(stmts))
	for i, st := range stmts {
		trees[i] = st.ast
	}
	fd.rels = relationNames(trees...)
}

// relationNames returns the names of the relations the trees name, lower
// case, each once, in the order found.
func relationNames(trees ...map[string]any) []string {
	seen := map[string]bool{}
	var names []string
	for _, t := range trees {
		// A RangeVar node, or the fields of one: a statement's target
		// (relation) or a new table's (rel).
		for _, key := range []string{"RangeVar", "relation", "rel"} {
			walkNodes(t, key, func(rv map[string]any) {
				n, _ := rv["relname"].(string)
				if n = strings.ToLower(n); n != "" && !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			})
		}
	}
	return names
}

// taint returns, with calls (what is known already), what each function of
// fs returns under the masks (policy, then derived), following calls of
// functions by functions round after round.
func (fs *funcSet) taint(policy, derived []decision.Mask, funcs rowFuncs, calls map[string]funcTaint) map[string]funcTaint {
	out := make(map[string]funcTaint, len(calls))
	for k, v := range calls {
		out[k] = v
	}
	if fs == nil {
		return out
	}
	for round := 0; round <= 2*len(fs.funcs)+1; round++ {
		f := funcs
		f.calls = out
		c := newMaskCheck(policy, derived, f)
		c.relCols = fs.relCols
		changed := false
		for _, fd := range fs.funcs {
			old, known := out[fd.name]
			if known && old.hides {
				continue
			}
			t, ok := fd.returns(c)
			if !ok || known && !t.hides {
				continue
			}
			out[fd.name] = t
			changed = true
		}
		if !changed {
			break
		}
	}
	return out
}

// returns reports whether fd returns a masked value (ok), and how.
func (fd *funcDef) returns(c *maskCheck) (t funcTaint, ok bool) {
	defer func() {
		// A tree shape the walk does not expect must not end the process:
		// the function counts as returning any masked column.
		if r := recover(); r != nil {
			t, ok = fd.any("", "has code regate could not check"), true
		}
	}()
	if fd.opaque != "" {
		return fd.any("", fd.opaque), true
	}
	reads := func(err error, out taint) funcTaint {
		col := ""
		var e *maskEscape
		if errors.As(err, &e) && !strings.Contains(e.columns, ",") {
			col = strings.Trim(e.columns, `"`)
		} else if err == nil {
			col = firstName(out)
		}
		return fd.any(col, "returns values it reads from a masked column")
	}
	outs := map[string]bool{}
	for _, o := range fd.outs {
		outs[o] = true
	}
	carried := map[string]bool{} // result columns that carry a masked value
	for _, st := range fd.stmts {
		sb, isSelect := st.ast["SelectStmt"].(map[string]any)
		switch {
		case isSelect && st.result:
			o, err := c.sel(sb, nil, outInner)
			if err == nil && len(o) == 0 {
				continue
			}
			if !ok {
				t, ok = reads(err, o), true
				t.why = "returns values it reads from that column"
			}
			if pos, known := c.positions(sb, nil); known {
				for i, m := range pos {
					if m && i >= len(fd.outs) {
						return reads(err, o), true
					}
					if m {
						carried[fd.outs[i]] = true
					}
				}
				continue
			}
			// A * keeps the columns' names: RETURNS SETOF customers AS
			// SELECT * FROM customers returns email as email.
			list, _ := sb["targetList"].([]any)
			if err != nil || isSetOp(sb) || len(list) != 1 {
				return reads(err, o), true
			}
			for k := range o {
				if !outs[k] {
					return reads(err, o), true
				}
				carried[k] = true
			}
		case isSelect && st.kept:
			if o, err := c.sel(sb, nil, outInner); err != nil || len(o) > 0 {
				return reads(err, o), true
			}
		case isSelect:
			// An SQL function's statement before its last: its rows are
			// discarded.
		default:
			if err := c.statement(st.ast, nil); err != nil {
				return reads(err, nil), true
			}
			if st.result && returnsMasked(c, st.ast) {
				return fd.any("", "returns the rows of a data-modifying statement over a masked column"), true
			}
		}
	}
	if ok {
		t.names, t.hides = slices.Sorted(maps.Keys(carried)), false
		for _, n := range t.names {
			// Under a name no mask matches by itself, a masked value
			// comes out unmasked.
			t.hides = t.hides || !c.byName[n]
		}
	}
	return t, ok
}

// any is fd returning masked values under any of its result columns.
func (fd *funcDef) any(column, why string) funcTaint {
	return funcTaint{column: column, hides: true, why: why, names: fd.outs}
}

// returnsMasked reports whether a data-modifying statement's RETURNING list
// names a masked column, a star or a whole row.
func returnsMasked(c *maskCheck, ast map[string]any) bool {
	found := false
	for _, b := range ast {
		bm, _ := b.(map[string]any)
		walkColumnRefs(bm["returningList"], func(fields []any) {
			last := strings.ToLower(stringNode(fields[len(fields)-1]))
			found = found || last == "" || c.masked[last] || len(fields) == 1
		})
	}
	return found
}

// fromFunctions checks the functions of a RangeFunction (FROM f(…), ROWS
// FROM (f(…), g(…))) and reports whether one of them is a database function
// that returns masked values (maskfuncs.go): its result columns that carry
// them are tainted names; the arguments are expressions.
func (c *maskCheck) fromFunctions(rf map[string]any, sc *scope) (tainted bool, err error) {
	fns, _ := rf["functions"].([]any)
	for _, f := range fns {
		items, _ := child(f, "List")["items"].([]any)
		for _, it := range items {
			fc := child(it, "FuncCall")
			if fc == nil {
				if err := c.expr(it, sc, "through a function in FROM"); err != nil {
					return false, err
				}
				continue
			}
			name := funcCallName(fc)
			if t, ok := c.funcs.calls[name]; ok {
				tainted = true
				// The result columns that carry masked values, sourceless
				// (also under any alias given them): those whose names no
				// mask matches may not be returned.
				carried := taint{}
				for _, n := range t.names {
					carried[n] = true
				}
				a, cols := aliasOf(rf)
				if a != "" {
					carried[a] = true // a function of one column: its name
				}
				walkColumnDefs(rf, func(n string) { carried[n] = true })
				carried = renamed(carried, cols, true)
				sc.tainted.add(carried)
				for n := range carried {
					if !c.byName[n] {
						sc.hide(n, t.column, fmt.Sprintf("through %q, a result column of %s() in FROM, "+
							"a function of the database that %s", n, name, t.why))
					}
				}
				if c.relCols != nil { // its columns carry masked values under their names
					for k := range c.masked {
						sc.tainted[k] = true
					}
				}
			} else if c.relCols != nil {
				sc.tainted.seed(c.masked) // a function's columns are not known
			}
			for k, arg := range fc {
				if k != "funcname" {
					if err := c.expr(arg, sc, "through a function in FROM"); err != nil {
						return false, err
					}
				}
			}
		}
	}
	return tainted, nil
}

// walkColumnDefs calls f with the lower-case name of every column
// definition in v (a function's column definition list).
func walkColumnDefs(v any, f func(string)) {
	walkNodes(v, "ColumnDef", func(cd map[string]any) {
		if n, _ := cd["colname"].(string); n != "" {
			f(strings.ToLower(n))
		}
	})
}

// funcCallName is a function call's name, lower case, without its schema.
func funcCallName(fc map[string]any) string {
	names, _ := fc["funcname"].([]any)
	if len(names) == 0 {
		return ""
	}
	return strings.ToLower(stringNode(names[len(names)-1]))
}

// funcItemName is the name PostgreSQL gives an unaliased function in FROM:
// the function's (of ROWS FROM, none).
func funcItemName(rf map[string]any) string {
	fns, _ := rf["functions"].([]any)
	if len(fns) != 1 {
		return ""
	}
	items, _ := child(fns[0], "List")["items"].([]any)
	if len(items) == 0 {
		return ""
	}
	return funcCallName(child(items[0], "FuncCall"))
}

// wholeRowFuncs are the functions that functional notation (c.f means f(c)
// when c has no column f) applies to a whole row and that return its values
// or something derived from them: PostgreSQL 15's built-in functions callable
// with one argument of any type or of type record (pg_proc: the first
// argument anyelement, "any", record, anycompatible, anynonarray or variadic
// "any", the others defaulted), less those that give nothing of the values
// (count, num_nulls, num_nonnulls, pg_typeof, pg_collation_for,
// pg_column_compression) or cannot be called so (window and ordered-set
// functions, which need OVER or WITHIN GROUP), plus hstore's. c.row_to_json,
// c.concat and c.quote_literal return every column of c; c.text, c.name and
// c.json are columns (PostgreSQL rejects attribute-style casts of a whole
// row since 9.1). The target database's own such functions (and a newer
// server's built-ins) come from its catalog (rowFuncs, catalog.rowFuncs).
var wholeRowFuncs = map[string]bool{
	"row_to_json": true, "to_json": true, "to_jsonb": true, "hstore": true,
	"concat": true, "quote_literal": true, "quote_nullable": true,
	"json_build_array": true, "jsonb_build_array": true, "json_build_object": true, "jsonb_build_object": true,
	"array_agg": true, "json_agg": true, "jsonb_agg": true,
	"record_out": true, "record_send": true, "any_out": true, "anyelement_out": true, "anynonarray_out": true,
	"anycompatible_out": true, "anycompatiblenonarray_out": true,
	"hash_record": true, "pg_column_size": true,
}

// rowFuncs tells which names attribute notation (c.f) may resolve to a
// function of c's whole row: wholeRowFuncs, the database's own (db, from its
// catalog; nil in unit tests), or every name when all is set (the session
// changed functions in a transaction that has not ended, which regate's
// catalog connection cannot see yet).
type rowFuncs struct {
	db  map[string]bool
	all bool
	// countBuiltin: count is PostgreSQL's own aggregate, the database has
	// no function of that name (countOfColumn).
	countBuiltin bool
	// calls: the database's functions (by lower-case name, of any schema)
	// that return masked values (maskfuncs.go).
	calls map[string]funcTaint
}

// has reports whether c.name may be a function of c's whole row; name is
// lower case.
func (r rowFuncs) has(name string) bool {
	return r.known(name) || r.all && name != "*"
}

// known reports whether name is a function of a whole row that regate knows
// of (built in, or in the database's catalog), not one it merely suspects.
func (r rowFuncs) known(name string) bool {
	return wholeRowFuncs[name] || r.db[name]
}
