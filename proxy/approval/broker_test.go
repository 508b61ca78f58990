package approval

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/regate/regate/recorder/recordertest"
)

var (
	agent = Person{Subject: "agent-7", Issuer: "https://idp", Groups: []string{"agents"}}
	dana  = Person{Subject: "dana", Issuer: "https://idp", Groups: []string{"dba"}}
	ivan  = Person{Subject: "ivan", Issuer: "https://idp", Groups: []string{"interns"}}
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func newBroker(t *testing.T, wait time.Duration) (*Broker, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	b, err := New(Config{Store: recordertest.NewMemory(), Wait: wait, TTL: 15 * time.Minute, Poll: 10 * time.Millisecond, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return b, c
}

func ask(t *testing.T, b *Broker, fp string) Request {
	t.Helper()
	r, err := b.Ask(context.Background(), Request{Requester: agent, Target: "db", Command: "UPDATE t SET x = 1 WHERE id = 1",
		Groups: []string{"dba"}, Reason: "prod writes", Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestApproveInTime(t *testing.T) {
	ctx := context.Background()
	b, _ := newBroker(t, 5*time.Second)
	r := ask(t, b, "fp1")
	if len(r.ID) != 10 || r.State != Pending {
		t.Fatalf("request %+v", r)
	}
	if _, err := b.Approve(ctx, r.ID, agent, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := b.Approve(ctx, r.ID, ivan, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("outsider: %v", err)
	}
	done := make(chan Request)
	go func() { got, _ := b.Wait(ctx, r.ID); done <- got }()
	time.Sleep(20 * time.Millisecond)
	if _, err := b.Approve(ctx, r.ID, dana, "ticket 1"); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.State != Approved || !got.Used || got.DecidedBy.Subject != "dana" || got.Comment != "ticket 1" {
		t.Fatalf("waited for %+v", got)
	}
	if _, err := b.Deny(ctx, r.ID, dana, "too late"); !errors.Is(err, ErrNotPending) {
		t.Fatalf("second decision: %v", err)
	}
	if reuse, _ := b.Reuse(ctx, "fp1"); reuse != nil {
		t.Fatal("an approval used in time was reused")
	}
}

func TestLateApprovalIsUsableOnce(t *testing.T) {
	ctx := context.Background()
	b, c := newBroker(t, 30*time.Millisecond)
	r := ask(t, b, "fp2")
	got, err := b.Wait(ctx, r.ID)
	if err != nil || got.State != Pending {
		t.Fatalf("after the wait: %+v %v", got, err)
	}
	if _, err := b.Approve(ctx, r.ID, dana, ""); err != nil {
		t.Fatal(err)
	}
	if reuse, _ := b.Reuse(ctx, "other"); reuse != nil {
		t.Fatal("reused for another fingerprint")
	}
	first, _ := b.Reuse(ctx, "fp2")
	second, _ := b.Reuse(ctx, "fp2")
	if first == nil || second != nil {
		t.Fatalf("reuse: first %v second %v", first, second)
	}
	r2 := ask(t, b, "fp3")
	c.advance(16 * time.Minute)
	if got, _ := b.Get(ctx, r2.ID); got.State != Expired {
		t.Fatalf("after the TTL: %s", got.State)
	}
	if _, err := b.Approve(ctx, r2.ID, dana, ""); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approving an expired request: %v", err)
	}
}

func TestConcurrentDecisionsOneWins(t *testing.T) {
	ctx := context.Background()
	b, _ := newBroker(t, time.Second)
	r := ask(t, b, "fp4")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var err error
			if i%2 == 0 {
				_, err = b.Approve(ctx, r.ID, dana, "")
			} else {
				_, err = b.Deny(ctx, r.ID, dana, "no")
			}
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d decisions won", wins)
	}
}
