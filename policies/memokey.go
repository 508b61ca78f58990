package policies

import (
	"hash/maphash"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/regate/regate/parse"
)

// The memo's key (see decisionMemo): the input document's canonical JSON
// (parse.InputEncoder, the encoding the record stores) without the values of
// its unknowns (input.time and input.postgres.params), compared byte for
// byte. The encoder writes every member at a fixed place and maps with
// sorted keys, so two inputs have the same key exactly when they are equal
// but for the unknowns; a hit needs no conversion of the input to a Rego
// value.

// memoKey is the key of an input and its hash.
type memoKey struct {
	b    []byte
	hash uint64
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
	b := make([]byte, 0, len(j)-(t[1]-t[0])-(p[1]-p[0]))
	b = append(b, j[:t[0]]...)
	b = append(b, j[t[1]:p[0]]...)
	b = append(b, j[p[1]:]...)
	return memoKey{b: b, hash: maphash.Bytes(memoSeed, b)}, true
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
