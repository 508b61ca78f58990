package mask

import (
	"bytes"
	"strings"
	"testing"

	"github.com/regate/regate/policies/decision"
)

func FuzzText(f *testing.F) {
	for _, s := range []string{
		"a@b.co", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "123-45-6789", "+1 (415) 555-2671",
		"Bearer " + jwtHS256, "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key=" + awsSecret, pemRSA,
		"-----BEGIN PRIVATE KEY-----\nabc", "Margaret Hamilton", "", "eyJ.", "@.", "+(((", "1234567890(415)", "4111111111111111 (415) ",
	} {
		f.Add(s)
	}
	m := allDetectors(f)
	var obs []decision.Mask
	for _, d := range Detectors() {
		if d != "aws_key" {
			obs = append(obs, decision.Mask{Detector: d})
		}
	}
	noAWS, err := New(obs)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, n := m.Text(s)
		if (n == 0) != (out == s) {
			t.Fatalf("Text(%q) = %q with %d replacements", s, out, n)
		}
		if b, bn := m.Bytes([]byte(s)); bn != n || !bytes.Equal(b, []byte(out)) {
			t.Fatalf("Bytes(%q) = %q, %d; Text gave %q, %d", s, b, bn, out, n)
		}
		// Without digits, '@', '-' and '.', no detector but aws_key can match
		// (an access key id may lack digits; a secret needs a label).
		if !strings.ContainsAny(s, "0123456789@-.") {
			if out, n := noAWS.Text(s); n != 0 || out != s {
				t.Fatalf("masked a value with no candidate: %q -> %q", s, out)
			}
			if !strings.ContainsAny(s, "Aa") && (n != 0 || out != s) {
				t.Fatalf("masked a value with no candidate: %q -> %q", s, out)
			}
		}
		_ = Replace(s, "")
		checkScanners(t, s)
	})
}

// checkScanners runs every scanner on s regardless of the pre-scan and checks
// that matches are in bounds and ordered, and that the pre-scan would not
// have skipped a detector that matches.
func checkScanners(t *testing.T, s string) {
	f, nd := prescan(s)
	for d := 0; d < numDet; d++ {
		end := 0
		for _, mt := range scan(d, s, ^uint16(0), nil) {
			if mt.start < end || mt.end <= mt.start || mt.end > len(s) || int(mt.det) != d {
				t.Fatalf("%s: bad match %+v in %q", detNames[d], mt, s)
			}
			end = mt.end
		}
		if end > 0 && !possible(d, f, nd, len(s)) {
			t.Fatalf("%s matches %q but the pre-scan rules it out", detNames[d], s)
		}
	}
}

// Every piece of every test input, fed to every scanner: truncated values
// must not make a scanner read out of bounds.
func TestTruncatedInputs(t *testing.T) {
	for _, cases := range detectorCases {
		for _, c := range cases {
			for i := 0; i <= len(c.in); i++ {
				for j := i; j <= len(c.in); j++ {
					checkScanners(t, c.in[i:j])
					checkScanners(t, "1234567890123 "+c.in[i:j])
				}
			}
		}
	}
}
