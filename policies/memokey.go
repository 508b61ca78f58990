package policies

import (
	"bytes"
	"hash/maphash"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/regate/regate/parse"
)

// The memo's keys (see decisionMemo): the input document's canonical JSON
// (parse.InputEncoder, the encoding the record stores) without the values of
// its unknowns, compared byte for byte. The unknowns are input.time and
// input.postgres.params; for a text made from a parse template (its
// statements carry the patches that wrote its integer literals in), also
// input.postgres.query and the digits of each such literal. Each input has
// two keys: one with input.session, and one without it, which the requests
// of every session share. The encoding is a
// function of the input's value: every member at a fixed place, maps with
// sorted keys, and each statement tree as the parser's canonical JSON, from
// which the tree policies see was decoded (parse/sql keeps the two together,
// templated statements included). So equal keys mean inputs equal but for the
// unknowns; unequal keys of equal inputs (which the encoder does not
// produce) would only cost a hit. A hit needs no conversion of the input to a
// Rego value.
//
// The key also says which values were cut out: a templated or shared key
// starts with a marker (a byte no JSON text starts with, and the kind), and every cut leaves a colon followed
// by ',' or '}' where a value was, which valid JSON never has (a string's
// quotes are escaped). Two equal keys therefore cut the same members and the
// same literals, and the traced evaluation that learned one checked exactly
// those (memotrace.go).

// memoKey is the key of an input: its encoding's parts around the unknowns
// (which still belong to the request's encoding) and their hash. own makes
// a copy to keep in the memo. lits, when not nil, are the templated literals
// whose digits were cut out (the key's input's patches, not kept by own);
// shared tells that the session was cut out too.
type memoKey struct {
	parts  [][]byte
	hash   uint64
	lits   []memoLiteral
	shared bool
}

// memoKeys are the two keys of an input: one with its session, and one
// without it, which the requests of every session share.
type memoKeys struct {
	session, shared memoKey
}

// memoLiteral is an integer literal of a templated text: the index of its
// statement and the path from the statement's tree to its A_Const body.
type memoLiteral struct {
	stmt int
	path []any
}

var (
	memoSeed = maphash.MakeSeed()
	// The marks that start the keys of templated texts, of keys without the
	// session, and of both.
	templatedMark       = []byte{0, 'T'}
	sharedMark          = []byte{0, 'S'}
	sharedTemplatedMark = []byte{0, 'S', 'T'}
)

// memoKeyOf returns the keys of in when its decision may be memoized (a
// postgres request whose query text is not huge): from enc, the encoding of
// in, when not nil, else from an encoding of its own.
func memoKeyOf(in *parse.Input, enc *parse.Encoding) (memoKeys, bool) {
	if in.Postgres == nil || len(in.Postgres.Query) > memoMaxQuery {
		return memoKeys{}, false
	}
	if enc == nil {
		var ie parse.InputEncoder
		own, err := ie.EncodeParts(in)
		if err != nil {
			return memoKeys{}, false
		}
		enc = &own
	}
	var ks memoKeys
	lits := literalsOf(in)
	templated := lits != nil && len(lits) == len(enc.Literals)
	cuts := make([][2]int, 0, 5+len(enc.Literals))
	cuts = append(cuts, enc.Time, enc.Session)
	if templated {
		cuts = append(cuts, enc.Query, enc.Params)
		cuts = append(cuts, enc.Literals...)
	} else {
		cuts = append(cuts, enc.Params)
	}
	var ok bool
	mark, shared := []byte(nil), sharedMark
	if templated {
		mark, shared = templatedMark, sharedTemplatedMark
	}
	// The session key keeps the session: cuts[1] is left in place.
	if ks.session, ok = keyAround(enc.JSON, mark, append([][2]int{cuts[0]}, cuts[2:]...)); !ok {
		return memoKeys{}, false
	}
	if ks.shared, ok = keyAround(enc.JSON, shared, cuts); !ok {
		return memoKeys{}, false
	}
	if templated {
		ks.session.lits, ks.shared.lits = lits, lits
	}
	ks.shared.shared = true
	return ks, true
}

// keyAround returns the key made of mark (when not nil) and the bytes of j
// around cuts, which must be in order and not overlap.
func keyAround(j, mark []byte, cuts [][2]int) (memoKey, bool) {
	var k memoKey
	k.parts = make([][]byte, 0, len(cuts)+2)
	if mark != nil {
		k.parts = append(k.parts, mark)
	}
	at := 0
	for _, c := range cuts {
		if c[0] <= at || c[0] > c[1] || c[1] > len(j) {
			return memoKey{}, false
		}
		k.parts = append(k.parts, j[at:c[0]])
		at = c[1]
	}
	k.parts = append(k.parts, j[at:])
	var h maphash.Hash
	h.SetSeed(memoSeed)
	for _, part := range k.parts {
		h.Write(part)
	}
	k.hash = h.Sum64()
	return k, true
}

// literalsOf returns the templated literals of in's statements (see
// parse.Patch), or nil when it has none.
func literalsOf(in *parse.Input) []memoLiteral {
	var lits []memoLiteral
	for i := range in.Postgres.Statements {
		for _, p := range in.Postgres.Statements[i].Patches {
			lits = append(lits, memoLiteral{stmt: i, path: p.Path})
		}
	}
	return lits
}

// equal tells whether two keys are the same bytes (however split).
func (k *memoKey) equal(o *memoKey) bool {
	a, b := k.parts[:], o.parts[:]
	var x, y []byte
	for {
		for len(x) == 0 && len(a) > 0 {
			x, a = a[0], a[1:]
		}
		for len(y) == 0 && len(b) > 0 {
			y, b = b[0], b[1:]
		}
		if len(x) == 0 || len(y) == 0 {
			return len(x) == 0 && len(y) == 0
		}
		n := min(len(x), len(y))
		if !bytes.Equal(x[:n], y[:n]) {
			return false
		}
		x, y = x[n:], y[n:]
	}
}

// own returns k with its bytes copied into one part, for the memo to keep
// (the request's encoding is the record's).
func (k memoKey) own() memoKey {
	b := make([]byte, 0, len(k.parts[0])+len(k.parts[1])+len(k.parts[2]))
	for _, part := range k.parts {
		b = append(b, part...)
	}
	return memoKey{parts: [][]byte{b}, hash: k.hash}
}

// probeInput returns input with other values for the parts of it the key
// leaves out: a time no request has, parameters of another shape (null for
// an array, an array for null), for a shared key another session, and for a
// templated text another query text and other literals (N+1, or 1 for the
// largest). Only the objects and arrays along the way are copied. ok is false
// when a literal of key is not an A_Const body with an integer ival in input
// (which only a bug can cause).
func probeInput(in ast.Object, key *memoKey) (ast.Object, bool) {
	// set returns obj with the member k replaced by what with makes of it.
	set := func(obj ast.Object, k string, with func(ast.Value) *ast.Term) ast.Object {
		out := ast.NewObject()
		obj.Foreach(func(kt, v *ast.Term) {
			if ks, ok := kt.Value.(ast.String); ok && string(ks) == k {
				v = with(v.Value)
			}
			out.Insert(kt, v)
		})
		return out
	}
	out := set(in, "time", func(ast.Value) *ast.Term { return ast.StringTerm("0001-01-01T00:00:00Z") })
	if key.shared {
		out = set(out, "session", func(ast.Value) *ast.Term {
			return ast.ObjectTerm(
				ast.Item(ast.InternedTerm("id"), ast.StringTerm("\x00regate probe")),
				ast.Item(ast.InternedTerm("client_addr"), ast.StringTerm("192.0.2.1:1")),
				ast.Item(ast.InternedTerm("started_at"), ast.StringTerm("0001-01-01T00:00:00Z")))
		})
	}
	pgt := out.Get(ast.InternedTerm("postgres"))
	if pgt == nil {
		return out, key.lits == nil
	}
	pg, ok := pgt.Value.(ast.Object)
	if !ok {
		return out, key.lits == nil
	}
	pg = set(pg, "params", func(v ast.Value) *ast.Term {
		if _, null := v.(ast.Null); null {
			return ast.ArrayTerm(ast.StringTerm("\x00regate probe"), ast.NullTerm())
		}
		return ast.NullTerm()
	})
	if key.lits != nil {
		pg = set(pg, "query", func(v ast.Value) *ast.Term {
			s, _ := v.(ast.String)
			return ast.StringTerm("\x00regate probe " + string(s))
		})
		st := pg.Get(ast.InternedTerm("statements"))
		if st == nil {
			return nil, false
		}
		stmts, ok := st.Value.(*ast.Array)
		if !ok {
			return nil, false
		}
		for _, l := range key.lits {
			path := append([]any{l.stmt, "ast"}, l.path...)
			v := rewritePath(stmts, path, func(body ast.Value) ast.Value {
				obj, ok := body.(ast.Object)
				if !ok || obj.Len() != 2 || obj.Get(ast.InternedTerm("location")) == nil {
					return nil
				}
				n, ok := intIval(obj)
				if !ok {
					return nil
				}
				return set(obj, "ival", func(ast.Value) *ast.Term {
					return ast.ObjectTerm(ast.Item(ast.InternedTerm("ival"), ast.IntNumberTerm(int(n%(1<<31-1)+1))))
				})
			})
			if v == nil {
				return nil, false
			}
			stmts = v.(*ast.Array)
		}
		pg.Insert(ast.InternedTerm("statements"), ast.NewTerm(stmts))
	}
	out.Insert(ast.InternedTerm("postgres"), ast.NewTerm(pg))
	return out, true
}

// rewritePath returns a copy of v with the value at path (map keys as
// strings, array indices as ints) replaced by what fn makes of it, copying
// only the objects and arrays along the path; nil when path does not lead
// to a value.
func rewritePath(v ast.Value, path []any, fn func(ast.Value) ast.Value) ast.Value {
	if len(path) == 0 {
		return fn(v)
	}
	switch x := v.(type) {
	case ast.Object:
		k, ok := path[0].(string)
		if !ok {
			return nil
		}
		kt := ast.StringTerm(k)
		child := x.Get(kt)
		if child == nil {
			return nil
		}
		nv := rewritePath(child.Value, path[1:], fn)
		if nv == nil { // nothing there, or fn refused
			return nil
		}
		out := x.Copy()
		out.Insert(kt, ast.NewTerm(nv))
		return out
	case *ast.Array:
		i, ok := path[0].(int)
		if !ok || i < 0 || i >= x.Len() {
			return nil
		}
		nv := rewritePath(x.Elem(i).Value, path[1:], fn)
		if nv == nil {
			return nil
		}
		out := x.Copy()
		out.Set(i, ast.NewTerm(nv))
		return out
	}
	return nil
}

// intIval returns N of an A_Const body's {"ival": {"ival": N}}.
func intIval(body ast.Object) (int64, bool) {
	it := body.Get(ast.InternedTerm("ival"))
	if it == nil {
		return 0, false
	}
	ival, ok := it.Value.(ast.Object)
	if !ok || ival.Len() != 1 {
		return 0, false
	}
	nt := ival.Get(ast.InternedTerm("ival"))
	if nt == nil {
		return 0, false
	}
	n, ok := nt.Value.(ast.Number)
	if !ok {
		return 0, false
	}
	return n.Int64()
}
