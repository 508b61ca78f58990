package policies

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/storage"
)

// TestMemoConcurrentWrites decides from several goroutines while the data
// changes: every decision must be the one for the data before or after a
// write, and once writing stops, decisions follow the final data.
func TestMemoConcurrentWrites(t *testing.T) {
	dir := bundleDir(t, "custom", map[string]string{
		"policy.rego": `package regate

decision := {"allow": data.regate.closed == false}
`,
		"regate/data.json": `{"closed": false}`,
	})
	e := newEngine(t, Config{Bundle: dir})
	defer e.Close()
	ctx := context.Background()
	ins := preparedInputs(t, 64)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := e.Decide(ctx, ins[(i+g)%len(ins)])
				if d.Error != "" {
					t.Errorf("decision %+v", d)
					return
				}
			}
		}()
	}
	for i := range 200 {
		if err := storage.WriteOne(ctx, e.store, storage.ReplaceOp, storage.MustParsePath("/regate/closed"), i%2 == 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	// The last write closed nothing (199 is odd): every decision allows.
	for _, in := range ins {
		if d := e.Decide(ctx, in); !d.Allow {
			t.Fatalf("denied after the data reopened: %+v", d)
		}
	}
	if err := storage.WriteOne(ctx, e.store, storage.ReplaceOp, storage.MustParsePath("/regate/closed"), true); err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		if d := e.Decide(ctx, in); d.Allow {
			t.Fatalf("allowed after the data closed: %+v", d)
		}
	}
	if e.memo.hits.Load() == 0 {
		t.Error("no memo hits")
	}
}

// TestMemoConcurrentLearning learns keys while other goroutines evaluate
// the same policy: under the race detector it shows that learning
// does not write into terms evaluations share (a constant rule head).
func TestMemoConcurrentLearning(t *testing.T) {
	for _, policy := range []string{
		`decision := {"allow": true, "reasons": ["constant"], "mask": [{"column": "c"}]}`,
		"",
	} {
		cfg := Config{}
		if policy != "" {
			cfg.Bundle = bundleDir(t, "custom", map[string]string{"policy.rego": "package regate\n\n" + policy + "\n"})
		}
		e := newEngine(t, cfg)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ins := preparedInputs(t, memoLearnAt+1)
				for s := range 10 {
					for _, in := range ins {
						in.Session.ID = fmt.Sprintf("s%d-%d", g, s)
						if d := e.Decide(context.Background(), in); !d.Allow {
							t.Errorf("decision %+v", d)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		if e.memo.learned.Load() == 0 {
			t.Error("nothing learned")
		}
		e.Close()
	}
}
