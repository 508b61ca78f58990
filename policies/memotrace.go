package policies

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// The memo's proof. A memoized decision is served for every input with the
// same key, that is, for every input that differs from the one it was
// learned from only in the parts the key leaves out: input.time,
// input.postgres.params, for a shared key input.session, and for a templated
// text input.postgres.query and the values of the literals the template
// wrote into the statements' trees (the volatile parts). It is learned only from an evaluation that read none
// of them: the decision is evaluated once more with a tracer that sees every
// expression evaluated, with rule indexing off (the index skips rules by
// looking at values), and each of those must pass volatileSafe. Rego evaluation is deterministic, so an input differing only
// in what that evaluation never read evaluates the same expressions to the
// same values, and decides the same.
//
// The check is syntactic and conservative: a reference into the input is
// safe when it cannot name a volatile part or a document holding one (a
// variable in it may stand for any key); naming a document that holds one
// (input.postgres, a statement) is safe only in an expression that is that
// reference alone, or its negation, which tests whether it is defined:
// objects and arrays are always true, and so are the query text and the
// literals, which are a string and numbers in every input of the key. The
// parameters and the time are never read, not even that way: the key leaves
// out their shape too.
//
// OPA's partial evaluation, with the volatile parts unknown, was the proof
// before, and is not one: OPA 1.22.3's partial evaluation, when it
// enumerates a collection, binds the variable to the known part of an element
// and loses the unknowns below it. With the parameters unknown, `some k, v
// in input; k == "postgres"; v.params[0] == "42"` comes out as never
// holding, and with a literal unknown, `some s in input.postgres.statements;
// s.ast...ival.ival == 666` too. The memo took only a residual that was one
// ground value, which such policies happened not to produce, but nothing
// guaranteed it (TestMemoEnumeratedUnknowns).

// volatilePath is a path under input that the key may leave out; a nil
// element matches any key.
type volatilePath struct {
	path []*ast.Term
	// truthy: every input of a key holds a value here that is neither
	// false nor undefined, so testing whether it is defined is safe.
	truthy bool
}

var (
	volatileAlways = []volatilePath{
		{path: []*ast.Term{ast.StringTerm("time")}},
		{path: []*ast.Term{ast.StringTerm("postgres"), ast.StringTerm("params")}},
	}
	volatileSession   = volatilePath{path: []*ast.Term{ast.StringTerm("session")}}
	volatileTemplated = append(volatileAlways,
		volatilePath{path: []*ast.Term{ast.StringTerm("postgres"), ast.StringTerm("query")}, truthy: true},
		volatilePath{path: []*ast.Term{ast.StringTerm("postgres"), ast.StringTerm("statements"), nil, ast.StringTerm("ast")}, truthy: true},
	)
)

// volatileTracer checks every expression an evaluation reaches with
// volatileSafe; bad is the first that fails. Rule heads need no check of
// their own: OPA's compiler moves every term of a head that is not a
// variable or a constant into the rule's body, as expressions the tracer
// sees (TestVolatileSafe checks that it does).
type volatileTracer struct {
	paths []volatilePath
	seen  map[*ast.Expr]struct{}
	bad   *ast.Expr
}

func (t *volatileTracer) Enabled() bool { return true }

func (t *volatileTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (t *volatileTracer) TraceEvent(ev topdown.Event) {
	if t.bad != nil {
		return
	}
	node, ok := ev.Node.(*ast.Expr)
	if !ok || ev.Op != topdown.EvalOp {
		return
	}
	if _, ok := t.seen[node]; ok {
		return
	}
	t.seen[node] = struct{}{}
	if !volatileSafe(node, t.paths) {
		t.bad = node
	}
}

// volatileSafe tells whether the expression e cannot read a volatile part of
// the input (see paths). An expression that is a reference alone tests
// whether it is defined, with modifiers or not: the compiler moves what a
// modifier's value reads into an expression of its own (TestVolatileSafe).
func volatileSafe(e *ast.Expr, paths []volatilePath) bool {
	if t, ok := e.Terms.(*ast.Term); ok {
		if r, ok := t.Value.(ast.Ref); ok && r.HasPrefix(ast.InputRootRef) {
			return refSafe(r, paths, true)
		}
	}
	return termsSafe(paths, e)
}

// termsSafe tells whether no reference in xs can read a volatile part of
// the input, however it is used.
func termsSafe(paths []volatilePath, xs ...any) bool {
	safe := true
	vis := ast.NewGenericVisitor(func(x any) bool {
		if !safe {
			return true
		}
		switch v := x.(type) {
		case ast.Ref:
			if len(v) == 0 || v[0].Value.Compare(ast.InputRootDocument.Value) != 0 {
				return false
			}
			// The compiler moves a reference used as a key into an
			// expression of its own (TestVolatileSafe checks that it does).
			safe = refSafe(v, paths, false)
			return true
		case ast.Var:
			// input other than as a reference's head (which the case above
			// handles) is the whole document.
			safe = v.Compare(ast.InputRootDocument.Value) != 0
		}
		return false
	})
	for _, x := range xs {
		vis.Walk(x)
	}
	return safe
}

// refSafe tells whether the reference r into input cannot read a volatile
// part: r cannot name a volatile part or a document under one, and names a
// document holding one only when truth (the expression is r alone). A
// variable in r matches any key.
func refSafe(r ast.Ref, paths []volatilePath, truth bool) bool {
	path := r[1:]
	for _, v := range paths {
		n := min(len(path), len(v.path))
		match := true
		for i := range n {
			if v.path[i] == nil || !path[i].IsGround() {
				continue
			}
			if !path[i].Equal(v.path[i]) {
				match = false
				break
			}
		}
		switch {
		case !match:
		case len(path) < len(v.path): // a document holding the volatile part
			if !truth {
				return false
			}
		case !truth || !v.truthy: // the volatile part, or in it
			return false
		}
	}
	return true
}

// readsVolatile evaluates the decision for input once more, traced (see
// volatileTracer): learnOK, with the result, when no expression it reached
// could read a part of the input that key leaves out and the result is
// want; learnRefused when one could, or the evaluation fails or differs;
// learnAborted when ctx ended.
func (e *Engine) readsVolatile(ctx context.Context, gen *generation, txn storage.Transaction, input ast.Object, key *memoKey, cancel topdown.Cancel, want any) (any, learnVerdict) {
	paths := volatileAlways
	if key.lits != nil {
		paths = volatileTemplated
	}
	if key.shared {
		paths = append(slices.Clip(paths), volatileSession)
	}
	tr := &volatileTracer{paths: paths, seen: make(map[*ast.Expr]struct{})}
	rs, err := gen.query.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalTransaction(txn),
		rego.EvalExternalCancel(cancel),
		rego.EvalQueryTracer(tr),
		rego.EvalRuleIndexing(false),
		rego.EvalSortSets(true),
		rego.EvalCopyMaps(true),
	)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, learnAborted
	case err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0:
		return nil, learnRefused
	case tr.bad != nil:
		where := ""
		if loc := tr.bad.Location; loc != nil {
			where = fmt.Sprintf("%s:%d", loc.File, loc.Row)
		}
		e.logger.Debug("the decision reads a part of the input that changes between requests; not memoized",
			"at", where, "expression", tr.bad.String())
		return nil, learnRefused
	case !reflect.DeepEqual(rs[0].Expressions[0].Value, want):
		e.logger.Warn("the traced evaluation of the decision differs from its evaluation; not memoized")
		return nil, learnRefused
	}
	return rs[0].Expressions[0].Value, learnOK
}
