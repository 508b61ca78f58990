package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// BenchmarkGatewayLoad appends what a gateway does: per statement a ~2 KiB
// command event and a ~400-byte deferred outcome, from 1 or 8 sessions at
// once, and reports statements per second (including the copy of the events
// from the journal into the database).
func BenchmarkGatewayLoad(b *testing.B) {
	input := json.RawMessage(`{"query":"` + strings.Repeat("x", 1800) + `"}`)
	for _, sessions := range []int{1, 8} {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			s, _ := openTemp(b, "")
			ctx := context.Background()
			var wg sync.WaitGroup
			per := b.N/sessions + 1
			b.ResetTimer()
			for c := range sessions {
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
			s.catchUp(ctx) // the copy into the database is part of the cost
			b.ReportMetric(float64(sessions*per)/b.Elapsed().Seconds(), "stmts/s")
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
