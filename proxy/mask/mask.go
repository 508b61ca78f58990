package mask

import (
	"fmt"
	"sort"
	"strings"
	"unsafe"

	"github.com/regate/regate/policies/decision"
)

// Detectors lists the detector names.
func Detectors() []string {
	names := make([]string, 0, len(detectors))
	for n := range detectors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Known reports whether name is a detector.
func Known(name string) bool { _, ok := detectors[name]; return ok }

// Masker applies detector obligations to text. It is safe for concurrent use.
type Masker struct {
	dets []detector
	with []string
}

// New compiles the detector obligations among obligations (others are
// ignored). An unknown detector is an error, so callers can fail closed.
func New(obligations []decision.Mask) (*Masker, error) {
	m := &Masker{}
	for _, o := range obligations {
		if o.Detector == "" {
			continue
		}
		d, ok := detectors[o.Detector]
		if !ok {
			return nil, fmt.Errorf("unknown mask detector %q (known: %s)", o.Detector, strings.Join(Detectors(), ", "))
		}
		m.dets, m.with = append(m.dets, d), append(m.with, o.With)
	}
	return m, nil
}

// Empty reports whether the masker has no detectors.
func (m *Masker) Empty() bool { return m == nil || len(m.dets) == 0 }

// Text returns s with every detected value replaced, and the number of
// replacements.
func (m *Masker) Text(s string) (string, int) {
	if m.Empty() {
		return s, 0
	}
	var all []match
	for i, d := range m.dets {
		if !d.hint(s) {
			continue
		}
		for _, mt := range d.find(s) {
			if m.with[i] != "" {
				mt.repl = m.with[i]
			}
			all = append(all, mt)
		}
	}
	if len(all) == 0 {
		return s, 0
	}
	// Earliest first, longest first at the same start; overlaps are dropped.
	sort.Slice(all, func(i, j int) bool {
		if all[i].start != all[j].start {
			return all[i].start < all[j].start
		}
		return all[i].end > all[j].end
	})
	var b strings.Builder
	pos, n := 0, 0
	for _, mt := range all {
		if mt.start < pos {
			continue
		}
		b.WriteString(s[pos:mt.start])
		b.WriteString(mt.repl)
		pos, n = mt.end, n+1
	}
	b.WriteString(s[pos:])
	return b.String(), n
}

// Bytes is Text for byte slices; it returns b itself when nothing matched.
func (m *Masker) Bytes(b []byte) ([]byte, int) {
	if m.Empty() {
		return b, 0
	}
	if len(b) == 0 {
		return b, 0
	}
	// Text keeps no reference to its argument when it matches nothing and
	// copies what it keeps otherwise, so b need not be copied to a string.
	out, n := m.Text(unsafe.String(&b[0], len(b)))
	if n == 0 {
		return b, 0
	}
	return []byte(out), n
}

// Replace returns the replacement of a whole value under a column or field
// mask: with when it is set; otherwise the shape-keeping replacement when a
// detector recognises the whole value (an email, a card number, …), and
// "********" for anything else.
func Replace(value, with string) string {
	if with != "" {
		return with
	}
	v := strings.TrimSpace(value)
	for _, name := range []string{"private_key", "jwt", "email", "credit_card", "iban", "ssn", "phone", "aws_key"} {
		d := detectors[name]
		if !d.hint(v) {
			continue
		}
		for _, mt := range d.find(v) {
			if mt.start == 0 && mt.end == len(v) {
				return mt.repl
			}
		}
	}
	return "********"
}
