package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// BenchmarkGatewayLoad appends what a busy gateway does: per statement a
// ~2 KiB command event and a ~400-byte deferred outcome, from 8 sessions at
// once, and reports the store's CPU-relevant rate: statements per second.
func BenchmarkGatewayLoad(b *testing.B) {
	input := json.RawMessage(`{"query":"` + strings.Repeat("x", 1800) + `"}`)
	for _, q := range []string{""} {
		b.Run("sessions=8"+q, func(b *testing.B) {
			s, _ := openTemp(b, q)
			ctx := context.Background()
			var wg sync.WaitGroup
			per := b.N/8 + 1
			b.ResetTimer()
			for c := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sid := fmt.Sprintf("%032x", c*7919)
					var outs sync.WaitGroup
					for i := range per {
						id := newTestID()
						ev := &Event{ID: id, Type: TypeCommand, SessionID: sid, Protocol: "postgres", Target: "db", Subject: "bench"}
						ev.SetCanonicalInput(input)
						if err := s.Append(ctx, ev); err != nil {
							b.Error(err)
							return
						}
						out := &Event{ID: newTestID(), Type: TypeOutcome, SessionID: sid, Ref: id,
							Outcome: &Outcome{Status: StatusOK, Tags: []string{"SELECT 1"}, Rows: int64(i)}}
						outs.Add(1)
						s.AppendDeferred(ctx, out, func(error) { outs.Done() })
					}
					outs.Wait()
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(8*per)/b.Elapsed().Seconds(), "stmts/s")
		})
	}
}

var testIDs struct {
	sync.Mutex
	n int64
}

func newTestID() string {
	testIDs.Lock()
	defer testIDs.Unlock()
	testIDs.n++
	return fmt.Sprintf("%016x%016x", testIDs.n, testIDs.n*2654435761)
}
