package mask

import "strings"

// scanEmail finds local@domain.tld addresses.
func scanEmail(s string, ms []match) []match {
	floor := 0 // a local part never reaches back into the previous match
	for i := 0; ; {
		k := strings.IndexByte(s[i:], '@')
		if k < 0 {
			return ms
		}
		i += k
		if start, end, ok := emailAt(s, i, floor); ok {
			ms = append(ms, match{start, end, detEmail})
			floor, i = end, end
		} else {
			i++
		}
	}
}

// isLocal reports whether c may appear in the local part of an address.
func isLocal(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

// emailAt matches the address around the '@' at at: the local part is the
// run of local characters before it (at most 64, leading dots dropped from
// the match, not ending in a dot); the domain is the longest run of two or more dot-separated
// labels (1–63 letters, digits or '-', not starting or ending with '-')
// whose last label is at least two letters.
func emailAt(s string, at, floor int) (int, int, bool) {
	k := at
	for k > floor && isLocal(s[k-1]) {
		if at-k == 64 {
			return 0, 0, false
		}
		k--
	}
	for k < at && s[k] == '.' {
		k++
	}
	if k == at || s[at-1] == '.' {
		return 0, 0, false
	}
	end, labels := -1, 0
	for j := at + 1; ; j++ {
		l := j
		for j < len(s) && (isAlnum(s[j]) || s[j] == '-') {
			j++
		}
		if j == l || j-l > 63 || s[l] == '-' || s[j-1] == '-' {
			break
		}
		if labels++; labels >= 2 && isTLD(s[l:j]) {
			end = j
		}
		if j >= len(s) || s[j] != '.' {
			break
		}
	}
	return k, end, end > 0
}

func isTLD(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isUpper(s[i]) && !isLower(s[i]) {
			return false
		}
	}
	return len(s) >= 2
}

// scanIBAN finds IBANs: two upper-case letters, two digits and 11–30 upper-case
// letters or digits, compact or in space-separated groups of four, passing
// the ISO 13616 mod-97 check.
func scanIBAN(s string, ms []match) []match {
	for i := 0; i+15 <= len(s); i++ {
		if !isUpper(s[i]) || i > 0 && isWord(s[i-1]) || !isUpper(s[i+1]) || !isDigit(s[i+2]) || !isDigit(s[i+3]) {
			continue
		}
		end, ok := 0, false
		if isUpperAlnum(s[i+4]) {
			end, ok = ibanCompact(s, i)
		} else {
			end, ok = ibanGrouped(s, i)
		}
		if ok {
			ms = append(ms, match{i, end, detIBAN})
			i = end - 1
		}
	}
	return ms
}

func isUpperAlnum(c byte) bool { return isUpper(c) || isDigit(c) }

func ibanCompact(s string, i int) (int, bool) {
	j := i + 4
	for j < len(s) && isUpperAlnum(s[j]) {
		j++
	}
	if j < len(s) && isWord(s[j]) || j-i < 15 || j-i > 34 || !mod97(s[i:j]) {
		return 0, false
	}
	return j, true
}

// ibanGrouped tries "CCdd XXXX XXXX … X": every ending after a group is a
// candidate (so trailing words such as "EUR" are not swallowed); the longest
// one passing mod-97 wins.
func ibanGrouped(s string, i int) (int, bool) {
	var ends, counts [8]int
	k, count := 0, 4
	for j := i + 4; k < len(ends) && j+1 < len(s) && s[j] == ' ' && isUpperAlnum(s[j+1]); {
		g := j + 1
		e := g
		for e < len(s) && e-g < 4 && isUpperAlnum(s[e]) {
			e++
		}
		if e < len(s) && isWord(s[e]) || count+e-g > 34 {
			break
		}
		count += e - g
		ends[k], counts[k] = e, count
		k++
		if e-g < 4 {
			break
		}
		j = e
	}
	for k--; k >= 0; k-- {
		if counts[k] >= 15 && mod97(s[i:ends[k]]) {
			return ends[k], true
		}
	}
	return 0, false
}

// mod97 computes the ISO 13616 check over the letters and digits of s (other
// bytes skipped): the first four moved to the end, letters as 10–35, the
// number modulo 97 must be 1.
func mod97(s string) bool {
	r, n := 0, 0
	for pass := 0; pass < 2; pass++ {
		n = 0
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !isUpperAlnum(c) {
				continue
			}
			if n++; (n > 4) != (pass == 0) {
				continue
			}
			if isDigit(c) {
				r = (r*10 + int(c-'0')) % 97
			} else {
				r = (r*100 + int(c-'A') + 10) % 97
			}
		}
	}
	return r == 1
}
