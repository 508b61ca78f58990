package mask

import "strings"

// Character classes seen by the pre-scan. fDigit must be 1: the pre-scan adds
// it to count digits.
const (
	fDigit = 1 << iota
	fAt
	fDash
	fDot
	fPlus
	fParen
	fUpper // A-Z
	fA     // 'A': AWS access key ids
	fJ     // 'J': "eyJ"
	fSep   // '=' or ':'
)

var class = func() (t [256]uint16) {
	for c := '0'; c <= '9'; c++ {
		t[c] = fDigit
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = fUpper
	}
	t['A'] |= fA
	t['J'] |= fJ
	t['@'] = fAt
	t['-'] = fDash
	t['.'] = fDot
	t['+'] = fPlus
	t['('] = fParen
	t['='] = fSep
	t[':'] = fSep
	return t
}()

// prescan returns the union of the classes of s's bytes and its digit count.
// It is one table lookup per byte (four independent chains) and allocates
// nothing.
func prescan(s string) (f uint16, digits int) {
	var f1, f2, f3 uint16
	var d1, d2, d3 int
	i := 0
	for ; i+4 <= len(s); i += 4 {
		c0, c1, c2, c3 := class[s[i]], class[s[i+1]], class[s[i+2]], class[s[i+3]]
		f, f1, f2, f3 = f|c0, f1|c1, f2|c2, f3|c3
		digits, d1, d2, d3 = digits+int(c0&fDigit), d1+int(c1&fDigit), d2+int(c2&fDigit), d3+int(c3&fDigit)
	}
	for ; i < len(s); i++ {
		c := class[s[i]]
		f |= c
		digits += int(c & fDigit)
	}
	return f | f1 | f2 | f3, digits + d1 + d2 + d3
}

// possible reports whether detector d can match a value of length n whose
// pre-scan gave f and digits; when it cannot, its scanner is skipped.
func possible(d int, f uint16, digits, n int) bool {
	switch d {
	case detEmail: // a@b.cc
		return f&fAt != 0 && f&fDot != 0 && n >= 6
	case detCard:
		return digits >= 13
	case detSSN:
		return digits >= 9 && f&fDash != 0
	case detPhone:
		return digits >= 8 && f&fPlus != 0 || digits >= 10 && f&(fDash|fDot|fParen) != 0
	case detIBAN:
		return digits >= 2 && f&fUpper != 0 && n >= 15
	case detJWT:
		return f&fDot != 0 && f&fJ != 0 && n >= 10
	case detAWS: // an id is 20 characters; a secret needs a label, a separator and 40 characters
		return f&fA != 0 && n >= 20 || f&fSep != 0 && n >= 56
	case detPEM: // -----BEGIN PRIVATE KEY-----
		return f&fDash != 0 && n >= 27
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlnum(c byte) bool { return isDigit(c) || isUpper(c) || isLower(c) }
func isWord(c byte) bool  { return isAlnum(c) || c == '_' }

// isB64URL reports whether c is in the base64url alphabet.
func isB64URL(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// leftEdge reports whether a number may start at p: the byte before it is not
// a letter, digit or '_', nor a '.' or '-' that follows a digit (which would
// make the number part of a longer one such as "1.5" or "12-34").
func leftEdge(s string, p int) bool {
	if p == 0 {
		return true
	}
	c := s[p-1]
	if isWord(c) {
		return false
	}
	return !((c == '.' || c == '-') && p >= 2 && isDigit(s[p-2]))
}

// rightEdge is leftEdge for the end of a number at p (exclusive).
func rightEdge(s string, p int) bool {
	if p >= len(s) {
		return true
	}
	c := s[p]
	if isWord(c) {
		return false
	}
	return !((c == '.' || c == '-') && p+1 < len(s) && isDigit(s[p+1]))
}

// hasAt reports whether s[i:] starts with p.
func hasAt(s string, i int, p string) bool {
	return i >= 0 && i <= len(s) && strings.HasPrefix(s[i:], p)
}

// index returns the first index >= from where p starts in s, or -1.
func index(s string, from int, p string) int {
	if from > len(s) {
		return -1
	}
	if k := strings.Index(s[from:], p); k >= 0 {
		return from + k
	}
	return -1
}
