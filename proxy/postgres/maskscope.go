package postgres

import (
	"fmt"
	"sort"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// Column masks are applied to result columns: RowDescription names each
// column and, for a column that is a table's column passed through (also
// through subqueries and WITH queries, which PostgreSQL follows), its source
// table and attribute. A value computed from a masked column (lower(email),
// email || '', string_agg(email, ','), a scalar subquery, ARRAY(SELECT email
// …)), a whole-row value (SELECT p FROM people p, row_to_json(p), p.to_json)
// or a column PostgreSQL reports without a source (a set operation's, a FULL
// JOIN's merged one) under another name has neither, so no column mask could
// find it. checkColumnMasks refuses such statements before they run, from
// their syntax trees: a statement returns a masked column only as itself.
//
// The check is by name and errs on the side of refusing: a column mask names
// a column ("email", "customers.email"), and every column of that name, in
// any table, counts as masked, as do the names a subquery, a WITH query or a
// column alias list gives a masked column (any alias in such a list, since
// positions are not tracked). What statements read in WHERE, JOIN, GROUP BY,
// HAVING and ORDER BY is not output and is not checked. Views and functions
// that return a masked column under another name are not visible in the
// statement: mask their columns too, or use detectors.

// outMode is where a select list's values go.
type outMode int

const (
	outTop   outMode = iota // to the client, through RowDescription
	outInner                // to the select around it (FROM subquery, WITH query)
	outExpr                 // into an expression (scalar or ARRAY subquery)
	outCopy                 // to the client through COPY, which names no columns
)

// wholeRowFuncs are functions that functional notation (c.f means f(c))
// applies to a whole row: c.row_to_json returns every column of c.
var wholeRowFuncs = map[string]bool{
	"row_to_json": true, "to_json": true, "to_jsonb": true, "hstore": true,
	"text": true, "varchar": true, "bpchar": true, "name": true, "json": true, "jsonb": true,
}

// maskCheck is the state of checkColumnMasks.
type maskCheck struct {
	masked map[string]bool // masked column names, lower case (last part of each mask)
	byName map[string]bool // names an unqualified mask matches by result name alone
}

// taint maps the names that carry masked values to whether the value is
// sourceless: a column RowDescription reports without its source table (a
// set operation's, a FULL JOIN's merged column), which only its name can
// match to a mask.
type taint map[string]bool

func (t taint) add(o taint) {
	for k, v := range o {
		t[k] = t[k] || v
	}
}

// scope is what names mean in one select: the names that carry masked values,
// the names of its FROM items (a bare one in a select list is a whole-row
// value) and its WITH queries.
type scope struct {
	tainted taint
	items   map[string]bool
	ctes    map[string]taint // WITH query name -> its tainted output names
	outer   *scope
}

// lookup reports whether n carries a masked value in s or a scope around it,
// and whether that value is sourceless.
func (s *scope) lookup(n string) (tainted, sourceless bool) {
	for ; s != nil; s = s.outer {
		if v, ok := s.tainted[n]; ok {
			return true, v
		}
	}
	return false, false
}

func (s *scope) isItem(n string) bool {
	for ; s != nil; s = s.outer {
		if s.items[n] {
			return true
		}
	}
	return false
}

func (s *scope) cte(n string) (taint, bool) {
	for ; s != nil; s = s.outer {
		if t, ok := s.ctes[n]; ok {
			return t, true
		}
	}
	return nil, false
}

// maskEscape is a way a masked column leaves a statement unmasked.
type maskEscape struct {
	columns string // the masked column's name, or the masked names
	how     string
}

func (e *maskEscape) Error() string {
	return fmt.Sprintf("the policy masks column %s, which this statement returns %s, where regate cannot mask it "+
		"(a column mask applies to a column returned as itself)", e.columns, e.how)
}

func (c *maskCheck) escape(column, how string) *maskEscape {
	if column != "" {
		return &maskEscape{columns: fmt.Sprintf("%q", column), how: how}
	}
	names := make([]string, 0, len(c.masked))
	for n := range c.masked {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	return &maskEscape{columns: strings.Join(names, ", "), how: how}
}

// checkColumnMasks refuses statements that would return a value from a
// column named by a column mask in a form the mask cannot reach.
func checkColumnMasks(cols []decision.Mask, stmts []parse.Statement) error {
	if len(cols) == 0 {
		return nil
	}
	c := &maskCheck{masked: map[string]bool{}, byName: map[string]bool{}}
	for _, o := range cols {
		parts := strings.Split(strings.ToLower(o.Column), ".")
		c.masked[parts[len(parts)-1]] = true
		if len(parts) == 1 {
			c.byName[parts[0]] = true
		}
	}
	for _, st := range stmts {
		if err := c.statement(st.AST, nil); err != nil {
			return err
		}
	}
	return nil
}

func (c *maskCheck) newScope(outer *scope) *scope {
	sc := &scope{tainted: taint{}, items: map[string]bool{}, ctes: map[string]taint{}, outer: outer}
	for k := range c.masked {
		sc.tainted[k] = false
	}
	return sc
}

func (c *maskCheck) statement(ast map[string]any, outer *scope) error {
	for node, v := range ast {
		b, _ := v.(map[string]any)
		switch node {
		case "SelectStmt":
			_, err := c.sel(b, outer, outTop)
			return err
		case "DeclareCursorStmt", "PrepareStmt":
			// A cursor's and a prepared statement's rows come back later,
			// through FETCH and EXECUTE, described as their query's are.
			// (EXPLAIN returns a plan, CREATE TABLE AS and SELECT INTO
			// nothing: not checked.)
			q, _ := b["query"].(map[string]any)
			return c.statement(q, outer)
		case "CopyStmt":
			if q, ok := b["query"].(map[string]any); ok {
				if is, _ := b["is_from"].(bool); !is {
					_, err := c.sel(selectBody(q), outer, outCopy)
					return err
				}
			}
			return nil
		case "InsertStmt", "UpdateStmt", "DeleteStmt":
			ret, _ := b["returningList"].([]any)
			if len(ret) == 0 {
				return nil // nothing comes back
			}
			sc, err := c.with(b["withClause"], outer)
			if err != nil {
				return err
			}
			if rv, ok := b["relation"].(map[string]any); ok {
				if err := c.fromItem(map[string]any{"RangeVar": rv}, sc); err != nil {
					return err
				}
			}
			for _, key := range []string{"fromClause", "usingClause"} {
				list, _ := b[key].([]any)
				for _, it := range list {
					if err := c.fromItem(it, sc); err != nil {
						return err
					}
				}
			}
			// Values written from masked columns come back through
			// RETURNING under the written column's name.
			if src, ok := b["selectStmt"].(map[string]any); ok {
				out, err := c.sel(selectBody(src), sc, outInner)
				if err != nil {
					return err
				}
				if len(out) > 0 {
					return c.escape(firstName(out), "through INSERT … RETURNING")
				}
			}
			sets, _ := b["targetList"].([]any)
			if oc, ok := b["onConflictClause"].(map[string]any); ok {
				more, _ := oc["targetList"].([]any)
				sets = append(append([]any(nil), sets...), more...)
			}
			for _, t := range sets {
				if err := c.expr(child(t, "ResTarget")["val"], sc, "through a written value and RETURNING"); err != nil {
					return err
				}
			}
			_, err = c.targets(ret, sc, outTop)
			return err
		}
	}
	return nil
}

// selectBody returns the fields of a SelectStmt, wrapped or not.
func selectBody(v any) map[string]any {
	m, _ := v.(map[string]any)
	if inner, ok := m["SelectStmt"].(map[string]any); ok {
		return inner
	}
	return m
}

// child returns v's member key as a map (nil when v is not a map or has none).
func child(v any, key string) map[string]any {
	m, _ := v.(map[string]any)
	c, _ := m[key].(map[string]any)
	return c
}

// firstName returns the smallest name of t, for a stable message.
func firstName(t taint) string {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// with reads a WITH clause into a new scope below outer.
func (c *maskCheck) with(v any, outer *scope) (*scope, error) {
	sc := c.newScope(outer)
	w, _ := v.(map[string]any)
	if inner, ok := w["WithClause"].(map[string]any); ok {
		w = inner
	}
	ctes, _ := w["ctes"].([]any)
	for _, x := range ctes {
		cte := child(x, "CommonTableExpr")
		name, _ := cte["ctename"].(string)
		q, _ := cte["ctequery"].(map[string]any)
		var out taint
		if sb, ok := q["SelectStmt"].(map[string]any); ok {
			var err error
			if out, err = c.sel(sb, sc, outInner); err != nil {
				return nil, err
			}
		} else if err := c.statement(q, sc); err != nil { // a data-modifying WITH query
			return nil, err
		}
		sc.ctes[strings.ToLower(name)] = renamed(out, cte["aliascolnames"], false)
	}
	return sc, nil
}

// renamed applies a column alias list to tainted output names. Positions are
// not tracked: when any output is tainted, every alias is (sourceless when
// any output is, or when sourceless is set).
func renamed(out taint, aliases any, sourceless bool) taint {
	list, _ := aliases.([]any)
	if len(out) == 0 || len(list) == 0 {
		return out
	}
	res := taint{}
	res.add(out)
	for _, v := range out {
		sourceless = sourceless || v
	}
	for _, a := range list {
		if s := stringNode(a); s != "" {
			res[strings.ToLower(s)] = res[strings.ToLower(s)] || sourceless
		}
	}
	return res
}

func stringNode(v any) string {
	s := child(v, "String")
	sv, _ := s["sval"].(string)
	return sv
}

// sel checks one select in mode and returns the output names that carry
// masked values.
func (c *maskCheck) sel(b map[string]any, outer *scope, mode outMode) (taint, error) {
	sc, err := c.with(b["withClause"], outer)
	if err != nil {
		return nil, err
	}
	if op, _ := b["op"].(string); op != "" && op != "SETOP_NONE" {
		return c.setOp(b, sc, mode)
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
	list, _ := b["targetList"].([]any)
	return c.targets(list, sc, mode)
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
			case mode == outInner || mode == outExpr:
				out[first[i]] = true
			case !c.byName[first[i]] || mode == outCopy:
				return nil, c.escape(name, "in a UNION, INTERSECT or EXCEPT column named otherwise")
			}
		}
	}
	if mode == outExpr && len(out) > 0 {
		return nil, c.escape(firstName(out), "inside an expression")
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
		src := taint{}
		if schema, _ := rv["schemaname"].(string); schema == "" {
			if t, ok := sc.cte(name); ok {
				src = t
			}
		}
		for k := range c.masked { // a table's own columns, by position in an alias list
			if _, ok := src[k]; !ok {
				src[k] = false
			}
		}
		sc.tainted.add(renamed(src, cols, false))
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
		// arguments are expressions, and their aliases are items.
		for _, x := range m {
			xm, _ := x.(map[string]any)
			if a, _ := aliasOf(xm); a != "" {
				sc.items[a] = true
			}
			for k, arg := range xm {
				if k == "alias" {
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
			if err := c.expr(val, sc, "inside an expression"); err != nil {
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
			if mode == outCopy || mode == outExpr {
				return nil, c.escape("", "through * "+modeName(mode))
			}
			for s := sc; s != nil; s = s.outer {
				for k, sourceless := range s.tainted {
					if mode == outTop && sourceless && !c.byName[k] {
						return nil, c.escape(k, "through *, as a column without a source under a name no mask matches")
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
		name := last
		if alias != "" {
			name = alias
		}
		switch mode {
		case outCopy, outExpr:
			return nil, c.escape(last, modeName(mode))
		case outTop:
			if sourceless && !c.byName[name] {
				return nil, c.escape(last, "as a column without a source (set operation, FULL JOIN) under a name no mask matches")
			}
		}
		out[name] = out[name] || sourceless
	}
	return out, nil
}

// wholeRow refuses a reference to a whole row: a FROM item's bare name (c),
// c.*, or c.f for a function that takes a row (functional notation). A bare
// c.* in a select list is expanded into columns and handled by the caller.
func (c *maskCheck) wholeRow(f []string, sc *scope) error {
	switch {
	case len(f) == 1 && f[0] != "*" && sc.isItem(strings.ToLower(f[0])):
		return c.escape("", fmt.Sprintf("inside the whole-row value %q", f[0]))
	case len(f) >= 2 && wholeRowFuncs[strings.ToLower(f[len(f)-1])] && sc.isItem(strings.ToLower(f[len(f)-2])):
		return c.escape("", fmt.Sprintf("inside the whole-row value %s", strings.Join(f, ".")))
	}
	return nil
}

func modeName(mode outMode) string {
	switch mode {
	case outCopy:
		return "in COPY (query), which names no columns"
	case outExpr:
		return "inside an expression"
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
				return c.escape("", "through * "+how)
			}
			if tainted, _ := sc.lookup(last); tainted {
				return c.escape(last, how)
			}
			return nil
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

// readsMasked reports whether stmts name a masked column anywhere (also in
// WHERE, JOIN, ORDER BY …), a star or a whole row: PostgreSQL's error and
// notice texts may then quote a masked value (`invalid input syntax for type
// integer: "ann@example.com"`, a unique violation's key), so they are
// withheld (redactNotice).
func readsMasked(cols []decision.Mask, stmts []parse.Statement) bool {
	masked := map[string]bool{}
	for _, o := range cols {
		parts := strings.Split(strings.ToLower(o.Column), ".")
		masked[parts[len(parts)-1]] = true
	}
	items := map[string]bool{}
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				collect(x)
			}
		case map[string]any:
			for k, x := range v {
				if k == "RangeVar" || k == "alias" {
					xm, _ := x.(map[string]any)
					for _, key := range []string{"relname", "aliasname"} {
						if n, _ := xm[key].(string); n != "" {
							items[strings.ToLower(n)] = true
						}
					}
				}
				collect(x)
			}
		}
	}
	found := false
	var find func(v any)
	find = func(v any) {
		if found {
			return
		}
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				find(x)
			}
		case map[string]any:
			if f := refFields(v); f != nil {
				last := strings.ToLower(f[len(f)-1])
				found = last == "*" || masked[last] || len(f) == 1 && items[last] ||
					len(f) >= 2 && wholeRowFuncs[last] && items[strings.ToLower(f[len(f)-2])]
				return
			}
			for _, x := range v {
				find(x)
			}
		}
	}
	for _, st := range stmts {
		collect(st.AST)
	}
	for _, st := range stmts {
		find(st.AST)
	}
	return found
}
