package postgres

import (
	"fmt"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// Column masks are applied to result columns: RowDescription names each
// column and, for a column that is a table's column passed through (also
// through subqueries and WITH queries, which PostgreSQL follows), its source
// table and attribute. A value computed from a masked column (lower(email),
// email || '', string_agg(email, ','), a scalar subquery, ARRAY(SELECT email
// …)), a whole-row value (SELECT p FROM people p, row_to_json(p)) or a set
// operation's column under another name has neither, so no column mask could
// find it. checkColumnMasks refuses such statements before they run, from
// their syntax trees: a statement returns a masked column only as itself.
//
// The check is by name and errs on the side of refusing: a column mask names
// a column ("email", "customers.email"), and every column of that name, in
// any table, counts as masked, as do the names a subquery or WITH query gives
// a masked column. What statements read in WHERE, JOIN, GROUP BY, HAVING and
// ORDER BY is not output and is not checked. Views and functions that return
// a masked column under another name are not visible in the statement: mask
// their columns too, or use detectors.

// outMode is where a select list's values go.
type outMode int

const (
	outTop   outMode = iota // to the client, through RowDescription
	outInner                // to the select around it (FROM subquery, WITH query)
	outExpr                 // into an expression (scalar or ARRAY subquery)
	outCopy                 // to the client through COPY, which names no columns
)

// maskCheck is the state of checkColumnMasks.
type maskCheck struct {
	masked map[string]bool // masked column names, lower case (last part of each mask)
	byName map[string]bool // names an unqualified mask matches by result name alone
}

// scope is what names mean in one select: the names that carry masked values
// (masked columns, and names subqueries and WITH queries gave them) and the
// names of its FROM items (a bare one in a select list is a whole-row value).
type scope struct {
	tainted map[string]bool
	items   map[string]bool
	ctes    map[string]map[string]bool // WITH query name -> its tainted output names
	outer   *scope
}

func (s *scope) isTainted(n string) bool {
	for ; s != nil; s = s.outer {
		if s.tainted[n] {
			return true
		}
	}
	return false
}

func (s *scope) isItem(n string) bool {
	for ; s != nil; s = s.outer {
		if s.items[n] {
			return true
		}
	}
	return false
}

func (s *scope) cte(n string) (map[string]bool, bool) {
	for ; s != nil; s = s.outer {
		if t, ok := s.ctes[n]; ok {
			return t, true
		}
	}
	return nil, false
}

// maskEscape is a way a masked column leaves a statement unmasked.
type maskEscape struct {
	column string
	how    string
}

func (e *maskEscape) Error() string {
	return fmt.Sprintf("the policy masks column %q, which this statement returns %s, where regate cannot mask it "+
		"(a column mask applies to a column returned as itself)", e.column, e.how)
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
			for k := range c.masked {
				sc.tainted[k] = true
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
				if n := firstKey(out); n != "" {
					return &maskEscape{column: n, how: "through INSERT … RETURNING"}
				}
			}
			if set, ok := b["targetList"].([]any); ok && node == "UpdateStmt" {
				for _, t := range set {
					rt := child(t, "ResTarget")
					if err := c.expr(rt["val"], sc, "through UPDATE … RETURNING"); err != nil {
						return err
					}
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

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// with reads a WITH clause into a new scope below outer.
func (c *maskCheck) with(v any, outer *scope) (*scope, error) {
	sc := &scope{tainted: map[string]bool{}, items: map[string]bool{}, ctes: map[string]map[string]bool{}, outer: outer}
	w, _ := v.(map[string]any)
	if inner, ok := w["WithClause"].(map[string]any); ok {
		w = inner
	}
	ctes, _ := w["ctes"].([]any)
	for _, x := range ctes {
		cte := child(x, "CommonTableExpr")
		name, _ := cte["ctename"].(string)
		q, _ := cte["ctequery"].(map[string]any)
		var out map[string]bool
		if sb, ok := q["SelectStmt"].(map[string]any); ok {
			var err error
			if out, err = c.sel(sb, sc, outInner); err != nil {
				return nil, err
			}
		} else if err := c.statement(q, sc); err != nil { // a data-modifying WITH query
			return nil, err
		}
		sc.ctes[strings.ToLower(name)] = renamed(out, cte["aliascolnames"])
	}
	return sc, nil
}

// renamed applies a column alias list to tainted output names: when any
// output is tainted, every alias is (the check does not track positions).
func renamed(out map[string]bool, aliases any) map[string]bool {
	list, _ := aliases.([]any)
	if len(out) == 0 || len(list) == 0 {
		return out
	}
	res := map[string]bool{}
	for k := range out {
		res[k] = true
	}
	for _, a := range list {
		if s := stringNode(a); s != "" {
			res[strings.ToLower(s)] = true
		}
	}
	return res
}

func stringNode(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["String"].(map[string]any)
	sv, _ := s["sval"].(string)
	return sv
}

// sel checks one select in mode and returns the output names that carry
// masked values.
func (c *maskCheck) sel(b map[string]any, outer *scope, mode outMode) (map[string]bool, error) {
	sc, err := c.with(b["withClause"], outer)
	if err != nil {
		return nil, err
	}
	if op, _ := b["op"].(string); op != "" && op != "SETOP_NONE" {
		return c.setOp(b, sc, mode)
	}
	for k := range c.masked {
		sc.tainted[k] = true
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
func (c *maskCheck) setOp(b map[string]any, sc *scope, mode outMode) (map[string]bool, error) {
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
	out := map[string]bool{}
	for _, arm := range arms {
		armMode := outInner
		if mode == outExpr {
			armMode = outExpr
		}
		tainted, err := c.sel(arm, sc, armMode)
		if err != nil {
			return nil, err
		}
		if len(tainted) == 0 {
			continue
		}
		list, _ := arm["targetList"].([]any)
		for i, t := range list {
			rt := child(t, "ResTarget")
			f := refFields(rt["val"])
			if len(f) == 0 || f[len(f)-1] == "*" {
				if len(f) > 0 {
					return nil, &maskEscape{column: firstKey(c.masked), how: "through * in a UNION, INTERSECT or EXCEPT"}
				}
				continue
			}
			name := strings.ToLower(f[len(f)-1])
			if !sc.isTainted(name) && !tainted[name] {
				continue
			}
			if i >= len(first) {
				return nil, &maskEscape{column: name, how: "in a UNION, INTERSECT or EXCEPT"}
			}
			if mode == outInner || mode == outExpr {
				out[first[i]] = true
				continue
			}
			if !c.byName[first[i]] || mode == outCopy {
				return nil, &maskEscape{column: name, how: "in a UNION, INTERSECT or EXCEPT column named otherwise"}
			}
		}
	}
	if mode == outExpr && len(out) > 0 {
		return nil, &maskEscape{column: firstKey(out), how: "inside an expression"}
	}
	return out, nil
}

// refFields returns a bare column reference's names ("*" for a star), or nil
// when v is not a column reference.
func refFields(v any) []string {
	m, _ := v.(map[string]any)
	cr, ok := m["ColumnRef"].(map[string]any)
	if !ok {
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

// fromItem adds a FROM item's names to sc.
func (c *maskCheck) fromItem(v any, sc *scope) error {
	m, _ := v.(map[string]any)
	alias := func(x map[string]any) string {
		a, _ := x["alias"].(map[string]any)
		n, _ := a["aliasname"].(string)
		return strings.ToLower(n)
	}
	switch {
	case m["RangeVar"] != nil:
		rv, _ := m["RangeVar"].(map[string]any)
		name, _ := rv["relname"].(string)
		name = strings.ToLower(name)
		if a := alias(rv); a != "" {
			sc.items[a] = true
		} else {
			sc.items[name] = true
		}
		if schema, _ := rv["schemaname"].(string); schema == "" {
			if t, ok := sc.cte(name); ok {
				for k := range t {
					sc.tainted[k] = true
				}
			}
		}
	case m["RangeSubselect"] != nil:
		rs, _ := m["RangeSubselect"].(map[string]any)
		out, err := c.sel(selectBody(rs["subquery"]), sc, outInner)
		if err != nil {
			return err
		}
		a, _ := rs["alias"].(map[string]any)
		for k := range renamed(out, a["colnames"]) {
			sc.tainted[k] = true
		}
		if n := alias(rs); n != "" {
			sc.items[n] = true
		}
	case m["JoinExpr"] != nil:
		j, _ := m["JoinExpr"].(map[string]any)
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
				if n := strings.ToLower(stringNode(u)); sc.isTainted(n) && !c.byName[n] {
					return &maskEscape{column: n, how: "as a FULL JOIN … USING column"}
				}
			}
			if natural, _ := j["isNatural"].(bool); natural {
				for s := sc; s != nil; s = s.outer {
					for n := range s.tainted {
						if !c.byName[n] {
							return &maskEscape{column: n, how: "as a NATURAL FULL JOIN column"}
						}
					}
				}
			}
		}
		if n := alias(j); n != "" {
			sc.items[n] = true
		}
	case m["RangeFunction"] != nil:
		rf, _ := m["RangeFunction"].(map[string]any)
		if err := c.expr(rf["functions"], sc, "through a function in FROM"); err != nil {
			return err
		}
		if n := alias(rf); n != "" {
			sc.items[n] = true
		}
	default:
		// RangeTableFunc (XMLTABLE), RangeTableSample and others: their
		// arguments are expressions.
		for _, x := range m {
			if err := c.expr(x, sc, "through a FROM item"); err != nil {
				return err
			}
		}
	}
	return nil
}

// targets checks a select list (or RETURNING list) in mode and returns its
// tainted output names.
func (c *maskCheck) targets(list []any, sc *scope, mode outMode) (map[string]bool, error) {
	out := map[string]bool{}
	for _, t := range list {
		rt := child(t, "ResTarget")
		alias, _ := rt["name"].(string)
		alias = strings.ToLower(alias)
		val := rt["val"]
		if f := refFields(val); f != nil {
			last := strings.ToLower(f[len(f)-1])
			switch {
			case last == "*":
				// Expanded into columns with their sources; in a subquery,
				// every name in scope may come through.
				if mode == outCopy || mode == outExpr {
					return nil, &maskEscape{column: firstKey(c.masked), how: "through * in " + modeName(mode)}
				}
				for s := sc; s != nil; s = s.outer {
					for k := range s.tainted {
						out[k] = true
					}
				}
			case len(f) == 1 && sc.isItem(last) && !sc.isTainted(last):
				return nil, &maskEscape{column: firstKey(c.masked), how: fmt.Sprintf("inside the whole-row value %q", f[0])}
			case sc.isTainted(last):
				if mode == outCopy || mode == outExpr {
					return nil, &maskEscape{column: last, how: modeName(mode)}
				}
				name := last
				if alias != "" {
					name = alias
				}
				out[name] = true
			}
			continue
		}
		if mode == outTop && alias == "" {
			// A bare cast keeps the column's name: an unqualified mask
			// matches it by name.
			m, _ := val.(map[string]any)
			if tc, ok := m["TypeCast"].(map[string]any); ok {
				if f := refFields(tc["arg"]); len(f) > 0 && c.byName[strings.ToLower(f[len(f)-1])] {
					continue
				}
			}
		}
		if err := c.expr(val, sc, "inside an expression"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func modeName(mode outMode) string {
	switch mode {
	case outCopy:
		return "through COPY (query)"
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
			last := strings.ToLower(f[len(f)-1])
			switch {
			case last == "*":
				return &maskEscape{column: firstKey(c.masked), how: "through * " + how}
			case sc.isTainted(last):
				return &maskEscape{column: last, how: how}
			case len(f) == 1 && sc.isItem(last):
				return &maskEscape{column: firstKey(c.masked), how: fmt.Sprintf("inside the whole-row value %q", f[0])}
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
		if fc, ok := v["FuncCall"].(map[string]any); ok {
			if name, _ := fc["funcname"].([]any); len(name) > 0 && strings.EqualFold(stringNode(name[len(name)-1]), "count") {
				return nil // a number, whatever it counts
			}
		}
		for _, x := range v {
			if err := c.expr(x, sc, how); err != nil {
				return err
			}
		}
	}
	return nil
}
