package mask

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/regate/regate/policies/decision"
)

// JSON masks a decoded JSON document (the types encoding/json produces:
// map[string]any, []any, string, float64, json.Number, bool, nil) and returns
// the masked document and the number of replacements. Maps and slices are
// modified in place; the result differs from doc only when doc itself is a
// scalar (a top-level string is masked by the detectors).
//
// Field obligations are JSON pointers (RFC 6901); a "*" segment is an
// extension matching every element of an array or member of an object.
// Each value a pointer reaches is replaced once: a string by Replace(s, with);
// any other value by the string with when with is set, otherwise by null (a
// null stays null and is not counted). A path that does not exist is not an
// error. Column obligations are ignored. Detector obligations then apply to
// every string value anywhere in the document, except values a field
// obligation already replaced; object keys are not masked.
//
// An invalid pointer or an unknown detector is an error, reported before doc
// is changed.
func JSON(doc any, obligations []decision.Mask) (any, int, error) {
	m, err := New(obligations)
	if err != nil {
		return doc, 0, err
	}
	type field struct {
		path []token
		with string
	}
	var fields []field
	for _, o := range obligations {
		if o.Field == "" || o.Column != "" || o.Detector != "" {
			continue
		}
		p, err := parsePointer(o.Field)
		if err != nil {
			return doc, 0, err
		}
		fields = append(fields, field{p, o.With})
	}
	n := 0
	for _, f := range fields {
		doc = maskPath(doc, f.path, f.with, &n)
	}
	if n > 0 || !m.Empty() {
		doc = m.walk(doc, &n)
	}
	return doc, n, nil
}

// token is one reference token of a JSON pointer, unescaped.
type token struct {
	key  string
	wild bool // the extension "*": every element or member
}

// parsePointer parses an RFC 6901 JSON pointer: "" is the whole document,
// otherwise "/"-separated tokens where "~1" is '/' and "~0" is '~'.
func parsePointer(p string) ([]token, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("mask field %q is not a JSON pointer (it must start with \"/\")", p)
	}
	parts := strings.Split(p[1:], "/")
	toks := make([]token, len(parts))
	for i, raw := range parts {
		if raw == "*" {
			toks[i].wild = true
			continue
		}
		key, ok := unescape(raw)
		if !ok {
			return nil, fmt.Errorf("mask field %q: invalid escape in %q (only ~0 and ~1)", p, raw)
		}
		toks[i].key = key
	}
	return toks, nil
}

// unescape decodes "~1" to '/' and "~0" to '~'; any other '~' is invalid.
func unescape(raw string) (string, bool) {
	if strings.IndexByte(raw, '~') < 0 {
		return raw, true
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '~' {
			if i+1 >= len(raw) || raw[i+1] != '0' && raw[i+1] != '1' {
				return "", false
			}
			c = "~/"[raw[i+1]-'0']
			i++
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// masked marks a value a field obligation replaced, so that detectors and
// overlapping pointers leave it alone. walk turns it back into a string.
type masked string

// maskPath replaces what path reaches from v and returns the new v.
func maskPath(v any, path []token, with string, n *int) any {
	if len(path) == 0 {
		return replaceValue(v, with, n)
	}
	t, rest := path[0], path[1:]
	switch x := v.(type) {
	case map[string]any:
		if t.wild {
			for k, c := range x {
				x[k] = maskPath(c, rest, with, n)
			}
		} else if c, ok := x[t.key]; ok {
			x[t.key] = maskPath(c, rest, with, n)
		}
	case []any:
		if t.wild {
			for i, c := range x {
				x[i] = maskPath(c, rest, with, n)
			}
		} else if i, ok := arrayIndex(t.key, len(x)); ok {
			x[i] = maskPath(x[i], rest, with, n)
		}
	}
	return v
}

// arrayIndex parses an RFC 6901 array index ("0" or digits without a
// leading zero) below size.
func arrayIndex(key string, size int) (int, bool) {
	if key == "" || len(key) > 1 && key[0] == '0' || key[0] == '+' || key[0] == '-' {
		return 0, false
	}
	i, err := strconv.Atoi(key)
	return i, err == nil && i < size
}

func replaceValue(v any, with string, n *int) any {
	switch x := v.(type) {
	case masked:
		return x
	case string:
		*n++
		return masked(Replace(x, with))
	case nil:
		if with == "" {
			return nil
		}
	}
	*n++
	if with != "" {
		return masked(with)
	}
	return nil
}

// walk applies the detectors to every string in v, turns masked values back
// into strings, and returns the new v.
func (m *Masker) walk(v any, n *int) any {
	switch x := v.(type) {
	case masked:
		return string(x)
	case string:
		s, k := m.Text(x)
		*n += k
		return s
	case map[string]any:
		for k, c := range x {
			x[k] = m.walk(c, n)
		}
	case []any:
		for i, c := range x {
			x[i] = m.walk(c, n)
		}
	}
	return v
}
