package policies

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/parse"
)

// valueCache remembers the AST values of documents that many inputs share:
// the identity of a session (keyed by its claims map) and the parse tree of a
// statement (keyed by its map, which parse/sql's cache shares between every
// execution of the same text). Entries hold their key alive, so an address is
// never reused while cached. Eviction is first in, first out.
type valueCache struct {
	mu    sync.Mutex
	max   int
	m     map[unsafe.Pointer]cached
	order []unsafe.Pointer
	next  int

	// targets caches the values of targets (a handful per gateway), keyed
	// by their fields with the labels map by identity.
	targets map[targetKey]cached

	// stmts caches the values of statements, keyed by their tree (as the
	// cache of trees is) and checked against their other fields, which are
	// kept with the value.
	stmts map[unsafe.Pointer]cachedStatement
}

type cachedStatement struct {
	stmt  parse.Statement // AST keeps the tree alive; RawAST, Base, Patches unset
	value ast.Value
}

// sameFields tells whether s has the fields the cached value was made from.
func (c *cachedStatement) sameFields(s *parse.Statement) bool {
	k := &c.stmt
	return k.Command == s.Command && k.Node == s.Node && k.HasWhere == s.HasWhere &&
		(k.Relations == nil) == (s.Relations == nil) && slices.Equal(k.Relations, s.Relations) &&
		(k.Functions == nil) == (s.Functions == nil) && slices.Equal(k.Functions, s.Functions)
}

type targetKey struct {
	name, protocol string
	labels         unsafe.Pointer
}

type cached struct {
	keep  any
	value ast.Value
}

func newValueCache(max int) *valueCache {
	return &valueCache{max: max, m: make(map[unsafe.Pointer]cached, max)}
}

func mapKey(m map[string]any) unsafe.Pointer {
	if m == nil {
		return nil
	}
	return reflect.ValueOf(m).UnsafePointer()
}

// get returns the cached value for key, computing and caching it on a miss.
func (c *valueCache) get(key unsafe.Pointer, keep any, compute func() (ast.Value, error)) (ast.Value, error) {
	if key == nil {
		return compute()
	}
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return e.value, nil
	}
	v, err := compute()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok {
		if len(c.order) < c.max {
			c.order = append(c.order, key)
		} else {
			delete(c.m, c.order[c.next])
			c.order[c.next] = key
			c.next = (c.next + 1) % c.max
		}
		c.m[key] = cached{keep: keep, value: v}
	}
	return v, nil
}

// fastInputValue builds the AST value of a postgres input directly, with the
// identity and the statements' trees taken from the cache. It gives exactly
// what inputValue gives (TestInputValueMatchesJSON checks both).
func (e *Engine) fastInputValue(in *parse.Input) (ast.Value, error) {
	if in.Postgres == nil || in.Time.Year() < 0 || in.Time.Year() > 9999 {
		return inputValue(in)
	}
	ident, err := e.cache.get(mapKey(in.Identity.Claims), in.Identity.Claims, func() (ast.Value, error) {
		return viaJSON(in.Identity)
	})
	if err != nil {
		return nil, err
	}
	pg, err := e.postgresValue(in.Postgres)
	if err != nil {
		return nil, err
	}
	target, err := e.cache.target(in.Target)
	if err != nil {
		return nil, err
	}
	session := ast.NewObject(
		item("id", ast.String(in.Session.ID)),
		item("client_addr", ast.String(in.Session.ClientAddr)),
		item("started_at", ast.String(in.Session.StartedAt.Format(time.RFC3339Nano))),
	)
	return ast.NewObject(
		item("version", ast.Number(json.Number(strconv.Itoa(in.Version)))),
		item("protocol", ast.String(in.Protocol)),
		item("time", ast.String(in.Time.Format(time.RFC3339Nano))),
		item("identity", ident),
		item("target", target),
		item("session", session),
		item("postgres", pg),
	), nil
}

// target returns the value of t, cached when t has labels (a nil map has no
// identity to key by).
func (c *valueCache) target(t parse.Target) (ast.Value, error) {
	if t.Labels == nil {
		return viaJSON(t)
	}
	k := targetKey{name: t.Name, protocol: t.Protocol, labels: reflect.ValueOf(t.Labels).UnsafePointer()}
	c.mu.Lock()
	e, ok := c.targets[k]
	c.mu.Unlock()
	if ok {
		return e.value, nil
	}
	v, err := viaJSON(t)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.targets == nil || len(c.targets) >= 1024 {
		c.targets = make(map[targetKey]cached)
	}
	c.targets[k] = cached{keep: t.Labels, value: v}
	return v, nil
}

func item(k string, v ast.Value) [2]*ast.Term {
	return [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(v)}
}

func (e *Engine) postgresValue(p *parse.Postgres) (ast.Value, error) {
	var params ast.Value = ast.NullValue
	if p.Params != nil {
		terms := make([]*ast.Term, len(p.Params))
		for i, s := range p.Params {
			if s == nil {
				terms[i] = ast.NullTerm()
			} else {
				terms[i] = ast.StringTerm(*s)
			}
		}
		params = ast.NewArray(terms...)
	}
	var stmts ast.Value = ast.NullValue
	if p.Statements != nil {
		terms := make([]*ast.Term, len(p.Statements))
		for i := range p.Statements {
			v, err := e.statementValue(&p.Statements[i])
			if err != nil {
				return nil, fmt.Errorf("convert input: statement %d: %w", i, err)
			}
			terms[i] = ast.NewTerm(v)
		}
		stmts = ast.NewArray(terms...)
	}
	return ast.NewObject(
		item("database", ast.String(p.Database)),
		item("user", ast.String(p.User)),
		item("client_user", ast.String(p.ClientUser)),
		item("query", ast.String(p.Query)),
		item("params", params),
		item("statements", stmts),
	), nil
}

// statementValue returns the value of s, cached when its tree is its own
// (not patched from a template's).
func (e *Engine) statementValue(s *parse.Statement) (ast.Value, error) {
	if s.AST == nil || (s.Base != nil && len(s.Patches) > 0) {
		return e.makeStatementValue(s)
	}
	key := mapKey(s.AST)
	c := e.cache
	c.mu.Lock()
	cs, ok := c.stmts[key]
	c.mu.Unlock()
	if ok && cs.sameFields(s) {
		return cs.value, nil
	}
	v, err := e.makeStatementValue(s)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stmts == nil || len(c.stmts) >= c.max {
		c.stmts = make(map[unsafe.Pointer]cachedStatement)
	}
	c.stmts[key] = cachedStatement{value: v, stmt: parse.Statement{
		Command: s.Command, Node: s.Node, HasWhere: s.HasWhere, AST: s.AST,
		Relations: slices.Clone(s.Relations), Functions: slices.Clone(s.Functions),
	}}
	return v, nil
}

func (e *Engine) makeStatementValue(s *parse.Statement) (ast.Value, error) {
	tree, err := e.treeValue(s)
	if err != nil {
		return nil, err
	}
	var rels ast.Value = ast.NullValue
	if s.Relations != nil {
		terms := make([]*ast.Term, len(s.Relations))
		for i, r := range s.Relations {
			terms[i] = ast.NewTerm(ast.NewObject(
				item("schema", ast.String(r.Schema)), item("name", ast.String(r.Name)), item("access", ast.String(r.Access))))
		}
		rels = ast.NewArray(terms...)
	}
	return ast.NewObject(
		item("command", ast.String(s.Command)),
		item("node", ast.String(s.Node)),
		item("relations", rels),
		item("has_where", ast.Boolean(s.HasWhere)),
		item("functions", stringsValue(s.Functions)),
		item("ast", tree),
	), nil
}

// treeValue returns the value of s.AST. A statement made from a template
// (s.Base) gets its base's cached value with the patched values replaced:
// only the objects and arrays on the way to them are new. It is not cached
// itself: its tree is never seen again.
func (e *Engine) treeValue(s *parse.Statement) (ast.Value, error) {
	convert := func(m map[string]any) func() (ast.Value, error) {
		return func() (ast.Value, error) { return jsonValue(m) }
	}
	b := s.Base
	if b == nil || len(s.Patches) == 0 || b.Base != nil || s.AST == nil || b.AST == nil {
		return e.cache.get(mapKey(s.AST), s.AST, convert(s.AST))
	}
	v, err := e.cache.get(mapKey(b.AST), b.AST, convert(b.AST))
	if err != nil {
		return nil, err
	}
	for _, p := range s.Patches {
		x, err := jsonValue(p.Value)
		if err != nil {
			return nil, err
		}
		if v, err = patchValue(v, p.Path, x); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// patchValue returns v with the value at path replaced by x, copying the
// objects and arrays along path (their other members are shared).
func patchValue(v ast.Value, path []any, x ast.Value) (ast.Value, error) {
	if len(path) == 0 {
		return x, nil
	}
	switch p := path[0].(type) {
	case string:
		obj, ok := v.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("convert input: patch: %q of a %s", p, ast.ValueName(v))
		}
		key := ast.StringTerm(p)
		old := obj.Get(key)
		if old == nil {
			return nil, fmt.Errorf("convert input: patch: no member %q", p)
		}
		nv, err := patchValue(old.Value, path[1:], x)
		if err != nil {
			return nil, err
		}
		kvs := make([][2]*ast.Term, 0, obj.Len())
		obj.Foreach(func(k, t *ast.Term) {
			if k.Equal(key) {
				t = ast.NewTerm(nv)
			}
			kvs = append(kvs, [2]*ast.Term{k, t})
		})
		return ast.NewObject(kvs...), nil
	case int:
		arr, ok := v.(*ast.Array)
		if !ok || p < 0 || p >= arr.Len() {
			return nil, fmt.Errorf("convert input: patch: [%d] of a %s", p, ast.ValueName(v))
		}
		nv, err := patchValue(arr.Elem(p).Value, path[1:], x)
		if err != nil {
			return nil, err
		}
		terms := make([]*ast.Term, arr.Len())
		for i := range terms {
			terms[i] = arr.Elem(i)
		}
		terms[p] = ast.NewTerm(nv)
		return ast.NewArray(terms...), nil
	default:
		return nil, fmt.Errorf("convert input: patch: path element %v", p)
	}
}

func stringsValue(ss []string) ast.Value {
	if ss == nil {
		return ast.NullValue
	}
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

// viaJSON converts a value through its JSON encoding, as the contract defines.
func viaJSON(x any) (ast.Value, error) {
	raw, err := json.Marshal(x)
	if err != nil {
		return nil, fmt.Errorf("encode input: %w", err)
	}
	var doc any
	if err := util.UnmarshalJSON(raw, &doc); err != nil {
		return nil, fmt.Errorf("decode input: %w", err)
	}
	return ast.InterfaceToValue(doc)
}
