package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/policies/decision"
)

// openTemp opens a store in a new file under t.TempDir and returns it with
// its path. The store is closed at cleanup.
func openTemp(t testing.TB, query string) (*sqliteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	return openPath(t, path, query), path
}

func openPath(t testing.TB, path, query string) *sqliteStore {
	t.Helper()
	url := "sqlite://" + path + query
	st, err := Open(context.Background(), url, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st.(*sqliteStore)
}

var t0 = time.Date(2025, 3, 4, 10, 0, 0, 123456789, time.UTC)

// sessionEvents is a session with four commands: c1 allowed and ok, c2 denied
// by policy, c3 allowed but then blocked (approval denied), c4 allowed and
// failing on the target; plus a start and an end. Summary: 4 commands, 2
// allowed, 2 blocked, 1 error.
func sessionEvents(sid string, start time.Time) []*Event {
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Millisecond) }
	id := func(s string) string { return sid + "-" + s }
	common := func(i int, typ, name string) *Event {
		return &Event{ID: id(name), Time: at(i), Type: typ, SessionID: sid, Protocol: "postgres",
			Target: "orders-db", Subject: "alice@example.com"}
	}
	start0 := common(0, TypeSessionStart, "start")
	start0.Session = &SessionInfo{ClientAddr: "10.0.0.7:5555", Groups: []string{"dba"}, Database: "orders", User: "app"}
	c1 := common(1, TypeCommand, "c1")
	c1.Input = json.RawMessage(`{"sql":"SELECT * FROM orders WHERE id < 10","statements":[{"kind":"select"}]}`)
	c1.Decision = &decision.Decision{ID: id("d1"), Path: "regate/decision", Allow: true,
		Result: map[string]any{"allow": true}, Bundles: map[string]decision.Bundle{"main": {Revision: "r1"}}}
	o1 := common(2, TypeOutcome, "o1")
	o1.Ref, o1.Outcome = c1.ID, &Outcome{Status: StatusOK, Tags: []string{"SELECT 9"}, Rows: 9}
	c2 := common(3, TypeCommand, "c2")
	c2.Input = json.RawMessage(`{"sql":"DROP TABLE orders"}`)
	c2.Decision = &decision.Decision{ID: id("d2"), Path: "regate/decision", Allow: false, Reasons: []string{"no DDL"}}
	o2 := common(4, TypeOutcome, "o2")
	o2.Ref, o2.Outcome = c2.ID, &Outcome{Status: StatusBlocked, Error: "no DDL", Code: "42501"}
	c3 := common(5, TypeCommand, "c3")
	c3.Input = json.RawMessage(`{"sql":"DELETE FROM orders WHERE id = 1"}`)
	c3.Decision = &decision.Decision{ID: id("d3"), Allow: true, Approval: &decision.Approval{Groups: []string{"leads"}}}
	o3 := common(6, TypeOutcome, "o3")
	o3.Ref, o3.Outcome = c3.ID, &Outcome{Status: StatusBlocked, Error: "approval denied"}
	c4 := common(7, TypeCommand, "c4")
	c4.Input = json.RawMessage(`{"sql":"SELECT 1/0"}`)
	c4.Decision = &decision.Decision{ID: id("d4"), Allow: true}
	o4 := common(8, TypeOutcome, "o4")
	o4.Ref, o4.Outcome = c4.ID, &Outcome{Status: StatusError, Error: "division by zero", Code: "22012"}
	end := common(9, TypeSessionEnd, "end")
	end.Outcome = &Outcome{Status: StatusOK}
	end.Session = &SessionInfo{Commands: 4, Allowed: 1, Blocked: 3}
	return []*Event{start0, c1, o1, c2, o2, c3, o3, c4, o4, end}
}

func appendAll(t testing.TB, s Store, events []*Event) {
	t.Helper()
	for _, ev := range events {
		if err := s.Append(context.Background(), ev); err != nil {
			t.Fatalf("Append %s: %v", ev.ID, err)
		}
	}
}

// fillStore appends n sessions of events and returns them in order.
func fillStore(t testing.TB, s Store, n int) []*Event {
	t.Helper()
	var all []*Event
	for i := 0; i < n; i++ {
		evs := sessionEvents(fmt.Sprintf("s%d", i), t0.Add(time.Duration(i)*time.Second))
		appendAll(t, s, evs)
		all = append(all, evs...)
	}
	return all
}

func mustVerify(t testing.TB, s Store) VerifyResult {
	t.Helper()
	res, err := s.Verify(context.Background())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
