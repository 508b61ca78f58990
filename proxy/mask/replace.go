package mask

// appendDefault appends detector d's default replacement of the match s.
func appendDefault(dst []byte, s string, d int) []byte {
	switch d {
	case detEmail:
		at := 0
		for at < len(s) && s[at] != '@' {
			at++
		}
		dst = append(dst, s[0])
		dst = append(dst, "***"...)
		return append(dst, s[at:]...)
	case detCard:
		return appendKeep(dst, s, 0, 4, isDigit)
	case detSSN:
		dst = append(dst, "***-**-"...)
		return append(dst, s[len(s)-4:]...)
	case detPhone:
		return appendKeep(dst, s, 0, 2, isDigit)
	case detIBAN:
		return appendKeep(dst, s, 4, 4, isUpperAlnum)
	case detJWT:
		return append(dst, "<redacted jwt>"...)
	case detAWS:
		return append(dst, "<redacted aws key>"...)
	}
	return append(dst, "<redacted private key>"...)
}

// appendKeep appends s with every byte for which counted is true replaced by
// '*', except the first first and the last last of them; other bytes
// (separators) are kept.
func appendKeep(dst []byte, s string, first, last int, counted func(byte) bool) []byte {
	total := 0
	for i := 0; i < len(s); i++ {
		if counted(s[i]) {
			total++
		}
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if counted(c) {
			if n >= first && n < total-last {
				c = '*'
			}
			n++
		}
		dst = append(dst, c)
	}
	return dst
}
