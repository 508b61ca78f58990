package recorder

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkIngest measures the copy of sealed events (a ~2 KiB command each,
// from 8 sessions) from the journal into the database, 256 per transaction:
// ns/op is per event.
func BenchmarkIngest(b *testing.B) {
	s, _ := openTemp(b, "")
	input := json.RawMessage(`{"query":"` + strings.Repeat("x", 1800) + `"}`)
	recs := make([]Record, 0, 256)
	seq, prev := int64(0), ""
	b.ResetTimer()
	for i := 0; i < b.N; i += 256 {
		b.StopTimer()
		recs = recs[:0]
		for range 256 {
			ev := &Event{ID: newTestID(), Type: TypeCommand, SessionID: fmt.Sprintf("%032x", seq%8),
				Protocol: "postgres", Target: "db", Subject: "bench"}
			ev.SetCanonicalInput(input)
			d, err := Encode(ev)
			if err != nil {
				b.Fatal(err)
			}
			seq++
			r, err := d.Seal(seq, prev)
			if err != nil {
				b.Fatal(err)
			}
			prev = r.Hash
			recs = append(recs, r)
		}
		b.StartTimer()
		if err := s.insertRecords(recs); err != nil {
			b.Fatal(err)
		}
	}
}
