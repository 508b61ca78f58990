package mask

import (
	"strings"
	"testing"

	"github.com/regate/regate/policies/decision"
)

func TestNew(t *testing.T) {
	m, err := New([]decision.Mask{{Column: "email"}, {Field: "/a"}, {Column: "x", Detector: "nope"}})
	if err != nil || !m.Empty() {
		t.Fatalf("column/field entries: %v, empty=%v", err, m.Empty())
	}
	_, err = New([]decision.Mask{{Detector: "email"}, {Detector: "passport"}})
	if err == nil || !strings.Contains(err.Error(), `"passport"`) {
		t.Fatalf("unknown detector: %v", err)
	}
	var nilMasker *Masker
	if !nilMasker.Empty() {
		t.Fatal("nil masker not empty")
	}
	if s, n := nilMasker.Text("a@b.io"); s != "a@b.io" || n != 0 {
		t.Fatalf("nil masker masked: %q %d", s, n)
	}
	for _, d := range Detectors() {
		if !Known(d) {
			t.Errorf("Known(%q) = false", d)
		}
	}
	for _, d := range []string{"", "Email", "creditcard", "private-key"} {
		if Known(d) {
			t.Errorf("Known(%q) = true", d)
		}
	}
	names := Detectors()
	names[0] = "changed"
	if Detectors()[0] != "email" {
		t.Fatal("Detectors returned shared storage")
	}
}

func TestWith(t *testing.T) {
	m, err := New([]decision.Mask{
		{Detector: "email", With: "[email]"}, {Detector: "credit_card"}, {Column: "x"},
		{Detector: "email", With: "[ignored: the first entry decides]"}, {Detector: "jwt", With: "<t>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in, want string
		n        int
	}{
		{"a@b.io paid with 4111111111111111, b@c.io too", "[email] paid with ************1111, [email] too", 3},
		{"Authorization: Bearer " + jwtHS256, "Authorization: Bearer <t>", 1},
		{"nothing here", "nothing here", 0},
	}
	for _, c := range cases {
		if got, n := m.Text(c.in); got != c.want || n != c.n {
			t.Errorf("Text(%q) = %q, %d; want %q, %d", c.in, got, n, c.want, c.n)
		}
	}
}

func TestOverlaps(t *testing.T) {
	m := allDetectors(t)
	cases := []struct {
		in, want string
		n        int
	}{
		// The email starts where the card does and is longer.
		{"4111111111111111@example.com", "4***@example.com", 1},
		// The international number contains a North-American one.
		{"+1 415-555-2671", "+* ***-***-**71", 1},
		// The key block contains an access key id.
		{"-----BEGIN PRIVATE KEY-----\nAKIAIOSFODNN7EXAMPLE\n-----END PRIVATE KEY-----", "<redacted private key>", 1},
		// Disjoint matches of different detectors are all replaced.
		{"ssn 123-45-6789, card 4111 1111 1111 1111, mail ann@example.com, tel +44 20 7946 0958",
			"ssn ***-**-6789, card **** **** **** 1111, mail a***@example.com, tel +** ** **** **58", 4},
	}
	for _, c := range cases {
		if got, n := m.Text(c.in); got != c.want || n != c.n {
			t.Errorf("Text(%q) = %q, %d; want %q, %d", c.in, got, n, c.want, c.n)
		}
	}
}

func TestResolve(t *testing.T) {
	got := resolve([]match{{5, 20, detPhone}, {0, 10, detCard}, {0, 4, detSSN}, {20, 25, detEmail}, {20, 25, detCard}, {24, 30, detIBAN}})
	want := []match{{0, 10, detCard}, {20, 25, detEmail}}
	if len(got) != len(want) {
		t.Fatalf("resolve = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("resolve = %v, want %v", got, want)
		}
	}
}

func TestBytes(t *testing.T) {
	m := allDetectors(t)
	in := []byte("plain text with no secrets at all")
	out, n := m.Bytes(in)
	if n != 0 || &out[0] != &in[0] || len(out) != len(in) {
		t.Fatal("Bytes did not return an unmatched value itself")
	}
	in = []byte("card 4111111111111111")
	orig := string(in)
	out, n = m.Bytes(in)
	if n != 1 || string(out) != "card ************1111" || string(in) != orig {
		t.Fatalf("Bytes = %q, %d; input now %q", out, n, in)
	}
	if out, n := m.Bytes(nil); out != nil || n != 0 {
		t.Fatal("Bytes(nil)")
	}
}

func TestNoMatchDoesNotAllocate(t *testing.T) {
	m := allDetectors(t)
	for _, s := range []string{
		"Margaret Hamilton, Apollo flight software",
		"Jean-Luc Picard, U.S.S. Enterprise NCC-1701-D",
		"order 2026-11-25 #12345 shipped to AKIA street: 42",
		strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40),
	} {
		b := []byte(s)
		allocs := testing.AllocsPerRun(100, func() {
			if _, n := m.Text(s); n != 0 {
				t.Fatalf("matched %q", s)
			}
			m.Bytes(b)
		})
		if allocs != 0 {
			t.Errorf("%d allocations for %q", int(allocs), s)
		}
	}
}

func TestReplace(t *testing.T) {
	cases := []struct{ in, with, want string }{
		{"ann@example.com", "", "a***@example.com"},
		{"  ann@example.com\n", "", "a***@example.com"},
		{"4111 1111 1111 1111", "", "**** **** **** 1111"},
		{"4111111111111111", "", "************1111"},
		{"123-45-6789", "", "***-**-6789"},
		{"+44 20 7946 0958", "", "+** ** **** **58"},
		{"GB82WEST12345698765432", "", "GB82**************5432"},
		{jwtHS256, "", "<redacted jwt>"},
		{"AKIAIOSFODNN7EXAMPLE", "", "<redacted aws key>"},
		{pemRSA + "\n", "", "<redacted private key>"},
		{"hunter2", "", "********"},
		{"", "", "********"},
		{"4111111111111112", "", "********"},
		{"write to ann@example.com", "", "********"}, // not the whole value
		{"ann@example.com", "[hidden]", "[hidden]"},
		{"x", "[hidden]", "[hidden]"},
	}
	for _, c := range cases {
		if got := Replace(c.in, c.with); got != c.want {
			t.Errorf("Replace(%q, %q) = %q, want %q", c.in, c.with, got, c.want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	m := allDetectors(t)
	const in = "mail ann@example.com, card 4111 1111 1111 1111"
	const want = "mail a***@example.com, card **** **** **** 1111"
	done := make(chan string)
	for i := 0; i < 8; i++ {
		go func() {
			got := ""
			for k := 0; k < 200; k++ {
				got, _ = m.Text(in)
			}
			done <- got
		}()
	}
	for i := 0; i < 8; i++ {
		if got := <-done; got != want {
			t.Errorf("got %q", got)
		}
	}
}
