package policies

import "github.com/open-policy-agent/opa/v1/ast"

// The memo's key (see decisionMemo): the input document but for its unknowns
// (input.time and input.postgres.params), hashed and compared exactly.

// memoInput returns input as an object when its decision may be memoized: a
// postgres request whose query text is not huge.
func memoInput(value ast.Value) (ast.Object, bool) {
	obj, ok := value.(ast.Object)
	if !ok {
		return nil, false
	}
	t := obj.Get(ast.InternedTerm("postgres"))
	if t == nil {
		return nil, false
	}
	pg, ok := t.Value.(ast.Object)
	if !ok {
		return nil, false
	}
	t = pg.Get(ast.InternedTerm("query"))
	if t == nil {
		return nil, false
	}
	if q, ok := t.Value.(ast.String); !ok || len(q) > memoMaxQuery {
		return nil, false
	}
	return obj, true
}

// isUnknown tells whether the member k of the input (in postgres when inPG)
// is one of memoUnknowns.
func isUnknown(k ast.String, inPG bool) bool {
	if inPG {
		return k == "params"
	}
	return k == "time"
}

// keyHash hashes the key part of an input: every member but the unknowns.
// Equal keys have equal hashes; sameKey decides equality.
func keyHash(in ast.Object) uint64 {
	h := uint64(14695981039346656037)
	mix := func(x int) {
		h ^= uint64(x)
		h *= 1099511628211
		h ^= h >> 29
	}
	in.Foreach(func(k, v *ast.Term) {
		ks, ok := k.Value.(ast.String)
		if ok && isUnknown(ks, false) {
			return
		}
		mix(k.Hash())
		if pg, ok := v.Value.(ast.Object); ok && ks == "postgres" {
			pg.Foreach(func(k, v *ast.Term) {
				if ks, ok := k.Value.(ast.String); ok && isUnknown(ks, true) {
					return
				}
				mix(k.Hash())
				mix(v.Hash())
			})
			return
		}
		mix(v.Hash())
	})
	return h
}

// sameKey tells whether two inputs have the same key part: the same members
// (unknowns included, so that both have them or neither), all of them but
// the unknowns exactly equal.
func sameKey(a, b ast.Object) bool {
	if a == b {
		return true
	}
	return sameObject(a, b, func(k ast.String, x, y ast.Value) bool {
		switch {
		case isUnknown(k, false):
			return true
		case k == "postgres":
			px, ok1 := x.(ast.Object)
			py, ok2 := y.(ast.Object)
			if !ok1 || !ok2 {
				return sameValue(x, y)
			}
			return sameObject(px, py, func(k ast.String, x, y ast.Value) bool {
				return isUnknown(k, true) || sameValue(x, y)
			})
		default:
			return sameValue(x, y)
		}
	})
}

// sameObject tells whether a and b have the same string keys and each
// pair of values satisfies same. Objects with keys of other types are never
// the same (an input document has none).
func sameObject(a, b ast.Object, same func(k ast.String, x, y ast.Value) bool) bool {
	if a.Len() != b.Len() {
		return false
	}
	return !a.Until(func(k, x *ast.Term) bool {
		ks, ok := k.Value.(ast.String)
		if !ok {
			return true
		}
		y := b.Get(k)
		return y == nil || !same(ks, x.Value, y.Value)
	})
}

// sameValue tells whether two JSON-shaped values are identical: stricter
// than Rego equality (numbers compare by their text, as json.marshal would
// tell 1 from 1.0), and false for anything an input document cannot hold.
// Shared sub-documents (cached identities, statement trees) compare by
// identity.
func sameValue(a, b ast.Value) bool {
	switch x := a.(type) {
	case ast.Null:
		_, ok := b.(ast.Null)
		return ok
	case ast.Boolean:
		y, ok := b.(ast.Boolean)
		return ok && x == y
	case ast.String:
		y, ok := b.(ast.String)
		return ok && x == y
	case ast.Number:
		y, ok := b.(ast.Number)
		return ok && x == y
	case *ast.Array:
		y, ok := b.(*ast.Array)
		if !ok || x.Len() != y.Len() {
			return false
		}
		if x == y {
			return true
		}
		for i := range x.Len() {
			if !sameValue(x.Elem(i).Value, y.Elem(i).Value) {
				return false
			}
		}
		return true
	case ast.Object:
		y, ok := b.(ast.Object)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		return sameObject(x, y, func(_ ast.String, v, w ast.Value) bool { return sameValue(v, w) })
	default:
		return false
	}
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
