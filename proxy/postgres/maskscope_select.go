package postgres

import (
	"fmt"
	"sort"
	"strings"
)

// The select-level walk of checkColumnMasks (maskscope.go): select lists,
// set operations, FROM items and expressions.

// sel checks one select in mode and returns the output names that carry
// masked values.
func (c *maskCheck) sel(b map[string]any, outer *scope, mode outMode) (taint, error) {
	if isSetOp(b) {
		sc, err := c.with(b["withClause"], outer)
		if err != nil {
			return nil, err
		}
		return c.setOp(b, sc, mode)
	}
	sc, err := c.selectScope(b, outer)
	if err != nil {
		return nil, err
	}
	list, _ := b["targetList"].([]any)
	return c.targets(list, sc, mode)
}

// positions reports, for each output column of a select (through set
// operations: any of their branches), whether it carries a masked value, as
// itself or computed; ok is false when the columns cannot be told apart (a
// * in the select list, branches of different widths).
func (c *maskCheck) positions(b map[string]any, outer *scope) (masked []bool, ok bool) {
	if isSetOp(b) {
		sc, err := c.with(b["withClause"], outer)
		if err != nil {
			return nil, false
		}
		l, okl := c.positions(selectBody(b["larg"]), sc)
		r, okr := c.positions(selectBody(b["rarg"]), sc)
		if !okl || !okr || len(l) != len(r) {
			return nil, false
		}
		for i := range l {
			l[i] = l[i] || r[i]
		}
		return l, true
	}
	if vals, _ := b["valuesLists"].([]any); len(vals) > 0 {
		row, _ := child(vals[0], "List")["items"].([]any)
		masked = make([]bool, len(row))
		sc := c.newScope(outer)
		for _, v := range vals {
			items, _ := child(v, "List")["items"].([]any)
			for i, x := range items {
				if i < len(masked) && c.expr(x, sc, "from VALUES") != nil {
					masked[i] = true
				}
			}
		}
		return masked, true
	}
	sc, err := c.selectScope(b, outer)
	if err != nil {
		return nil, false
	}
	list, _ := b["targetList"].([]any)
	for _, t := range list {
		if f := refFields(child(t, "ResTarget")["val"]); len(f) > 0 && f[len(f)-1] == "*" {
			return nil, false
		}
		o, err := c.targets([]any{t}, sc, outInner)
		masked = append(masked, err != nil || len(o) > 0)
	}
	return masked, true
}

func isSetOp(b map[string]any) bool {
	op, _ := b["op"].(string)
	return op != "" && op != "SETOP_NONE"
}

// selectScope reads the WITH clause and FROM items of a select (not a set
// operation) into a new scope below outer, and checks its VALUES lists.
func (c *maskCheck) selectScope(b map[string]any, outer *scope) (*scope, error) {
	sc, err := c.with(b["withClause"], outer)
	if err != nil {
		return nil, err
	}
	from, _ := b["fromClause"].([]any)
	for _, it := range from {
		if err := c.fromItem(it, sc); err != nil {
			return nil, err
		}
	}
	if vals, ok := b["valuesLists"].([]any); ok {
		for _, row := range vals {
			if err := c.expr(row, sc, "from VALUES"); err != nil {
				return nil, err
			}
		}
	}
	return sc, nil
}

// setOp checks UNION, INTERSECT and EXCEPT: their columns have no source, so
// a masked value must sit where the first branch's column has a name that an
// unqualified mask matches by itself.
func (c *maskCheck) setOp(b map[string]any, sc *scope, mode outMode) (taint, error) {
	var arms []map[string]any
	var flatten func(m map[string]any)
	flatten = func(m map[string]any) {
		if op, _ := m["op"].(string); op != "" && op != "SETOP_NONE" {
			l, _ := m["larg"].(map[string]any)
			r, _ := m["rarg"].(map[string]any)
			flatten(l)
			flatten(r)
			return
		}
		arms = append(arms, m)
	}
	flatten(b)
	var first []string // the first branch's column names
	if len(arms) > 0 {
		list, _ := arms[0]["targetList"].([]any)
		for _, t := range list {
			rt := child(t, "ResTarget")
			name, _ := rt["name"].(string)
			if name == "" {
				if f := refFields(rt["val"]); len(f) > 0 {
					name = f[len(f)-1]
				}
			}
			first = append(first, strings.ToLower(name))
		}
	}
	out := taint{}
	for _, arm := range arms {
		armMode := outInner
		if mode == outExpr {
			armMode = outExpr
		}
		armOut, err := c.sel(arm, sc, armMode)
		if err != nil {
			return nil, err
		}
		if len(armOut) == 0 {
			continue
		}
		list, _ := arm["targetList"].([]any)
		for i, t := range list {
			rt := child(t, "ResTarget")
			f := refFields(rt["val"])
			if len(f) == 0 {
				continue
			}
			name := strings.ToLower(f[len(f)-1])
			if name == "*" {
				return nil, c.escape("", "through * in a UNION, INTERSECT or EXCEPT")
			}
			if alias, _ := rt["name"].(string); alias != "" {
				name = strings.ToLower(alias)
			}
			if !armHas(armOut, name) {
				continue
			}
			switch {
			case i >= len(first):
				return nil, c.escape(name, "in a UNION, INTERSECT or EXCEPT")
			case mode == outInner || mode == outExpr || mode == outStore:
				out[first[i]] = true
			case !c.byName[first[i]] || mode == outCopy:
				return nil, c.escape(name, "in a UNION, INTERSECT or EXCEPT column named otherwise")
			}
		}
	}
	if mode == outExpr && len(out) > 0 {
		return nil, c.escape(firstName(out), "inside an expression")
	}
	if mode == outStore && len(out) > 0 {
		return nil, c.escape(firstName(out), modeName(mode))
	}
	return out, nil
}

func armHas(t taint, n string) bool {
	_, ok := t[n]
	return ok
}

// refFields returns a bare column reference's names ("*" for a star), or nil
// when v is not a column reference.
func refFields(v any) []string {
	cr := child(v, "ColumnRef")
	if cr == nil {
		return nil
	}
	fields, _ := cr["fields"].([]any)
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		fm, _ := f.(map[string]any)
		if _, star := fm["A_Star"]; star {
			out = append(out, "*")
			continue
		}
		out = append(out, stringNode(f))
	}
	return out
}

func aliasOf(x map[string]any) (name string, colnames any) {
	a, _ := x["alias"].(map[string]any)
	n, _ := a["aliasname"].(string)
	return strings.ToLower(n), a["colnames"]
}

// fromItem adds a FROM item's names to sc.
func (c *maskCheck) fromItem(v any, sc *scope) error {
	m, _ := v.(map[string]any)
	switch {
	case m["RangeVar"] != nil:
		rv := child(m, "RangeVar")
		name, _ := rv["relname"].(string)
		name = strings.ToLower(name)
		a, cols := aliasOf(rv)
		if a == "" {
			a = name
		}
		sc.items[a] = true
		sc.clean[a] = false
		src := taint{}
		isCTE := false
		if schema, _ := rv["schemaname"].(string); schema == "" {
			if t, ok := sc.cte(name); ok {
				src.add(t) // a copy: the WITH query's own names stay as they are
				sc.clean[a] = t != nil && len(t) == 0
				isCTE = true
			}
		}
		own, known := c.relCols[name]
		for k := range c.masked { // a table's own columns, by position in an alias list
			if _, ok := src[k]; !ok && (c.relCols == nil || !isCTE && (!known || own[k])) {
				src[k] = false
			}
		}
		if known && !isCTE && len(src) == 0 && len(c.scoped[name]) == 0 && statsValueColumns[name] == nil {
			sc.clean[a] = true // a relation without masked columns: its whole row holds none
		}
		src.seed(c.scoped[name]) // its generated or view columns regate masks
		sc.tainted.add(renamed(src, cols, false))
		if stats := statsValueColumns[name]; stats != nil && !isCTE {
			// Sample values of every column, under names of their own.
			st := taint{}
			for k := range stats {
				st[k] = true
			}
			st = renamed(st, cols, true)
			sc.tainted.add(st)
			for n := range st {
				sc.hide(n, "", fmt.Sprintf("through %q, a column of %s, PostgreSQL's statistics, which "+
					"holds sample values of the tables' columns (masked ones too)", n, name))
			}
		}
	case m["RangeSubselect"] != nil:
		rs := child(m, "RangeSubselect")
		out, err := c.sel(selectBody(rs["subquery"]), sc, outInner)
		if err != nil {
			return err
		}
		a, cols := aliasOf(rs)
		sc.tainted.add(renamed(out, cols, false))
		if a != "" {
			sc.items[a] = true
			sc.clean[a] = len(out) == 0
		}
	case m["JoinExpr"] != nil:
		j := child(m, "JoinExpr")
		for _, side := range []string{"larg", "rarg"} {
			if err := c.fromItem(j[side], sc); err != nil {
				return err
			}
		}
		// A FULL JOIN merges a USING (or NATURAL) column into COALESCE(left,
		// right), which has no source: only its name can match a mask.
		if jt, _ := j["jointype"].(string); jt == "JOIN_FULL" {
			using, _ := j["usingClause"].([]any)
			for _, u := range using {
				n := strings.ToLower(stringNode(u))
				if tainted, _ := sc.lookup(n); tainted {
					sc.tainted[n] = true
				}
			}
			if natural, _ := j["isNatural"].(bool); natural {
				for s := sc; s != nil; s = s.outer {
					for n := range s.tainted {
						sc.tainted[n] = true
					}
				}
			}
		}
		if a, cols := aliasOf(j); a != "" {
			sc.items[a] = true
			sc.clean[a] = false
			all := taint{}
			all.add(sc.tainted)
			sc.tainted.add(renamed(all, cols, true))
		}
	case m["RangeTableSample"] != nil:
		ts := child(m, "RangeTableSample")
		if err := c.fromItem(ts["relation"], sc); err != nil {
			return err
		}
		return c.expr(ts["args"], sc, "in TABLESAMPLE")
	default:
		// RangeFunction, RangeTableFunc (XMLTABLE) and others: their
		// arguments are expressions, and their aliases are items. A
		// function's columns have no source in RowDescription, though
		// it may read a table (a function RETURNS SETOF customers): a
		// masked name that may come from one only its name can match.
		for node, x := range m {
			xm, _ := x.(map[string]any)
			a, _ := aliasOf(xm)
			if node == "RangeFunction" {
				if a == "" {
					a = funcItemName(xm)
				}
				sc.funcItems = true
				if a != "" {
					sc.funcs[a] = true
				}
				tainted, err := c.fromFunctions(xm, sc)
				if err != nil {
					return err
				}
				if a != "" {
					// A function that returns no masked value (a built-in
					// one, whose values come from its arguments, checked
					// below): its whole row (generate_series(1, 3) AS n,
					// then SELECT n) holds none, unless the session's open
					// transaction changed functions regate cannot see yet.
					sc.items[a] = true
					sc.clean[a] = !tainted && !c.funcs.all
				}
			} else {
				if c.relCols != nil {
					sc.tainted.seed(c.masked) // its columns are not known
				}
				if a != "" {
					sc.items[a] = true
					sc.clean[a] = false
				}
			}
			for k, arg := range xm {
				if k == "alias" || node == "RangeFunction" && k == "functions" {
					continue
				}
				if err := c.expr(arg, sc, "through a function in FROM"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// targets checks a select list (or RETURNING list) in mode and returns its
// tainted output names.
func (c *maskCheck) targets(list []any, sc *scope, mode outMode) (taint, error) {
	out := taint{}
	for _, t := range list {
		rt := child(t, "ResTarget")
		alias, _ := rt["name"].(string)
		alias = strings.ToLower(alias)
		val := rt["val"]
		f := refFields(val)
		if f == nil {
			how := "inside an expression"
			if mode == outStore {
				how = storeHow
			}
			if err := c.expr(val, sc, how); err != nil {
				return nil, err
			}
			continue
		}
		last := strings.ToLower(f[len(f)-1])
		if err := c.wholeRow(f, sc); err != nil {
			return nil, err
		}
		if last == "*" {
			// Expanded into columns with their sources; in a subquery,
			// every name in scope may come through.
			if mode == outCopy || mode == outExpr || mode == outStore {
				if c.starClean(f, sc) {
					continue
				}
				return nil, c.escapeStar(sc, "through * "+modeName(mode))
			}
			viaFunc := sc.fromFunction(f)
			// By name alone every name in scope counts; knowing the
			// relations' columns, * is the select's own FROM items.
			for s := sc; s != nil && (c.relCols == nil || s == sc); s = s.outer {
				for k, sourceless := range s.tainted {
					sourceless = sourceless || viaFunc
					if mode == outTop && sourceless && !c.byName[k] {
						return nil, c.escapeHidden(sc, k, "through *, as a column without a source under a name no mask matches", true)
					}
					out[k] = out[k] || sourceless
				}
			}
			continue
		}
		tainted, sourceless := sc.lookup(last)
		if !tainted {
			continue
		}
		sourceless = sourceless || sc.fromFunction(f)
		name := last
		if alias != "" {
			name = alias
		}
		switch mode {
		case outCopy, outExpr, outStore:
			return nil, c.escapeHidden(sc, last, modeName(mode), false)
		case outTop:
			if sourceless && !c.byName[name] {
				return nil, c.escapeHidden(sc, last, "as a column without a source (a set operation's, a FULL JOIN's, "+
					"a function's in FROM) under a name no mask matches", true)
			}
		}
		out[name] = out[name] || sourceless
	}
	return out, nil
}

// starClean reports whether * (or x.*) holds no masked value, which only the
// columns of the relations in scope can tell (relCols): x is a clean item, or
// no name of the select's own FROM items carries a masked value.
func (c *maskCheck) starClean(f []string, sc *scope) bool {
	if c.relCols == nil {
		return false
	}
	if len(f) >= 2 {
		q := strings.ToLower(f[len(f)-2])
		return sc.isItem(q) && sc.wholeRowClean(q)
	}
	return len(sc.tainted) == 0 // the select's own FROM items
}

// wholeRow refuses a reference to a whole row: a FROM item's bare name (c),
// c.*, or c.f for a function that takes a row (functional notation; see
// rowFuncs). A bare c.* in a select list is expanded into columns and handled
// by the caller.
// The whole row of a clean item (a subquery or WITH query whose select list
// names no masked or tainted column) holds nothing to mask and passes.
func (c *maskCheck) wholeRow(f []string, sc *scope) error {
	switch {
	case len(f) == 1 && f[0] != "*" && sc.isItem(strings.ToLower(f[0])):
		if sc.wholeRowClean(strings.ToLower(f[0])) {
			return nil
		}
		return c.escape("", fmt.Sprintf("inside the whole-row value %q", f[0]))
	case len(f) >= 2 && c.funcs.has(strings.ToLower(f[len(f)-1])) && sc.isItem(strings.ToLower(f[len(f)-2])):
		if sc.wholeRowClean(strings.ToLower(f[len(f)-2])) {
			return nil
		}
		if !c.funcs.known(strings.ToLower(f[len(f)-1])) {
			return c.escape("", fmt.Sprintf("perhaps through %s, which could be a function of the whole row "+
				"(this session created or changed functions in a transaction that has not ended, and regate "+
				"cannot tell such functions from columns until it ends: end it first, or write the column "+
				"without %q)", strings.Join(f, "."), f[len(f)-2]+"."))
		}
		return c.escape("", fmt.Sprintf("inside the whole-row value %s (%s is a function of the row)",
			strings.Join(f, "."), f[len(f)-1]))
	}
	return nil
}

// escapeStar refuses a * that may hold masked values: those of the select's
// own FROM items when the relations' columns are known, else every masked
// name.
func (c *maskCheck) escapeStar(sc *scope, how string) *maskEscape {
	if c.relCols == nil || len(sc.tainted) == 0 {
		return c.escape("", how)
	}
	names := make([]string, 0, len(sc.tainted))
	for n := range sc.tainted {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	return &maskEscape{columns: strings.Join(names, ", "), how: how}
}

func modeName(mode outMode) string {
	switch mode {
	case outCopy:
		return "in COPY (query), which names no columns"
	case outExpr:
		return "inside an expression"
	case outStore:
		return storeHow
	}
	return "as a column"
}

// expr checks that an expression reads no masked value: no reference to a
// tainted name, no whole-row value, and no subquery returning either. The
// subqueries of EXISTS, IN, ANY and ALL return nothing but a truth value.
func (c *maskCheck) expr(v any, sc *scope, how string) error {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			if err := c.expr(x, sc, how); err != nil {
				return err
			}
		}
	case map[string]any:
		if f := refFields(v); f != nil {
			if err := c.wholeRow(f, sc); err != nil {
				return err
			}
			last := strings.ToLower(f[len(f)-1])
			if last == "*" {
				if c.starClean(f, sc) {
					return nil
				}
				return c.escapeStar(sc, "through * "+how)
			}
			if tainted, _ := sc.lookup(last); tainted {
				return c.escapeHidden(sc, last, how, false)
			}
			return nil
		}
		if fc, ok := v["FuncCall"].(map[string]any); ok {
			if t, tainted := c.funcs.calls[funcCallName(fc)]; tainted {
				return c.escape(t.column, fmt.Sprintf("through %s(), a function of the database that %s, %s",
					funcCallName(fc), t.why, how))
			}
		}
		if fc, ok := v["FuncCall"].(map[string]any); ok && c.countOfColumn(fc, sc) {
			// count(col) gives how many rows have a value, no value: as
			// for IS NULL below. What else the call holds (FILTER, an
			// ORDER BY, OVER) is checked as usual.
			for _, k := range []string{"agg_filter", "agg_order", "over"} {
				if err := c.expr(fc[k], sc, how); err != nil {
					return err
				}
			}
			return nil
		}
		if nt, ok := v["NullTest"].(map[string]any); ok {
			if f := refFields(nt["arg"]); f != nil && f[len(f)-1] != "*" {
				// IS [NOT] NULL of a column gives its nullness only, a
				// syntax node no function or operator of the database can
				// stand in for (a whole row is still refused).
				return c.wholeRow(f, sc)
			}
		}
		if sl, ok := v["SubLink"].(map[string]any); ok {
			if err := c.expr(sl["testexpr"], sc, how); err != nil {
				return err
			}
			switch t, _ := sl["subLinkType"].(string); t {
			case "EXISTS_SUBLINK", "ANY_SUBLINK", "ALL_SUBLINK":
				return nil
			}
			_, err := c.sel(selectBody(sl["subselect"]), sc, outExpr)
			return err
		}
		for _, x := range v {
			if err := c.expr(x, sc, how); err != nil {
				return err
			}
		}
	}
	return nil
}

// countOfColumn reports whether fc is the built-in count of one column
// (count(email), count(DISTINCT c.email), pg_catalog.count(email)): only when
// the database has no function named count of its own, which could take the
// column's type more exactly than count("any") and return the value
// (rowFuncs.countBuiltin), and the argument is a column, not a whole row.
func (c *maskCheck) countOfColumn(fc map[string]any, sc *scope) bool {
	names, _ := fc["funcname"].([]any)
	args, _ := fc["args"].([]any)
	if len(args) != 1 || fc["agg_star"] == true || fc["func_variadic"] == true {
		return false
	}
	switch {
	case len(names) == 1 && stringNode(names[0]) == "count" && c.funcs.countBuiltin:
	case len(names) == 2 && stringNode(names[0]) == "pg_catalog" && stringNode(names[1]) == "count":
	default:
		return false
	}
	f := refFields(args[0])
	return f != nil && f[len(f)-1] != "*" && c.wholeRow(f, sc) == nil && !(len(f) == 1 && sc.isItem(strings.ToLower(f[0])))
}
