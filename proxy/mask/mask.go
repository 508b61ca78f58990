package mask

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/regate/regate/policies/decision"
)

// Detector identifiers, in the order Detectors lists them. The order is also
// the tie-break when two detectors match exactly the same span.
const (
	detEmail = iota
	detCard
	detSSN
	detPhone
	detIBAN
	detJWT
	detAWS
	detPEM
	numDet
)

var detNames = [numDet]string{
	detEmail: "email",
	detCard:  "credit_card",
	detSSN:   "ssn",
	detPhone: "phone",
	detIBAN:  "iban",
	detJWT:   "jwt",
	detAWS:   "aws_key",
	detPEM:   "private_key",
}

// fixedMask replaces a whole value no detector recognises.
const fixedMask = "********"

// Detectors returns the names of every detector, in a fixed order.
func Detectors() []string {
	return append([]string(nil), detNames[:]...)
}

// Known reports whether name is a detector.
func Known(name string) bool {
	return detectorID(name) >= 0
}

func detectorID(name string) int {
	for i, n := range detNames {
		if n == name {
			return i
		}
	}
	return -1
}

// Masker applies a set of detector obligations to text. It is immutable once
// built, so one Masker may be used from many goroutines.
type Masker struct {
	on   uint16 // bit d set: detector d is enabled
	with [numDet]string
}

// all has every detector enabled with default replacements; Replace uses it.
var all = func() *Masker {
	m := &Masker{}
	for d := 0; d < numDet; d++ {
		m.on |= 1 << d
	}
	return m
}()

// New compiles the detector obligations among obligations: entries whose
// Detector is set and whose Column and Field are empty (the others are
// ignored). An unknown detector name is an error naming it. When a detector
// is named more than once, the first entry decides its replacement.
func New(obligations []decision.Mask) (*Masker, error) {
	m := &Masker{}
	for _, o := range obligations {
		if o.Detector == "" || o.Column != "" || o.Field != "" {
			continue
		}
		d := detectorID(o.Detector)
		if d < 0 {
			return nil, fmt.Errorf("unknown mask detector %q (known: %v)", o.Detector, detNames)
		}
		if m.on&(1<<d) != 0 {
			continue
		}
		m.on |= 1 << d
		m.with[d] = o.With
	}
	return m, nil
}

// Empty reports whether the masker has no detectors (a nil Masker is empty).
func (m *Masker) Empty() bool {
	return m == nil || m.on == 0
}

// Text returns s with every detected value replaced, and how many
// replacements were made. Only the matching part of s is replaced. When
// nothing matches, s itself is returned and nothing is allocated.
func (m *Masker) Text(s string) (string, int) {
	if m.Empty() {
		return s, 0
	}
	var buf [8]match
	ms := collect(m, s, buf[:0])
	if len(ms) == 0 {
		return s, 0
	}
	out, n := rebuild(m, s, ms)
	// out is new and not kept anywhere else: use it as the string's bytes.
	return unsafe.String(unsafe.SliceData(out), len(out)), n
}

// Bytes is Text for a byte slice. When nothing matches it returns b itself
// (no allocation); otherwise a new slice. b is never modified, and must not
// be modified by another goroutine during the call.
func (m *Masker) Bytes(b []byte) ([]byte, int) {
	if m.Empty() || len(b) == 0 {
		return b, 0
	}
	// The scanners only read s during this call and rebuild copies what it
	// keeps, so b need not be copied to a string.
	s := unsafe.String(unsafe.SliceData(b), len(b))
	var buf [8]match
	ms := collect(m, s, buf[:0])
	if len(ms) == 0 {
		return b, 0
	}
	return rebuild(m, s, ms)
}

// Replace returns the replacement for a whole value under a column or field
// obligation: with when it is non-empty; otherwise, when the value with
// leading and trailing white space trimmed is exactly one match of a
// detector, that detector's default replacement of the trimmed value (e.g.
// "a***@example.com", "**** **** **** 1111", "<redacted jwt>"); otherwise
// "********" (also for the empty string).
func Replace(value string, with string) string {
	if with != "" {
		return with
	}
	v := strings.TrimSpace(value)
	var buf [8]match
	best := -1
	for _, mt := range collect(all, v, buf[:0]) {
		if mt.start == 0 && mt.end == len(v) && (best < 0 || int(mt.det) < best) {
			best = int(mt.det)
		}
	}
	if best < 0 {
		return fixedMask
	}
	out := appendDefault(make([]byte, 0, len(v)+24), v, best)
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// match is the span [start, end) detected by det.
type match struct {
	start, end int
	det        uint8
}

// collect runs the enabled detectors that the pre-scan does not rule out and
// appends their matches to ms.
func collect(m *Masker, s string, ms []match) []match {
	f, nd := prescan(s)
	for on := m.on; on != 0; on &= on - 1 {
		d := bits.TrailingZeros16(on)
		if !possible(d, f, nd, len(s)) {
			continue
		}
		ms = scan(d, s, f, ms)
	}
	return ms
}

// scan appends detector d's matches in s; f is s's pre-scan.
func scan(d int, s string, f uint16, ms []match) []match {
	switch d {
	case detEmail:
		return scanEmail(s, ms)
	case detCard:
		return scanCard(s, ms)
	case detSSN:
		return scanSSN(s, ms)
	case detPhone:
		return scanPhone(s, ms)
	case detIBAN:
		return scanIBAN(s, ms)
	case detJWT:
		return scanJWT(s, ms)
	case detAWS:
		if f&fA != 0 {
			ms = scanAWSIDs(s, ms)
		}
		if f&fSep != 0 && len(s) >= 56 {
			ms = scanAWSSecrets(s, ms)
		}
		return ms
	}
	return scanPEM(s, ms)
}

// rebuild resolves overlaps and writes s with the kept matches replaced.
func rebuild(m *Masker, s string, ms []match) ([]byte, int) {
	ms = resolve(ms)
	out := make([]byte, 0, len(s)+8*len(ms))
	prev := 0
	for _, mt := range ms {
		out = append(out, s[prev:mt.start]...)
		if w := m.with[mt.det]; w != "" {
			out = append(out, w...)
		} else {
			out = appendDefault(out, s[mt.start:mt.end], int(mt.det))
		}
		prev = mt.end
	}
	return append(out, s[prev:]...), len(ms)
}

// resolve orders matches by start (longest first, then detector order) and
// drops every match that overlaps one already kept, so each byte is replaced
// at most once.
func resolve(ms []match) []match {
	slices.SortFunc(ms, func(a, b match) int {
		switch {
		case a.start != b.start:
			return a.start - b.start
		case a.end != b.end:
			return b.end - a.end
		}
		return int(a.det) - int(b.det)
	})
	kept := ms[:0]
	end := 0
	for _, mt := range ms {
		if mt.start >= end {
			kept = append(kept, mt)
			end = mt.end
		}
	}
	return kept
}
