package mask

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
)

// scanJWT finds JSON Web Tokens: "eyJ…" then base64url segments joined by
// dots, three (JWS) or five (JWE), whose first segment decodes to a JSON
// object with an "alg" member.
func scanJWT(s string, ms []match) []match {
	for i := 0; ; {
		k := strings.Index(s[i:], "eyJ")
		if k < 0 {
			return ms
		}
		i += k
		end, ok := 0, i == 0 || !isB64URL(s[i-1])
		if ok {
			end, ok = jwtAt(s, i)
		}
		if ok {
			ms = append(ms, match{i, end, detJWT})
			i = end
		} else {
			i++
		}
	}
}

func jwtAt(s string, i int) (int, bool) {
	var ends [5]int
	ends[0] = b64Run(s, i)
	n := 1
	for n < 5 && ends[n-1] < len(s) && s[ends[n-1]] == '.' {
		ends[n] = b64Run(s, ends[n-1]+1)
		n++
	}
	var end int
	switch {
	case n < 3:
		return 0, false
	case n == 5:
		end = ends[4]
	default:
		end = ends[2]
	}
	return end, jwtHeader(s[i:ends[0]])
}

// b64Run returns the end of the run of base64url characters starting at i.
func b64Run(s string, i int) int {
	for i < len(s) && isB64URL(s[i]) {
		i++
	}
	return i
}

// jwtHeader reports whether h is unpadded base64url of a JSON object that
// mentions "alg".
func jwtHeader(h string) bool {
	var stack [512]byte
	buf := stack[:0]
	if need := len(h) * 3 / 4; need > len(stack) {
		buf = make([]byte, 0, need)
	}
	buf, ok := b64Decode(buf, h)
	return ok && len(buf) > 0 && buf[0] == '{' && json.Valid(buf) && bytes.Contains(buf, []byte(`"alg"`))
}

var b64Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// b64Decode appends the decoding of unpadded base64url src to dst.
func b64Decode(dst []byte, src string) ([]byte, bool) {
	if len(src)%4 == 1 {
		return dst, false
	}
	acc, bits := uint32(0), 0
	for i := 0; i < len(src); i++ {
		v := b64Value[src[i]]
		if v < 0 {
			return dst, false
		}
		acc, bits = acc<<6|uint32(v), bits+6
		if bits >= 8 {
			bits -= 8
			dst = append(dst, byte(acc>>bits))
		}
	}
	return dst, true
}

// awsPrefixes are the prefixes of AWS access key ids regate recognises.
var awsPrefixes = [...]string{"AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"}

// scanAWSIDs finds AWS access key ids.
func scanAWSIDs(s string, ms []match) []match {
	for i := 0; i+20 <= len(s); {
		k := strings.IndexByte(s[i:len(s)-19], 'A')
		if k < 0 {
			break
		}
		if i += k; awsIDAt(s, i) {
			ms = append(ms, match{i, i + 20, detAWS})
			i += 20
		} else {
			i++
		}
	}
	return ms
}

// scanAWSSecrets finds labelled AWS secret access keys.
func scanAWSSecrets(s string, ms []match) []match {
	for i := 15; i+41 <= len(s); i++ {
		if s[i] != '=' && s[i] != ':' {
			continue
		}
		if start, ok := awsSecretAt(s, i); ok {
			ms = append(ms, match{start, start + 40, detAWS})
			i = start + 39
		}
	}
	return ms
}

// awsIDAt matches a known prefix and 16 upper-case letters or digits, not
// touching another letter or digit.
func awsIDAt(s string, i int) bool {
	if i+20 > len(s) || i > 0 && isAlnum(s[i-1]) || i+20 < len(s) && isAlnum(s[i+20]) {
		return false
	}
	known := false
	for _, p := range awsPrefixes {
		known = known || hasAt(s, i, p)
	}
	for k := i + 4; known && k < i+20; k++ {
		known = isUpperAlnum(s[k])
	}
	return known
}

func isSecretChar(c byte) bool { return isAlnum(c) || c == '/' || c == '+' }

// awsSecretAt matches, around the '=' or ':' at i, a label whose letters and
// digits (case-insensitively, '_' and '-' ignored) end with "secretaccesskey",
// optionally quoted, spaces around the separator, and then exactly 40
// characters of [A-Za-z0-9/+], optionally quoted. It returns the secret's
// start.
func awsSecretAt(s string, i int) (int, bool) {
	k := i - 1
	for k >= 0 && (s[k] == ' ' || s[k] == '\t') {
		k--
	}
	if k >= 0 && (s[k] == '"' || s[k] == '\'') {
		k--
	}
	const label = "secretaccesskey"
	n := len(label)
	for ; k >= 0 && n > 0 && (isAlnum(s[k]) || s[k] == '_' || s[k] == '-'); k-- {
		if s[k] != '_' && s[k] != '-' {
			if n--; s[k]|0x20 != label[n] {
				return 0, false
			}
		}
	}
	if n > 0 {
		return 0, false
	}
	j := i + 1
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	if j < len(s) && (s[j] == '"' || s[j] == '\'') {
		j++
	}
	e := j
	for e < len(s) && isSecretChar(s[e]) {
		e++
	}
	if e-j != 40 || e < len(s) && s[e] == '=' {
		return 0, false
	}
	return j, true
}

// scanPEM finds PEM private key blocks: "-----BEGIN <label>-----" where the
// label contains "PRIVATE KEY", through the next "-----END <label>-----"
// with the same label. With no such END line the block runs over the
// characters a PEM body can hold (base64, white space, '\' for escaped
// newlines, and ":,-" of headers) and stops at the first other one, such as
// a closing quote.
func scanPEM(s string, ms []match) []match {
	var ends map[string][]int // END line offsets by label, built on the first BEGIN
	for i := 0; ; {
		i = index(s, i, "-----BEGIN ")
		if i < 0 {
			return ms
		}
		ls := i + len("-----BEGIN ")
		le, ok := pemLabel(s, ls)
		if !ok || !strings.Contains(s[ls:le], "PRIVATE KEY") {
			i++
			continue
		}
		if ends == nil {
			ends = pemEnds(s)
		}
		body := le + 5
		end := body
		for end < len(s) && isPEMBody(s[end]) {
			end++
		}
		offs := ends[s[ls:le]]
		if k, _ := slices.BinarySearch(offs, body); k < len(offs) {
			end = offs[k] + len("-----END ") + le - ls + 5
		}
		ms = append(ms, match{i, end, detPEM})
		i = end
	}
}

// pemLabel returns the end of the label starting at ls: at most 64 of
// [A-Z0-9 ], followed by "-----".
func pemLabel(s string, ls int) (int, bool) {
	le := ls
	for le < len(s) && le-ls <= 64 && (isUpperAlnum(s[le]) || s[le] == ' ') {
		le++
	}
	return le, le-ls <= 64 && hasAt(s, le, "-----")
}

// pemEnds indexes every "-----END <label>-----" line of s by label, in order.
func pemEnds(s string) map[string][]int {
	ends := map[string][]int{}
	for e := index(s, 0, "-----END "); e >= 0; e = index(s, e+1, "-----END ") {
		ls := e + len("-----END ")
		if le, ok := pemLabel(s, ls); ok {
			ends[s[ls:le]] = append(ends[s[ls:le]], e)
		}
	}
	return ends
}

func isPEMBody(c byte) bool {
	return isAlnum(c) || c == '+' || c == '/' || c == '=' || c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
		c == '\\' || c == ':' || c == ',' || c == '-'
}
