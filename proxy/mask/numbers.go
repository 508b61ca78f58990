package mask

// scanCard finds payment card numbers. Every digit group start is tried; a
// failed candidate skips its whole group so no match starts mid-number.
func scanCard(s string, ms []match) []match {
	for i := 0; i < len(s); {
		if !isDigit(s[i]) {
			i++
			continue
		}
		if end, ok := cardAt(s, i); ok {
			ms = append(ms, match{i, end, detCard})
			i = end
			continue
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	return ms
}

// cardAt returns the end of the longest card number starting at p, which is
// the start of a digit group: 13–19 digits in groups joined by one separator
// (all ' ' or all '-'; groups of 3–8 digits when there is more than one),
// passing Luhn, with number edges on both sides.
func cardAt(s string, p int) (int, bool) {
	if !leftEdge(s, p) || p > 0 && s[p-1] == '+' {
		return 0, false
	}
	best, digits, groups, minG, maxG := -1, 0, 0, 99, 0
	var sep byte
	for j := p; ; {
		g := j
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		digits += j - g
		groups++
		minG, maxG = min(minG, j-g), max(maxG, j-g)
		if digits > 19 {
			break
		}
		if digits >= 13 && (groups == 1 || minG >= 3 && maxG <= 8) && rightEdge(s, j) && luhn(s[p:j]) {
			best = j
		}
		if j+1 >= len(s) || s[j] != ' ' && s[j] != '-' || !isDigit(s[j+1]) || sep != 0 && s[j] != sep {
			break
		}
		sep = s[j]
		j++
	}
	return best, best >= 0
}

// luhn reports whether the digits of s (other bytes skipped) pass the Luhn check.
func luhn(s string) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		if !isDigit(s[i]) {
			continue
		}
		d := int(s[i] - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// scanSSN finds US social security numbers ddd-dd-dddd.
func scanSSN(s string, ms []match) []match {
	for i := 0; i+11 <= len(s); i++ {
		if isDigit(s[i]) && (i == 0 || !isDigit(s[i-1])) && ssnAt(s, i) {
			ms = append(ms, match{i, i + 11, detSSN})
			i += 10
		}
	}
	return ms
}

func ssnAt(s string, i int) bool {
	for k := 0; k < 11; k++ {
		if k == 3 || k == 6 {
			if s[i+k] != '-' {
				return false
			}
		} else if !isDigit(s[i+k]) {
			return false
		}
	}
	area := num(s, i, 3)
	return area != 0 && area != 666 && area < 900 && num(s, i+4, 2) != 0 && num(s, i+7, 4) != 0 &&
		leftEdge(s, i) && rightEdge(s, i+11)
}

// num returns the decimal value of the n digits at s[i:].
func num(s string, i, n int) int {
	v := 0
	for k := i; k < i+n; k++ {
		v = v*10 + int(s[k]-'0')
	}
	return v
}

// scanPhone finds international (+…) and North-American phone numbers.
func scanPhone(s string, ms []match) []match {
	for i := 0; i < len(s); i++ {
		c := s[i]
		start, end, ok := i, 0, false
		switch {
		case c == '+':
			end, ok = e164At(s, i)
		case c == '(':
			end, ok = nanpParenAt(s, i)
		case isDigit(c) && (i == 0 || !isDigit(s[i-1])):
			start, end, ok = nanpAt(s, i)
		}
		if ok {
			ms = append(ms, match{start, end, detPhone})
			i = end - 1
		}
	}
	return ms
}

func isPhoneSep(c byte) bool {
	return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')'
}

// e164At matches '+' then 8–15 digits, digit groups separated by at most two
// of " -.()". Trailing groups that would exceed 15 digits are left out.
func e164At(s string, i int) (int, bool) {
	if i > 0 && isWord(s[i-1]) || i+1 >= len(s) || !isDigit(s[i+1]) && s[i+1] != '(' {
		return 0, false
	}
	digits, end, run := 0, -1, 0
	for j := i + 1; j < len(s); {
		if isDigit(s[j]) {
			g := j
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			if digits+j-g > 15 {
				break
			}
			digits, end, run = digits+j-g, j, 0
			continue
		}
		if !isPhoneSep(s[j]) || run == 2 {
			break
		}
		run++
		j++
	}
	if digits < 8 || end < len(s) && isWord(s[end]) {
		return 0, false
	}
	return end, true
}

// nanpParenAt matches "(ddd) ddd-dddd" and "(ddd)ddd-dddd" at the '(' at i.
func nanpParenAt(s string, i int) (int, bool) {
	if i > 0 && isWord(s[i-1]) || !hasDigits(s, i+1, 3) || !hasAt(s, i+4, ")") {
		return 0, false
	}
	j := i + 5
	if hasAt(s, j, " ") {
		j++
	}
	if !hasDigits(s, j, 3) || !nanpValid(s, i+1, j) || !hasAt(s, j+3, "-") || !hasDigits(s, j+4, 4) ||
		!rightEdge(s, j+8) {
		return 0, false
	}
	return j + 8, true
}

// nanpAt matches "ddd-ddd-dddd" or "ddd.ddd.dddd", optionally preceded by
// "1-" or "1." (same separator), at the digit group starting at i.
func nanpAt(s string, i int) (int, int, bool) {
	if !leftEdge(s, i) {
		return 0, 0, false
	}
	p := i
	if hasAt(s, i, "1-") || hasAt(s, i, "1.") {
		p = i + 2
	}
	if !hasDigits(s, p, 3) || p+3 >= len(s) || s[p+3] != '-' && s[p+3] != '.' {
		return 0, 0, false
	}
	sep := s[p+3]
	if p != i && s[i+1] != sep || !hasDigits(s, p+4, 3) || p+7 >= len(s) || s[p+7] != sep ||
		!hasDigits(s, p+8, 4) || !nanpValid(s, p, p+4) || !rightEdge(s, p+12) {
		return 0, 0, false
	}
	return i, p + 12, true
}

// nanpValid checks the North-American numbering plan: neither the area code
// (at a) nor the exchange (at x) starts with 0 or 1.
func nanpValid(s string, a, x int) bool {
	return s[a] >= '2' && s[x] >= '2'
}

// hasDigits reports whether s[i:i+n] exists and is all digits.
func hasDigits(s string, i, n int) bool {
	if i < 0 || i+n > len(s) {
		return false
	}
	for k := i; k < i+n; k++ {
		if !isDigit(s[k]) {
			return false
		}
	}
	return true
}
