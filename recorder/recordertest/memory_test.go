package recordertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/recorder"
)

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

func session(sid string) []*recorder.Event {
	ev := func(i int, typ, id string) *recorder.Event {
		return &recorder.Event{ID: sid + id, Type: typ, SessionID: sid, Time: t0.Add(time.Duration(i) * time.Second),
			Protocol: "postgres", Target: "db", Subject: "bob"}
	}
	start := ev(0, recorder.TypeSessionStart, "start")
	start.Session = &recorder.SessionInfo{ClientAddr: "10.1.1.1:4000"}
	c1 := ev(1, recorder.TypeCommand, "c1")
	c1.Input = json.RawMessage(`{"sql":"SELECT 1"}`)
	c1.Decision = &decision.Decision{ID: "d1", Allow: true}
	o1 := ev(2, recorder.TypeOutcome, "o1")
	o1.Ref, o1.Outcome = c1.ID, &recorder.Outcome{Status: recorder.StatusBlocked, Error: "approval denied"}
	c2 := ev(3, recorder.TypeCommand, "c2")
	c2.Decision = &decision.Decision{ID: "d2", Allow: true}
	o2 := ev(4, recorder.TypeOutcome, "o2")
	o2.Ref, o2.Outcome = c2.ID, &recorder.Outcome{Status: recorder.StatusError, Error: "boom"}
	end := ev(5, recorder.TypeSessionEnd, "end")
	return []*recorder.Event{start, c1, o1, c2, o2, end}
}

func appendAll(t *testing.T, m *Memory, evs []*recorder.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := m.Append(context.Background(), ev); err != nil {
			t.Fatalf("Append %s: %v", ev.ID, err)
		}
	}
}

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	evs := session("a")
	appendAll(t, m, evs)
	got, err := m.Events(ctx, "a")
	if err != nil || len(got) != len(evs) {
		t.Fatalf("Events = %d events, %v; want %d", len(got), err, len(evs))
	}
	for i := range evs {
		if got[i].Seq != int64(i+1) || got[i].Hash != evs[i].Hash || got[i].ID != evs[i].ID {
			t.Errorf("event %d = %+v, want %+v", i, got[i], *evs[i])
		}
	}
	sums, err := m.Sessions(ctx, recorder.SessionFilter{})
	if err != nil || len(sums) != 1 {
		t.Fatalf("Sessions = %+v, %v", sums, err)
	}
	s := sums[0]
	if s.Commands != 2 || s.Allowed != 1 || s.Blocked != 1 || s.Errors != 1 || s.End == nil ||
		s.ClientAddr != "10.1.1.1:4000" || !s.Start.Equal(t0) {
		t.Errorf("summary = %+v", s)
	}
	if res, err := m.Verify(ctx); err != nil || !res.OK || res.Events != 6 || res.Head != evs[5].Hash {
		t.Errorf("Verify = %+v, %v", res, err)
	}
	if len(m.All()) != 6 {
		t.Errorf("All returned %d events", len(m.All()))
	}
	if err := m.Append(ctx, &recorder.Event{ID: evs[0].ID, Type: recorder.TypeCommand}); err == nil {
		t.Errorf("Append with a duplicate ID succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Append(cctx, &recorder.Event{ID: "x", Type: recorder.TypeCommand}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with canceled ctx = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Append(ctx, &recorder.Event{ID: "y", Type: recorder.TypeCommand}); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
}

func TestFailAppends(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	evs := session("a")
	appendAll(t, m, evs[:2])
	boom := errors.New("disk full")
	m.FailAppends(boom)
	if err := m.Append(ctx, evs[2]); !errors.Is(err, boom) {
		t.Fatalf("Append while failing = %v, want %v", err, boom)
	}
	m.FailAppends(nil)
	appendAll(t, m, evs[2:])
	if res, err := m.Verify(ctx); err != nil || !res.OK || res.Events != 6 {
		t.Errorf("Verify = %+v, %v", res, err)
	}
}

func TestTamper(t *testing.T) {
	m := NewMemory()
	appendAll(t, m, session("a"))
	m.Tamper(func(rs []recorder.Record) []recorder.Record {
		rs[1].Body = bytes.Replace(rs[1].Body, []byte(`"allow":true`), []byte(`"allow":false`), 1)
		return rs
	})
	res, err := m.Verify(context.Background())
	if err != nil || res.OK || res.FirstBad == nil || res.FirstBad.Seq != 2 ||
		res.FirstBad.Reason != "hash does not match its content" {
		t.Errorf("Verify after tampering = %+v, %v", res, err)
	}
	m.Tamper(func(rs []recorder.Record) []recorder.Record { return append(rs[:2], rs[3:]...) })
	if res, _ := m.Verify(context.Background()); res.FirstBad == nil || res.FirstBad.Seq != 2 {
		t.Errorf("Verify after deletion = %+v", res)
	}
}
