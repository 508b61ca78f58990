package mask

import (
	"strings"
	"testing"

	"github.com/regate/regate/policies/decision"
)

func TestDetectors(t *testing.T) {
	cases := []struct {
		det, in, want string
	}{
		{"email", "contact ann.lee@example.com today", "contact a***@example.com today"},
		{"email", "no at sign here", "no at sign here"},
		{"credit_card", "card 4111 1111 1111 1111 ok", "card **** **** **** 1111 ok"},
		{"credit_card", "4111-1111-1111-1111", "****-****-****-1111"},
		{"credit_card", "4111111111111111", "************1111"},
		{"credit_card", "4111111111111112", "4111111111111112"}, // fails Luhn
		{"credit_card", "order 2026-11-25 #12345", "order 2026-11-25 #12345"},
		{"ssn", "ssn 123-45-6789", "ssn ***-**-6789"},
		{"ssn", "000-12-3456", "000-12-3456"},
		{"phone", "call +1 415 555 0100 now", "call +* *** *** **00 now"},
		{"phone", "(415) 555-0100", "(***) ***-**00"},
		{"iban", "GB82 WEST 1234 5698 7654 32", "GB82 **** **** **** **54 32"},
		{"iban", "GB82WEST12345698765432", "GB82**************5432"},
		{"iban", "GB83 WEST 1234 5698 7654 32", "GB83 WEST 1234 5698 7654 32"}, // bad checksum
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig-_x", "Bearer <redacted jwt>"},
		{"aws_key", "key AKIAIOSFODNN7EXAMPLE end", "key <redacted aws key> end"},
		{"aws_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = <redacted aws key>"},
		{"private_key", "x\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\ny", "x\n<redacted private key>\ny"},
	}
	for _, c := range cases {
		t.Run(c.det+"/"+c.in, func(t *testing.T) {
			m, err := New([]decision.Mask{{Detector: c.det}})
			if err != nil {
				t.Fatal(err)
			}
			got, n := m.Text(c.in)
			if got != c.want {
				t.Fatalf("Text(%q) = %q, want %q", c.in, got, c.want)
			}
			if (n > 0) != (c.in != c.want) {
				t.Fatalf("count %d", n)
			}
		})
	}
}

func TestWithAndOverlaps(t *testing.T) {
	m, err := New([]decision.Mask{{Detector: "email", With: "[email]"}, {Detector: "credit_card"}, {Column: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	got, n := m.Text("a@b.io paid with 4111111111111111, b@c.io too")
	if got != "[email] paid with ************1111, [email] too" || n != 3 {
		t.Fatalf("got %q %d", got, n)
	}
	if _, err := New([]decision.Mask{{Detector: "passport"}}); err == nil || !strings.Contains(err.Error(), "passport") {
		t.Fatalf("unknown detector: %v", err)
	}
	if b := []byte("plain"); &m.mustBytes(b)[0] != &b[0] {
		t.Fatal("Bytes copied an unmatched value")
	}
}

func (m *Masker) mustBytes(b []byte) []byte { out, _ := m.Bytes(b); return out }

func TestReplace(t *testing.T) {
	for in, want := range map[string]string{
		"ann@example.com":     "a***@example.com",
		"4111 1111 1111 1111": "**** **** **** 1111",
		"hunter2":             "********",
		"":                    "********",
	} {
		if got := Replace(in, ""); got != want {
			t.Errorf("Replace(%q) = %q, want %q", in, got, want)
		}
	}
	if Replace("x", "[hidden]") != "[hidden]" {
		t.Error("with ignored")
	}
}

func FuzzText(f *testing.F) {
	for _, s := range []string{"a@b.co", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "eyJa.b.c", "-----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY-----"} {
		f.Add(s)
	}
	m, _ := New([]decision.Mask{{Detector: "email"}, {Detector: "credit_card"}, {Detector: "ssn"}, {Detector: "phone"},
		{Detector: "iban"}, {Detector: "jwt"}, {Detector: "aws_key"}, {Detector: "private_key"}})
	f.Fuzz(func(t *testing.T, s string) {
		out, n := m.Text(s)
		if n == 0 && out != s {
			t.Fatalf("changed without a match: %q -> %q", s, out)
		}
		if !strings.ContainsAny(s, "0123456789@-eE") && out != s {
			t.Fatalf("masked a value with no candidate: %q", s)
		}
	})
}

func BenchmarkTextNoMatch(b *testing.B) {
	m, _ := New([]decision.Mask{{Detector: "email"}, {Detector: "credit_card"}, {Detector: "ssn"}, {Detector: "phone"},
		{Detector: "iban"}, {Detector: "jwt"}, {Detector: "aws_key"}, {Detector: "private_key"}})
	for i := 0; i < b.N; i++ {
		m.Text("Margaret Hamilton, Apollo flight software")
	}
}
