package mask

import (
	"strings"
	"testing"
)

// A typical short value: a 40-character name with no candidate.
const benchName = "Margaret Hamilton, Apollo flight softwar"

func BenchmarkTextNoMatch(b *testing.B) {
	m := allDetectors(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, n := m.Text(benchName); n != 0 {
			b.Fatal("matched")
		}
	}
}

// A name with '-', '.', 'A' and digits: several scanners run and reject.
func BenchmarkTextNoMatchCandidates(b *testing.B) {
	m := allDetectors(b)
	s := "Jean-Luc Picard, U.S.S. Enterprise NCC-1701-D"
	b.ReportAllocs()
	for b.Loop() {
		if _, n := m.Text(s); n != 0 {
			b.Fatal("matched")
		}
	}
}

func BenchmarkBytesNoMatch(b *testing.B) {
	m := allDetectors(b)
	v := []byte(benchName)
	b.ReportAllocs()
	for b.Loop() {
		m.Bytes(v)
	}
}

func BenchmarkTextNoMatch4KB(b *testing.B) {
	m := allDetectors(b)
	s := strings.Repeat("The quick brown fox jumps over the lazy dog, 42 times. ", 75)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		m.Text(s)
	}
}

func BenchmarkTextMatch(b *testing.B) {
	m := allDetectors(b)
	s := "Ann <ann.lee@example.com> paid 4111 1111 1111 1111"
	b.ReportAllocs()
	for b.Loop() {
		if _, n := m.Text(s); n != 2 {
			b.Fatal(n)
		}
	}
}

func BenchmarkTextMatchSecrets(b *testing.B) {
	m := allDetectors(b)
	s := "Authorization: Bearer " + jwtHS256 + "\n" + pemRSA + "\nAKIAIOSFODNN7EXAMPLE"
	b.ReportAllocs()
	for b.Loop() {
		if _, n := m.Text(s); n != 3 {
			b.Fatal(n)
		}
	}
}

func BenchmarkReplace(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Replace("ann@example.com", "")
	}
}
