package parse

import (
	"encoding/json"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// InputEncoder encodes input documents byte for byte as json.Marshal does,
// without reflection, and keeps the encoding of the identity, target and
// session parts, which stay the same for every request of a session, until
// they change. The zero value is ready to use; it is not safe for concurrent
// use.
//
// A Statement's RawAST, when set, is copied as it is: it must be the JSON
// encoding of AST as encoding/json writes it (compact, with <, > and &
// escaped), which is what parse/sql stores.
type InputEncoder struct {
	key       staticKey
	static    []byte // `"identity":…,"target":…,"session":…`
	sessionAt int    // where the session's value starts in static
}

// staticKey is what the cached static part was encoded from: equal keys give
// equal encodings (maps and slices by identity: callers share them
// read-only).
type staticKey struct {
	subject, issuer, email string
	groups                 uintptr
	groupsLen              int
	claims, labels         uintptr
	target, tproto         string
	session                Session
	set                    bool
}

func pointerOf(v any) uintptr {
	rv := reflect.ValueOf(v)
	if rv.IsNil() {
		return 0
	}
	return uintptr(rv.UnsafePointer())
}

func keyOf(in *Input) staticKey {
	return staticKey{
		subject: in.Identity.Subject, issuer: in.Identity.Issuer, email: in.Identity.Email,
		groups: pointerOf(in.Identity.Groups), groupsLen: len(in.Identity.Groups),
		claims: pointerOf(in.Identity.Claims), labels: pointerOf(in.Target.Labels),
		target: in.Target.Name, tproto: in.Target.Protocol, session: in.Session, set: true,
	}
}

// Encoding is an input document's JSON as InputEncoder writes it, with where
// the parts that change from one execution of a prepared statement to the
// next are: the values of input.time and of input.postgres.params, and, for a
// text made from a parse template, the query text and its integer literals.
type Encoding struct {
	JSON []byte
	// Time, Session, Query and Params are the [start, end) offsets in JSON
	// of the values of input.time, input.session, input.postgres.query and
	// input.postgres.params; Query and Params are [0, 0] when the input has
	// no postgres object.
	Time, Session, Query, Params [2]int
	// Literals are the [start, end) offsets in JSON of the digits of every
	// patched literal (parse.Patch with Raw set) of every statement, in the
	// order of the statements and their Patches; nil when a statement has
	// none, or when one of its patches could not be located (no RawAST, or
	// no Raw), in which case none are given.
	Literals [][2]int
}

// Encode returns json.Marshal(in).
func (e *InputEncoder) Encode(in *Input) ([]byte, error) {
	enc, err := e.EncodeParts(in)
	return enc.JSON, err
}

// EncodeParts returns json.Marshal(in) as an Encoding (without parts when in
// is nil).
func (e *InputEncoder) EncodeParts(in *Input) (Encoding, error) {
	if in == nil {
		return Encoding{JSON: []byte("null")}, nil
	}
	// A nil groups slice with a length of 0 and an empty non-nil one differ in
	// JSON (null, []) but not in pointerOf when the empty one has no array:
	// keep those out of the cache.
	k := keyOf(in)
	cacheable := (in.Identity.Groups == nil) == (k.groups == 0)
	if !cacheable || k != e.key {
		static, sessionAt, err := encodeStatic(in)
		if err != nil {
			return Encoding{}, err
		}
		if !cacheable {
			return e.encode(in, static, sessionAt)
		}
		e.key, e.static, e.sessionAt = k, static, sessionAt
	}
	return e.encode(in, e.static, e.sessionAt)
}

// encodeStatic returns the identity, target and session members, and where
// the session's value starts in them.
func encodeStatic(in *Input) ([]byte, int, error) {
	var b []byte
	b = append(b, `"identity":`...)
	id, err := json.Marshal(&in.Identity)
	if err != nil {
		return nil, 0, err
	}
	b = append(b, id...)
	b = append(b, `,"target":`...)
	t, err := json.Marshal(&in.Target)
	if err != nil {
		return nil, 0, err
	}
	b = append(b, t...)
	b = append(b, `,"session":`...)
	s, err := json.Marshal(&in.Session)
	if err != nil {
		return nil, 0, err
	}
	return append(b, s...), len(b), nil
}

func (e *InputEncoder) encode(in *Input, static []byte, sessionAt int) (Encoding, error) {
	var enc Encoding
	b := make([]byte, 0, 1024+len(static))
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(in.Version), 10)
	b = append(b, `,"protocol":`...)
	b = AppendJSONString(b, in.Protocol)
	b = append(b, `,"time":`...)
	t, err := in.Time.MarshalJSON()
	if err != nil {
		return enc, err
	}
	enc.Time[0] = len(b)
	b = append(b, t...)
	enc.Time[1] = len(b)
	b = append(b, ',')
	enc.Session = [2]int{len(b) + sessionAt, len(b) + len(static)}
	b = append(b, static...)
	if pg := in.Postgres; pg != nil {
		b = append(b, `,"postgres":{"database":`...)
		b = AppendJSONString(b, pg.Database)
		b = append(b, `,"user":`...)
		b = AppendJSONString(b, pg.User)
		b = append(b, `,"client_user":`...)
		b = AppendJSONString(b, pg.ClientUser)
		b = append(b, `,"query":`...)
		enc.Query[0] = len(b)
		b = AppendJSONString(b, pg.Query)
		enc.Query[1] = len(b)
		b = append(b, `,"params":`...)
		enc.Params[0] = len(b)
		b, _ = appendList(b, pg.Params, func(b []byte, p *string) ([]byte, error) {
			if p == nil {
				return append(b, "null"...), nil
			}
			return AppendJSONString(b, *p), nil
		})
		enc.Params[1] = len(b)
		b = append(b, `,"statements":`...)
		located := true
		if b, err = appendList(b, pg.Statements, func(b []byte, s Statement) ([]byte, error) {
			at := -1
			b, err := appendStatement(b, s, &at)
			for _, p := range s.Patches {
				if at < 0 || p.Raw[0] <= 0 || p.Raw[1] <= p.Raw[0] || p.Raw[1] > len(s.RawAST) {
					located = false
					break
				}
				enc.Literals = append(enc.Literals, [2]int{at + p.Raw[0], at + p.Raw[1]})
			}
			return b, err
		}); err != nil {
			return enc, err
		}
		if !located {
			enc.Literals = nil
		}
		b = append(b, '}')
	}
	enc.JSON = append(b, '}')
	return enc, nil
}

// appendStatement appends s's encoding and sets *at to the offset in b at
// which its RawAST was copied (when it was).
func appendStatement(b []byte, s Statement, at *int) ([]byte, error) {
	if s.RawAST == nil {
		raw, err := s.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, raw...), nil
	}
	b = append(b, `{"command":`...)
	b = AppendJSONString(b, s.Command)
	b = append(b, `,"node":`...)
	b = AppendJSONString(b, s.Node)
	b = append(b, `,"relations":`...)
	b, _ = appendList(b, s.Relations, func(b []byte, r Relation) ([]byte, error) {
		b = append(b, `{"schema":`...)
		b = AppendJSONString(b, r.Schema)
		b = append(b, `,"name":`...)
		b = AppendJSONString(b, r.Name)
		b = append(b, `,"access":`...)
		b = AppendJSONString(b, r.Access)
		return append(b, '}'), nil
	})
	b = append(b, `,"has_where":`...)
	b = strconv.AppendBool(b, s.HasWhere)
	b = append(b, `,"functions":`...)
	b = AppendJSONStrings(b, s.Functions)
	b = append(b, `,"ast":`...)
	*at = len(b)
	b = append(b, s.RawAST...)
	return append(b, '}'), nil
}

// appendList appends items as encoding/json encodes a slice: null when nil,
// else each item as each appends it, in brackets.
func appendList[T any](b []byte, items []T, each func([]byte, T) ([]byte, error)) ([]byte, error) {
	if items == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = each(b, it); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// AppendJSONStrings appends ss as encoding/json encodes a []string: null when
// nil.
func AppendJSONStrings(dst []byte, ss []string) []byte {
	dst, _ = appendList(dst, ss, func(b []byte, s string) ([]byte, error) { return AppendJSONString(b, s), nil })
	return dst
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as encoding/json encodes a string (with HTML
// escaping, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped).
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
