package sql

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/regate/regate/parse"
)

// Query templates: texts that differ only in the values of integer literals,
// such as "SELECT abalance FROM pgbench_accounts WHERE aid = 4711" (the
// simple protocol carries values in the text), miss the exact-text cache
// every time. A template is the parse of one such text plus where each
// literal sits in its trees; a text of the same shape (the same bytes but for
// the literals' digits, literals of the same lengths) gets the template's
// statements with the literals' values written in: exactly what parsing it
// gives, without parsing it.
//
// Only literals that cannot change the parse are templated: decimal integer
// tokens of 1 to 2147483647 without a leading zero (the lexer turns them all
// into the same kind of token, an int32 ICONST), each of which became exactly
// one A_Const node whose location is the literal's offset and whose value is
// the literal's. Any other use of a number (a negated constant, whose location
// is its sign; a count or precision the grammar consumes, such as float(24);
// a digit in a string or comment) leaves no such node, and the shape is not
// templated. Any value that must be written in is then an A_Const's ival: in
// the map tree, and in RawAST as `{"A_Const":{"ival":{"ival":N},"location":L}}`
// with the same number of digits (same length, no leading zero). Statement
// fields other than AST and RawAST do not depend on constant values (they come
// from node types, names and locations).

// maxTemplateLiterals bounds the literals of a templated text.
const maxTemplateLiterals = 32

// literal is an integer literal of a query text.
type literal struct {
	off, end int // byte offsets in the text
}

// template is the parse of one text of a shape.
type template struct {
	stmts []parse.Statement
	lits  []tplLiteral // in text order, one per literal of the shape
}

type tplLiteral struct {
	stmt int   // index of the statement holding it
	path []any // map keys (string) and array indices (int) from the statement's AST to the A_Const body
	raw  int   // offset of the value's digits in the statement's RawAST
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isIdentByte tells whether c can continue an identifier or number token.
func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '_' || c == '$' || c >= 0x80
}

// scanLiterals returns the candidate integer literals of q: maximal digit
// runs outside comments, strings, quoted identifiers and dollar quotes, not
// touching an identifier, number or parameter, without a leading zero and at
// most 2147483647. The scan only proposes: a template is made only when every
// candidate proves to be an A_Const (see makeTemplate). ok is false when q
// has too many.
func scanLiterals(q string) (lits []literal, ok bool) {
	n := len(q)
	for i := 0; i < n; {
		c := q[i]
		switch {
		case c == '-' && i+1 < n && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				return lits, true
			}
			i += j + 1
		case c == '/' && i+1 < n && q[i+1] == '*':
			depth := 1
			i += 2
			for i < n && depth > 0 {
				switch {
				case q[i] == '*' && i+1 < n && q[i+1] == '/':
					depth--
					i += 2
				case q[i] == '/' && i+1 < n && q[i+1] == '*':
					depth++
					i += 2
				default:
					i++
				}
			}
		case c == '\'':
			// Escape-string syntax (E'...') is handled by the identifier
			// case; here backslashes are plain.
			i = skipQuoted(q, i, '\'', false)
		case c == '"':
			i = skipQuoted(q, i, '"', false)
		case c == '$':
			j := i + 1
			if j < n && isDigit(q[j]) { // a parameter: $1
				for j < n && isDigit(q[j]) {
					j++
				}
				i = j
				continue
			}
			for j < n && isIdentByte(q[j]) && q[j] != '$' {
				j++
			}
			if j < n && q[j] == '$' {
				tag := q[i : j+1]
				k := strings.Index(q[j+1:], tag)
				if k < 0 {
					return lits, true
				}
				i = j + 1 + k + len(tag)
				continue
			}
			i = j
		case isDigit(c):
			j := i
			for j < n && isDigit(q[j]) {
				j++
			}
			if (i == 0 || !isIdentByte(q[i-1]) && q[i-1] != '.') &&
				(j == n || !isIdentByte(q[j]) && q[j] != '.') && c != '0' && j-i <= 10 {
				if v, err := strconv.ParseInt(q[i:j], 10, 64); err == nil && v <= 1<<31-1 {
					if len(lits) == maxTemplateLiterals {
						return nil, false
					}
					lits = append(lits, literal{off: i, end: j})
				}
			}
			i = j
		case isIdentByte(c) || c == '.':
			j := i + 1
			for j < n && isIdentByte(q[j]) {
				j++
			}
			if j == i+1 && (c == 'e' || c == 'E') && j < n && q[j] == '\'' {
				i = skipQuoted(q, j, '\'', true)
				continue
			}
			i = j
		default:
			i++
		}
	}
	return lits, true
}

// skipQuoted returns the offset after the quoted text starting at q[i] ==
// quote (a doubled quote continues it; with backslashes, \x escapes x).
func skipQuoted(q string, i int, quote byte, backslashes bool) int {
	for j := i + 1; j < len(q); j++ {
		switch q[j] {
		case '\\':
			if backslashes {
				j++
			}
		case quote:
			if j+1 < len(q) && q[j+1] == quote {
				j++
				continue
			}
			return j + 1
		}
	}
	return len(q)
}

// shapeOf returns the text with the literals' digits replaced by NUL bytes
// (which a parsed text never contains).
func shapeOf(q string, lits []literal) string {
	b := []byte(q)
	for _, l := range lits {
		for i := l.off; i < l.end; i++ {
			b[i] = 0
		}
	}
	return string(b)
}

// makeTemplate returns the template of stmts, the parse of q, or nil when a
// literal is not exactly one A_Const of its value at its offset.
func makeTemplate(q string, lits []literal, stmts []parse.Statement) *template {
	if len(lits) == 0 || len(stmts) == 0 {
		return nil
	}
	want := make(map[int]int, len(lits)) // offset -> literal index
	for i, l := range lits {
		want[l.off] = i
	}
	t := &template{stmts: stmts, lits: make([]tplLiteral, len(lits))}
	found := make([]int, len(lits))
	for si := range stmts {
		if stmts[si].RawAST == nil || stmts[si].AST == nil {
			return nil
		}
		var path []any
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if body, ok := v["A_Const"].(map[string]any); ok && len(v) == 1 {
					if loc, ok := body["location"].(float64); ok {
						if i, ok := want[int(loc)]; ok && float64(int(loc)) == loc {
							found[i]++
							t.lits[i] = tplLiteral{stmt: si, path: append(append([]any(nil), path...), "A_Const")}
						}
					}
				}
				for k, x := range v {
					path = append(path, k)
					walk(x)
					path = path[:len(path)-1]
				}
			case []any:
				for k, x := range v {
					path = append(path, k)
					walk(x)
					path = path[:len(path)-1]
				}
			}
		}
		walk(stmts[si].AST)
	}
	for i, l := range lits {
		if found[i] != 1 {
			return nil
		}
		lt := &t.lits[i]
		body := lookup(stmts[lt.stmt].AST, lt.path)
		ival, _ := body["ival"].(map[string]any)
		v, _ := strconv.ParseInt(q[l.off:l.end], 10, 64)
		if len(body) != 2 || len(ival) != 1 || ival["ival"] != float64(v) {
			return nil
		}
		pat := `{"A_Const":{"ival":{"ival":` + q[l.off:l.end] + `},"location":` + strconv.Itoa(l.off) + `}}`
		raw := stmts[lt.stmt].RawAST
		at := bytes.Index(raw, []byte(pat))
		if at < 0 || bytes.Contains(raw[at+1:], []byte(pat)) {
			return nil
		}
		lt.raw = at + len(`{"A_Const":{"ival":{"ival":`)
	}
	return t
}

// lookup follows path from root to a map.
func lookup(root map[string]any, path []any) map[string]any {
	var v any = root
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[p]
		case int:
			a, _ := v.([]any)
			if p >= len(a) {
				return nil
			}
			v = a[p]
		}
	}
	m, _ := v.(map[string]any)
	return m
}

// fill returns the template's statements with the values of q's literals.
// q has the template's shape.
func (t *template) fill(q string, lits []literal) []parse.Statement {
	out := make([]parse.Statement, len(t.stmts))
	copy(out, t.stmts)
	copied := make([]bool, len(out))
	for i, l := range lits {
		lt := t.lits[i]
		st := &out[lt.stmt]
		if !copied[lt.stmt] {
			st.RawAST = bytes.Clone(st.RawAST)
			st.Base = &t.stmts[lt.stmt]
			copied[lt.stmt] = true
		}
		digits := q[l.off:l.end]
		copy(st.RawAST[lt.raw:lt.raw+len(digits)], digits)
		v, _ := strconv.ParseInt(digits, 10, 64)
		body := map[string]any{"ival": map[string]any{"ival": float64(v)}, "location": float64(l.off)}
		st.AST = withPath(st.AST, lt.path, body).(map[string]any)
		st.Patches = append(st.Patches, parse.Patch{Path: lt.path, Value: body, Raw: [2]int{lt.raw, lt.raw + len(digits)}})
	}
	return out
}

// withPath returns a copy of v with the value at path replaced by x; only
// the maps and arrays along path are copied.
func withPath(v any, path []any, x any) any {
	if len(path) == 0 {
		return x
	}
	switch p := path[0].(type) {
	case string:
		m := v.(map[string]any)
		c := make(map[string]any, len(m))
		for k, e := range m {
			c[k] = e
		}
		c[p] = withPath(m[p], path[1:], x)
		return c
	default:
		a := v.([]any)
		c := append([]any(nil), a...)
		c[p.(int)] = withPath(a[p.(int)], path[1:], x)
		return c
	}
}
