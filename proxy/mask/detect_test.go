package mask

import (
	"strings"
	"testing"

	"github.com/regate/regate/policies/decision"
)

const (
	jwtHS256  = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	pemRSA    = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nab+/cd==\n-----END RSA PRIVATE KEY-----"
)

type detCase struct{ in, want string }

var detectorCases = map[string][]detCase{
	"email": {
		{"contact ann.lee@example.com today", "contact a***@example.com today"},
		{"<ann@mail.example.co.uk>", "<a***@mail.example.co.uk>"},
		{"mailto:john.doe+tag@sub.example.org.", "mailto:j***@sub.example.org."},
		{"a@b.io, c@d.io", "a***@b.io, c***@d.io"},
		{"x@example.com.123", "x***@example.com.123"},
		{"..bob@example.com", "..b***@example.com"},
		{strings.Repeat("a", 64) + "@example.com", "a***@example.com"},
		{strings.Repeat("a", 65) + "@example.com", ""},
		{"no at sign here", ""},
		{"user@localhost", ""},
		{"a@b.c", ""},
		{"@example.com", ""},
		{"user.@example.com", ""},
		{"a@-b.com", ""},
	},
	"credit_card": {
		{"4111 1111 1111 1111", "**** **** **** 1111"},
		{"4111-1111-1111-1111", "****-****-****-1111"},
		{"4111111111111111", "************1111"},
		{"paid with 4111111111111111, thanks", "paid with ************1111, thanks"},
		{"card 4111 1111 1111 1111 ok", "card **** **** **** 1111 ok"},
		{"3782 822463 10005", "**** ****** *0005"},
		{"378282246310005", "***********0005"},
		{"4222222222222", "*********2222"},
		{"4622630000000000005", "***************0005"},
		{"page 12 4111 1111 1111 1111", "page 12 **** **** **** 1111"},
		{"5555555555554444;4111111111111111", "************4444;************1111"},
		{"4111111111111112", ""},                // fails Luhn
		{"order 2026-11-25 #12345", ""},         // a date and a short number
		{"41111111111111111111", ""},            // 20 digits
		{"x4111111111111111", ""},               // glued to a word
		{"3.4111111111111111", ""},              // a decimal fraction
		{"+4111111111111111", ""},               // a phone-like number
		{"12-4111-1111-1111-1111", ""},          // part of a longer dashed number
		{"4111 1111-1111 1111", ""},             // mixed separators
		{"4111  1111  1111  1111", ""},          // double spaces
		{"1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", ""}, // single-digit groups
	},
	"ssn": {
		{"ssn 123-45-6789", "ssn ***-**-6789"},
		{"078-05-1120.", "***-**-1120."},
		{"000-12-3456", ""},
		{"666-12-3456", ""},
		{"900-12-3456", ""},
		{"123-00-4567", ""},
		{"123-45-0000", ""},
		{"123456789", ""},
		{"1123-45-6789", ""},
		{"123-45-67890", ""},
		{"1-123-45-6789", ""},
	},
	"phone": {
		{"call +1 415 555 2671 now", "call +* *** *** **71 now"},
		{"+44 20 7946 0958", "+** ** **** **58"},
		{"+1 (415) 555-2671", "+* (***) ***-**71"},
		{"+4915112345678", "+***********78"},
		{"+12345678", "+******78"},
		{"(415) 555-2671", "(***) ***-**71"},
		{"(415)555-2671", "(***)***-**71"},
		{"415-555-2671", "***-***-**71"},
		{"415.555.2671", "***.***.**71"},
		{"1-800-555-2671", "*-***-***-**71"},
		{"call 415-555-2671.", "call ***-***-**71."},
		{"+1 415 555 2671 12345678", "+* *** *** **71 12345678"},
		{"2026-11-25", ""},
		{"order 2026-11-25 #12345", ""},
		{"+1234567", ""},
		{"123-456-7890", ""},
		{"415-155-2671", ""},
		{"415-555-2671-9", ""},
		{"415-555.2671", ""},
		{"x+12345678", ""},
		{"+12345678abc", ""},
		{"+1234567890123456", ""},
		{"v1.2.3.4", ""},
	},
	"iban": {
		{"GB82 WEST 1234 5698 7654 32", "GB82 **** **** **** **54 32"},
		{"GB82WEST12345698765432", "GB82**************5432"},
		{"IBAN: DE89 3704 0044 0532 0130 00, thanks", "IBAN: DE89 **** **** **** **30 00, thanks"},
		{"GB82 WEST 1234 5698 7654 32 EUR", "GB82 **** **** **** **54 32 EUR"},
		{"NO9386011117947", "NO93*******7947"},
		{"MT84MALT011000012345MTLCAST001S", "MT84***********************001S"},
		{"GB83 WEST 1234 5698 7654 32", ""}, // bad checksum
		{"GB83WEST12345698765432", ""},
		{"gb82west12345698765432", ""},
		{"XGB82WEST12345698765432", ""},
		{"GB82WEST12345698765432x", ""},
		{"GB82 WEST", ""},
	},
	"jwt": {
		{"Bearer " + jwtHS256, "Bearer <redacted jwt>"},
		{"token=" + jwtHS256 + "&x=1", "token=<redacted jwt>&x=1"},
		{"see " + jwtHS256 + ".", "see <redacted jwt>."},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "<redacted jwt>"},
		{"eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d", "<redacted jwt>"},
		{"eyJmb28iOiJiYXIifQ.eyJ4IjoxfQ.sig", ""}, // no "alg"
		{"eyJhbGciICJ4In0.e30.sig", ""},           // not JSON
		{"eyJhbGciOiJIUzI1NiJ9", ""},              // one segment
		{"eyJhbGciOiJIUzI1NiJ9.e30", ""},          // two segments
		{"x" + jwtHS256, ""},
	},
	"aws_key": {
		{"key AKIAIOSFODNN7EXAMPLE end", "key <redacted aws key> end"},
		{"ASIAY34FZKBOKMUTVV7A", "<redacted aws key>"},
		{"id=AKIAABCDEFGHIJKLMNOP,", "id=<redacted aws key>,"},
		{"aws_secret_access_key = " + awsSecret, "aws_secret_access_key = <redacted aws key>"},
		{"AWS_SECRET_ACCESS_KEY=" + awsSecret + "\n", "AWS_SECRET_ACCESS_KEY=<redacted aws key>\n"},
		{`{"SecretAccessKey": "` + awsSecret + `"}`, `{"SecretAccessKey": "<redacted aws key>"}`},
		{"secretAccessKey: '" + awsSecret + "'", "secretAccessKey: '<redacted aws key>'"},
		{awsSecret, ""},
		{"password=" + awsSecret, ""},
		{"aws_secret_access_key=" + awsSecret + "X", ""},
		{"aws_secret_access_key=short", ""},
		{"AKIAIOSFODNN7EXAMPL", ""},
		{"AKIAIOSFODNN7EXAMPLE1", ""},
		{"XKIAIOSFODNN7EXAMPLE", ""},
		{"AKIAiosfodnn7example", ""},
	},
	"private_key": {
		{"x\n" + pemRSA + "\ny", "x\n<redacted private key>\ny"},
		{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n", "<redacted private key>\n"},
		{"-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----", "<redacted private key>"},
		{"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----", "<redacted private key>"},
		{`{"k":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}`, `{"k":"<redacted private key>\n"}`},
		{`{"k":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN"}`, `{"k":"<redacted private key>"}`}, // no END: up to the quote
		{pemRSA + " and " + pemRSA, "<redacted private key> and <redacted private key>"},
		{"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----", "<redacted private key>"},
		{"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END EC PRIVATE KEY-----\n\"x", "<redacted private key>\"x"}, // no matching END
		{"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", ""},
		{"-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----", ""},
	},
}

func TestDetectors(t *testing.T) {
	for det, cases := range detectorCases {
		m, err := New([]decision.Mask{{Detector: det}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			want := c.want
			if want == "" {
				want = c.in
			}
			got, n := m.Text(c.in)
			if got != want {
				t.Errorf("%s: Text(%q) = %q, want %q", det, c.in, got, want)
			}
			if (n > 0) != (want != c.in) {
				t.Errorf("%s: Text(%q) counted %d", det, c.in, n)
			}
			b, bn := m.Bytes([]byte(c.in))
			if string(b) != want || bn != n {
				t.Errorf("%s: Bytes(%q) = %q, %d; want %q, %d", det, c.in, b, bn, want, n)
			}
		}
	}
}

// With every detector enabled, values none of them should touch stay as
// they are.
func TestNoFalsePositivesAcrossDetectors(t *testing.T) {
	m := allDetectors(t)
	for _, in := range []string{
		"order 2026-11-25 #12345", "2026-11-25T10:00:00Z", "v1.2.3", "192.168.100.200",
		"Margaret Hamilton, Apollo flight software", "id 550e8400-e29b-41d4-a716-446655440000",
		"total: 1234567.89 EUR", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"user@localhost", "SELECT * FROM t WHERE a = 1",
	} {
		if got, n := m.Text(in); got != in || n != 0 {
			t.Errorf("Text(%q) = %q, %d; want unchanged", in, got, n)
		}
	}
}

func allDetectors(t testing.TB) *Masker {
	t.Helper()
	var obs []decision.Mask
	for _, d := range Detectors() {
		obs = append(obs, decision.Mask{Detector: d})
	}
	m, err := New(obs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDetectorCasesCoverAll(t *testing.T) {
	for _, d := range Detectors() {
		pos, neg := 0, 0
		for _, c := range detectorCases[d] {
			if c.want == "" {
				neg++
			} else {
				pos++
			}
		}
		if pos == 0 || neg == 0 {
			t.Errorf("detector %s needs positive and negative cases (%d, %d)", d, pos, neg)
		}
	}
	if strings.Join(Detectors(), ",") != "email,credit_card,ssn,phone,iban,jwt,aws_key,private_key" {
		t.Errorf("Detectors() = %v", Detectors())
	}
}
