package mask

import (
	"regexp"
	"strings"
)

// match is one detected value in a text: [start, end) and its replacement.
type match struct {
	start, end int
	repl       string
}

// detector finds the values of one kind in a text.
type detector struct {
	name string
	// hint is a quick test: texts without it cannot contain a match.
	hint func(s string) bool
	find func(s string) []match
}

var detectors = map[string]detector{
	"email":       {name: "email", hint: func(s string) bool { return strings.IndexByte(s, '@') >= 0 }, find: findEmails},
	"credit_card": {name: "credit_card", hint: hasDigits(13), find: findCards},
	"ssn":         {name: "ssn", hint: hasDigits(9), find: findSSNs},
	"phone":       {name: "phone", hint: hasDigits(8), find: findPhones},
	"iban":        {name: "iban", hint: hasDigits(2), find: findIBANs},
	"jwt":         {name: "jwt", hint: func(s string) bool { return strings.Contains(s, "eyJ") }, find: findJWTs},
	"aws_key":     {name: "aws_key", hint: mayHaveAWS, find: findAWS},
	"private_key": {name: "private_key", hint: func(s string) bool { return strings.Contains(s, "PRIVATE KEY-----") }, find: findPEMs},
}

func hasDigits(n int) func(string) bool {
	return func(s string) bool {
		c := 0
		for i := 0; i < len(s); i++ {
			if s[i] >= '0' && s[i] <= '9' {
				if c++; c >= n {
					return true
				}
			}
		}
		return false
	}
}

var (
	emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}`)
	cardRE  = regexp.MustCompile(`\d(?:[ \-]?\d){12,18}`)
	ssnRE   = regexp.MustCompile(`\b(\d{3})-(\d{2})-(\d{4})\b`)
	phoneRE = regexp.MustCompile(`\+\d(?:[ \-.]?\(?\d\)?){7,14}|\(\d{3}\) ?\d{3}-\d{4}|\b\d{3}-\d{3}-\d{4}\b`)
	ibanRE  = regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`)
	jwtRE   = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`)
	awsIDRE = regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b`)
	awsSKRE = regexp.MustCompile(`(?i)(?:aws_secret_access_key|secretaccesskey|aws_secret_key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})`)
	pemRE   = regexp.MustCompile(`-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----`)
)

func findEmails(s string) []match {
	var out []match
	for _, loc := range emailRE.FindAllStringIndex(s, -1) {
		out = append(out, match{loc[0], loc[1], emailShape(s[loc[0]:loc[1]])})
	}
	return out
}

func emailShape(v string) string {
	at := strings.LastIndexByte(v, '@')
	if at <= 0 {
		return "***"
	}
	return v[:1] + "***" + v[at:]
}

// findCards finds digit runs of 13–19 digits (single spaces or dashes between
// digits allowed) that pass the Luhn check and are not part of a longer run.
func findCards(s string) []match {
	var out []match
	for _, loc := range cardRE.FindAllStringIndex(s, -1) {
		if loc[0] > 0 && isDigit(s[loc[0]-1]) || loc[1] < len(s) && isDigit(s[loc[1]]) {
			continue
		}
		v := s[loc[0]:loc[1]]
		if luhn(v) {
			out = append(out, match{loc[0], loc[1], keepLastDigits(v, 4)})
		}
	}
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func luhn(v string) bool {
	sum, n, double := 0, 0, false
	for i := len(v) - 1; i >= 0; i-- {
		if !isDigit(v[i]) {
			continue
		}
		d := int(v[i] - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum, n, double = sum+d, n+1, !double
	}
	return n >= 13 && n <= 19 && sum%10 == 0
}

// keepLastDigits replaces every digit but the last n with '*'.
func keepLastDigits(v string, n int) string {
	b := []byte(v)
	for i := len(b) - 1; i >= 0; i-- {
		if isDigit(b[i]) {
			if n > 0 {
				n--
			} else {
				b[i] = '*'
			}
		}
	}
	return string(b)
}

func findSSNs(s string) []match {
	var out []match
	for _, m := range ssnRE.FindAllStringSubmatchIndex(s, -1) {
		area, group, serial := s[m[2]:m[3]], s[m[4]:m[5]], s[m[6]:m[7]]
		if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
			continue
		}
		out = append(out, match{m[0], m[1], "***-**-" + serial})
	}
	return out
}

func findPhones(s string) []match {
	var out []match
	for _, loc := range phoneRE.FindAllStringIndex(s, -1) {
		v := s[loc[0]:loc[1]]
		digits := 0
		for i := 0; i < len(v); i++ {
			if isDigit(v[i]) {
				digits++
			}
		}
		if v[0] == '+' && (digits < 8 || digits > 15) {
			continue
		}
		out = append(out, match{loc[0], loc[1], keepLastDigits(v, 2)})
	}
	return out
}

func findIBANs(s string) []match {
	var out []match
	for _, loc := range ibanRE.FindAllStringIndex(s, -1) {
		v := s[loc[0]:loc[1]]
		compact := strings.ReplaceAll(v, " ", "")
		if len(compact) < 15 || len(compact) > 34 || !ibanValid(compact) {
			continue
		}
		out = append(out, match{loc[0], loc[1], ibanShape(v)})
	}
	return out
}

// ibanValid applies the ISO 13616 mod-97 check.
func ibanValid(v string) bool {
	r := v[4:] + v[:4]
	rem := 0
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case isDigit(c):
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			rem = (rem*100 + int(c-'A'+10)) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// ibanShape keeps the first and last four characters.
func ibanShape(v string) string {
	b := []byte(v)
	seen, total := 0, len(strings.ReplaceAll(v, " ", ""))
	for i, c := range b {
		if c == ' ' {
			continue
		}
		if seen >= 4 && seen < total-4 {
			b[i] = '*'
		}
		seen++
	}
	return string(b)
}

func findJWTs(s string) []match {
	var out []match
	for _, loc := range jwtRE.FindAllStringIndex(s, -1) {
		out = append(out, match{loc[0], loc[1], "<redacted jwt>"})
	}
	return out
}

func mayHaveAWS(s string) bool {
	if len(s) < 20 {
		return false
	}
	for i := 0; i+4 <= len(s); i++ {
		if s[i] == 'A' && s[i+1] >= 'A' && s[i+1] <= 'Z' {
			switch s[i : i+4] {
			case "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA":
				return true
			}
		}
	}
	return strings.Contains(s, "ecret") || strings.Contains(s, "ECRET")
}

func findAWS(s string) []match {
	var out []match
	for _, loc := range awsIDRE.FindAllStringIndex(s, -1) {
		out = append(out, match{loc[0], loc[1], "<redacted aws key>"})
	}
	for _, m := range awsSKRE.FindAllStringSubmatchIndex(s, -1) {
		out = append(out, match{m[2], m[3], "<redacted aws key>"})
	}
	return out
}

func findPEMs(s string) []match {
	var out []match
	for _, loc := range pemRE.FindAllStringIndex(s, -1) {
		out = append(out, match{loc[0], loc[1], "<redacted private key>"})
	}
	return out
}
