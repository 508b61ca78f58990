package policies

import (
	"bytes"
	"hash/maphash"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/regate/regate/parse"
)

// The memo's key (see decisionMemo): the input document's canonical JSON
// (parse.InputEncoder, the encoding the record stores) without the values of
// its unknowns (input.time and input.postgres.params), compared byte for
// byte. The encoding is a function of the input's value: every member at a
// fixed place, maps with sorted keys, and each statement tree as the parser's
// canonical JSON, from which the tree policies see was decoded (parse/sql
// keeps the two together, templated statements included). So equal keys mean
// inputs equal but for the unknowns; unequal keys of equal inputs (which
// the encoder does not produce) would only cost a hit. A hit needs no
// conversion of the input to a Rego value.

// memoKey is the key of an input: its encoding's parts around the unknowns
// (which still belong to the request's encoding) and their hash. own makes
// a copy to keep in the memo.
type memoKey struct {
	parts [3][]byte
	hash  uint64
}

var memoSeed = maphash.MakeSeed()

// memoKeyOf returns the key of in when its decision may be memoized (a
// postgres request whose query text is not huge): from enc, the encoding of
// in, when not nil, else from an encoding of its own.
func memoKeyOf(in *parse.Input, enc *parse.Encoding) (memoKey, bool) {
	if in.Postgres == nil || len(in.Postgres.Query) > memoMaxQuery {
		return memoKey{}, false
	}
	if enc == nil {
		var ie parse.InputEncoder
		own, err := ie.EncodeParts(in)
		if err != nil {
			return memoKey{}, false
		}
		enc = &own
	}
	j, t, p := enc.JSON, enc.Time, enc.Params
	if t[0] <= 0 || t[0] > t[1] || t[1] > p[0] || p[0] > p[1] || p[1] > len(j) {
		return memoKey{}, false
	}
	k := memoKey{parts: [3][]byte{j[:t[0]], j[t[1]:p[0]], j[p[1]:]}}
	var h maphash.Hash
	h.SetSeed(memoSeed)
	for _, part := range k.parts {
		h.Write(part)
	}
	k.hash = h.Sum64()
	return k, true
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
	return memoKey{parts: [3][]byte{b}, hash: k.hash}
}

// isUnknown tells whether the member k of the input (in postgres when inPG)
// is one of memoUnknowns.
func isUnknown(k ast.String, inPG bool) bool {
	if inPG {
		return k == "params"
	}
	return k == "time"
}

// knownPart returns the input without the unknowns, the input partial
// evaluation gets.
func knownPart(in ast.Object) ast.Object {
	out := ast.NewObject()
	in.Foreach(func(k, v *ast.Term) {
		ks, _ := k.Value.(ast.String)
		if isUnknown(ks, false) {
			return
		}
		if pg, ok := v.Value.(ast.Object); ok && ks == "postgres" {
			known := ast.NewObject()
			pg.Foreach(func(k, v *ast.Term) {
				if ks, ok := k.Value.(ast.String); !ok || !isUnknown(ks, true) {
					known.Insert(k, v)
				}
			})
			v = ast.NewTerm(known)
		}
		out.Insert(k, v)
	})
	return out
}

// probeInput returns input with other values for the unknowns: a time no
// request has, and parameters of another shape (null for an array, an
// array for null).
func probeInput(in ast.Object) ast.Object {
	out := ast.NewObject()
	in.Foreach(func(k, v *ast.Term) {
		ks, _ := k.Value.(ast.String)
		if isUnknown(ks, false) {
			v = ast.StringTerm("0001-01-01T00:00:00Z")
		} else if pg, ok := v.Value.(ast.Object); ok && ks == "postgres" {
			probe := ast.NewObject()
			pg.Foreach(func(k, v *ast.Term) {
				if ks, ok := k.Value.(ast.String); ok && isUnknown(ks, true) {
					if _, null := v.Value.(ast.Null); null {
						v = ast.ArrayTerm(ast.StringTerm("\x00regate probe"), ast.NullTerm())
					} else {
						v = ast.NullTerm()
					}
				}
				probe.Insert(k, v)
			})
			v = ast.NewTerm(probe)
		}
		out.Insert(k, v)
	})
	return out
}
