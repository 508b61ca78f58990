package recorder

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/regate/regate/policies/decision"
)

// benchEvent is a typical command event: a ~300-byte input and a decision.
// benchEvent is a command event as the gateway records it: its input set
// with SetCanonicalInput.
func benchEvent(id string) *Event {
	ev := &Event{ID: id, Type: TypeCommand, SessionID: "bench", Protocol: "postgres",
		Target: "orders-db", Subject: "alice@example.com",
		Decision: &decision.Decision{ID: "d-" + id, Path: "regate/decision", Allow: true,
			Reasons: []string{"read-only query"}, Result: map[string]any{"allow": true},
			Bundles: map[string]decision.Bundle{"main": {Revision: "2025-03-01"}}}}
	ev.SetCanonicalInput([]byte(`{"sql":"SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at \u003e now() - interval '1 day'","statements":[{"kind":"select","tables":["orders","customers"],"columns":["id","total","email"]}],"database":"orders","user":"app"}`))
	return ev
}

// BenchmarkAppend appends from many goroutines (parallelism x GOMAXPROCS)
// and reports appends per second.
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []string{"full", "normal"} {
		for _, par := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%s/goroutines=%dxGOMAXPROCS", sync, par), func(b *testing.B) {
				s, _ := openTemp(b, "?synchronous="+sync)
				var n atomic.Int64
				b.SetParallelism(par)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Append(context.Background(), benchEvent(fmt.Sprint(n.Add(1)))); err != nil {
							b.Errorf("Append: %v", err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkEncode measures the per-event encoding done on the caller's
// goroutine, and BenchmarkSeal the part done by the writer.
func BenchmarkEncode(b *testing.B) {
	ev := benchEvent("x")
	for i := 0; i < b.N; i++ {
		if _, err := Encode(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	d, err := Encode(benchEvent("x"))
	if err != nil {
		b.Fatal(err)
	}
	r, err := d.Seal(1, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Seal(int64(i), r.Hash); err != nil {
			b.Fatal(err)
		}
	}
}
