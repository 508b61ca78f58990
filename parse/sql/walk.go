package sql

import (
	"cmp"
	"slices"
	"strings"

	"github.com/regate/regate/parse"
)

// located is something found in the parse tree, with its position in the
// query text (-1 when unknown) and the order it was found in.
type located[T any] struct {
	loc, seq int
	v        T
}

// collector walks a statement's JSON parse tree and collects its relations
// and function calls.
type collector struct {
	rels  []located[parse.Relation]
	funcs []located[string]
	seq   int
}

// scope is a linked list of the CTE names visible at a point of the tree.
type scope struct {
	name   string
	parent *scope
}

func (s *scope) has(name string) bool {
	for ; s != nil; s = s.parent {
		if s.name == name {
			return true
		}
	}
	return false
}

// walk visits a JSON value. ctx is the message type of v when v is a message
// body (the value of a Node wrapper or of a typed field), "" when unknown.
func (c *collector) walk(v any, ctx string, sc *scope) {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			c.walk(e, ctx, sc)
		}
	case map[string]any:
		if isRangeVar(v) {
			c.rangeVar(v, parse.AccessRead, sc)
			return
		}
		if name, body, ok := wrapped(v); ok {
			c.walk(body, name, sc)
			return
		}
		c.node(ctx, v, sc)
	}
}

// node visits the fields of a message of type name.
func (c *collector) node(name string, m map[string]any, sc *scope) {
	c.special(name, m)
	if wc, ok := m["withClause"].(map[string]any); ok {
		sc = c.with(wc, sc)
	}
	for field, v := range m {
		switch v.(type) {
		case map[string]any, []any:
		default:
			continue // scalars hold nothing to collect
		}
		key := [2]string{name, field}
		if field == "withClause" || skipFields[key] {
			continue
		}
		if access := fieldAccess(key, m); access != "" && c.direct(v, access, sc) {
			continue
		}
		c.walk(v, typedFields[key], sc)
	}
}

// direct records the RangeVars that are v itself or the elements of v with
// the given access, walks the other elements, and reports whether it handled v.
func (c *collector) direct(v any, access string, sc *scope) bool {
	if rv, ok := asRangeVar(v); ok {
		c.rangeVar(rv, access, sc)
		return true
	}
	list, ok := v.([]any)
	if !ok {
		return false
	}
	for _, e := range list {
		if rv, ok := asRangeVar(e); ok {
			c.rangeVar(rv, access, sc)
		} else {
			c.walk(e, "", sc)
		}
	}
	return true
}

// with walks the CTE bodies of a WITH clause, each with the CTE names visible
// to it, and returns the scope of the statement the clause belongs to.
func (c *collector) with(wc map[string]any, sc *scope) *scope {
	ctes, _ := wc["ctes"].([]any)
	all := sc
	for _, cte := range ctes {
		all = &scope{name: cteName(cte), parent: all}
	}
	recursive := boolField(wc, "recursive")
	inner := sc
	for _, cte := range ctes {
		if recursive {
			c.walk(cte, "", all)
		} else {
			c.walk(cte, "", inner)
		}
		inner = &scope{name: cteName(cte), parent: inner}
	}
	return all
}

func cteName(cte any) string {
	m, _ := cte.(map[string]any)
	body, _ := m["CommonTableExpr"].(map[string]any)
	return stringField(body, "ctename")
}

// rangeVar records a RangeVar, unless it is a read of a visible CTE.
func (c *collector) rangeVar(rv map[string]any, access string, sc *scope) {
	schema, name := stringField(rv, "schemaname"), stringField(rv, "relname")
	if access == parse.AccessRead && schema == "" && stringField(rv, "catalogname") == "" && sc.has(name) {
		return
	}
	c.addRelation(intField(rv, "location"), parse.Relation{Schema: schema, Name: name, Access: access})
}

func (c *collector) addRelation(loc int, r parse.Relation) {
	c.seq++
	c.rels = append(c.rels, located[parse.Relation]{loc: loc, seq: c.seq, v: r})
}

// funcCall records the name of a FuncCall: the bare name, and the qualified
// name too when the call is qualified.
func (c *collector) funcCall(m map[string]any) {
	parts := stringList(m["funcname"])
	if len(parts) == 0 {
		return
	}
	for i := range parts {
		parts[i] = strings.ToLower(parts[i])
	}
	loc := intField(m, "location")
	c.addFunction(loc, parts[len(parts)-1])
	if len(parts) > 1 {
		c.addFunction(loc, strings.Join(parts, "."))
	}
}

func (c *collector) addFunction(loc int, name string) {
	c.seq++
	c.funcs = append(c.funcs, located[string]{loc: loc, seq: c.seq, v: name})
}

// relationList returns the relations in source order, without duplicates,
// never nil.
func (c *collector) relationList() []parse.Relation {
	return inOrder(c.rels)
}

// functionList returns the function names in source order, without
// duplicates, never nil.
func (c *collector) functionList() []string {
	return inOrder(c.funcs)
}

func inOrder[T comparable](items []located[T]) []T {
	slices.SortFunc(items, func(a, b located[T]) int {
		return cmp.Or(cmp.Compare(a.loc, b.loc), cmp.Compare(a.seq, b.seq))
	})
	out := make([]T, 0, len(items))
	seen := make(map[T]struct{}, len(items))
	for _, it := range items {
		if _, dup := seen[it.v]; !dup {
			seen[it.v] = struct{}{}
			out = append(out, it.v)
		}
	}
	return out
}

// isRangeVar reports whether m is the body of a RangeVar: relname is a field of
// no other node a raw parse tree holds.
func isRangeVar(m map[string]any) bool {
	_, ok := m["relname"].(string)
	return ok
}

// asRangeVar returns the RangeVar body v is or wraps.
func asRangeVar(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	if body, ok := m["RangeVar"].(map[string]any); ok && len(m) == 1 {
		m = body
	}
	return m, isRangeVar(m)
}

// wrapped reports whether m is a Node, {"NodeType": body}: node type names
// start with an upper-case letter, field names never do.
func wrapped(m map[string]any) (string, any, bool) {
	if len(m) != 1 {
		return "", nil, false
	}
	for k, v := range m {
		if k != "" && k[0] >= 'A' && k[0] <= 'Z' {
			return k, v, true
		}
	}
	return "", nil, false
}

// stringList returns the values of a list of String nodes (or of a List node
// of them, or of a single String node); nil if v is anything else.
func stringList(v any) []string {
	if m, ok := v.(map[string]any); ok {
		if s, ok := m["String"].(map[string]any); ok {
			return []string{stringField(s, "sval")}
		}
		list, _ := m["List"].(map[string]any)
		v = list["items"]
	}
	items, ok := v.([]any)
	if !ok || len(items) == 0 {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		m, _ := it.(map[string]any)
		s, ok := m["String"].(map[string]any)
		if !ok {
			return nil
		}
		out = append(out, stringField(s, "sval"))
	}
	return out
}
