package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/regate/regate/policies/decision"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestRoundTrip(t *testing.T) {
	s, path := openTemp(t, "")
	want := sessionEvents("s1", t0)
	appendAll(t, s, want)
	for i, ev := range want {
		if ev.Seq != int64(i+1) || len(ev.Hash) != 64 {
			t.Fatalf("event %d: Seq %d Hash %q after Append", i, ev.Seq, ev.Hash)
		}
	}
	// Reopen to read what is on disk, not what is cached.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openPath(t, path, "")
	got, err := s.Events(context.Background(), "s1")
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Events returned %d events, want %d", len(got), len(want))
	}
	// Input is a json.RawMessage, which json.Marshal compacts and escapes (<
	// becomes \u003c), so compare the encodings, which cover every field but
	// Hash, and the hashes.
	for i := range want {
		g, _ := json.Marshal(got[i])
		w, _ := json.Marshal(want[i])
		if string(g) != string(w) || got[i].Hash != want[i].Hash {
			t.Errorf("event %d differs:\n got %s %s\nwant %s %s", i, g, got[i].Hash, w, want[i].Hash)
		}
	}
	if !reflect.DeepEqual(got[1].Decision, want[1].Decision) || !got[9].Time.Equal(want[9].Time) {
		t.Errorf("decision or time not preserved: %+v %v", got[1].Decision, got[9].Time)
	}
	if other, err := s.Events(context.Background(), "nope"); err != nil || len(other) != 0 {
		t.Errorf("Events(unknown) = %v, %v; want empty", other, err)
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 10 || res.Head != want[9].Hash {
		t.Errorf("Verify = %+v, want OK with 10 events and head %s", res, want[9].Hash)
	}
}

func TestSessions(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx := context.Background()
	fillStore(t, s, 3) // s0, s1, s2 starting one second apart
	open := sessionEvents("s3", t0.Add(10*time.Second))[:3]
	appendAll(t, s, open) // no end yet
	all, err := s.Sessions(ctx, SessionFilter{})
	if err != nil {
		t.Fatalf("Sessions: %v", err)
	}
	if ids := summaryIDs(all); ids != "s3 s2 s1 s0" {
		t.Fatalf("Sessions order = %s, want newest first", ids)
	}
	end := t0.Add(time.Second + 9*time.Millisecond)
	want := SessionSummary{ID: "s1", Protocol: "postgres", Target: "orders-db", Subject: "alice@example.com",
		ClientAddr: "10.0.0.7:5555", Start: t0.Add(time.Second), End: &end,
		Commands: 4, Allowed: 2, Blocked: 2, Errors: 1}
	if !reflect.DeepEqual(all[2], want) {
		t.Errorf("summary of s1:\n got %+v\nwant %+v", all[2], want)
	}
	if all[0].End != nil || all[0].Commands != 1 || all[0].Allowed != 1 {
		t.Errorf("open session s3 = %+v, want no End, 1 allowed command", all[0])
	}
	for _, tc := range []struct {
		f    SessionFilter
		want string
	}{
		{SessionFilter{Limit: 2}, "s3 s2"},
		{SessionFilter{Since: t0.Add(time.Second)}, "s3 s2 s1"},
		{SessionFilter{Since: t0.Add(time.Second + time.Nanosecond), Limit: 5}, "s3 s2"},
		{SessionFilter{Since: t0.Add(time.Minute)}, ""},
	} {
		got, err := s.Sessions(ctx, tc.f)
		if err != nil {
			t.Fatalf("Sessions(%+v): %v", tc.f, err)
		}
		if ids := summaryIDs(got); ids != tc.want {
			t.Errorf("Sessions(%+v) = %q, want %q", tc.f, ids, tc.want)
		}
		if len(got) > 0 && got[len(got)-1].ID == "s1" && !reflect.DeepEqual(got[len(got)-1], want) {
			t.Errorf("filtered summary of s1 = %+v, want %+v", got[len(got)-1], want)
		}
	}
}

func summaryIDs(ss []SessionSummary) string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	return strings.Join(ids, " ")
}

func TestConcurrentAppends(t *testing.T) {
	s, _ := openTemp(t, "")
	const workers, each = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ev := &Event{ID: fmt.Sprintf("w%d-%d", w, i), Type: TypeCommand, SessionID: fmt.Sprintf("w%d", w),
					Input: json.RawMessage(`{"sql":"SELECT 1"}`)}
				if err := s.Append(context.Background(), ev); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	res := mustVerify(t, s)
	if !res.OK || res.Events != workers*each {
		t.Fatalf("Verify = %+v, want OK with %d events", res, workers*each)
	}
	sessions, err := s.Sessions(context.Background(), SessionFilter{})
	if err != nil {
		t.Fatalf("Sessions: %v", err)
	}
	for _, ss := range sessions {
		if ss.Commands != each || ss.Blocked != each {
			t.Errorf("session %s: %d commands, %d blocked; want %d", ss.ID, ss.Commands, ss.Blocked, each)
		}
	}
}

func TestAppendContextAndClose(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Append(ctx, &Event{ID: "a", Type: TypeCommand})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with canceled ctx = %v, want context.Canceled", err)
	}
	if err := s.Append(context.Background(), &Event{ID: "", Type: TypeCommand}); err == nil {
		t.Errorf("Append without ID succeeded")
	}
	if err := s.Append(context.Background(), &Event{ID: "bad", Type: TypeCommand, Input: json.RawMessage(`{`)}); err == nil {
		t.Errorf("Append with invalid Input JSON succeeded")
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 0 {
		t.Fatalf("Verify = %+v, want OK and empty", res)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Append(context.Background(), &Event{ID: "late", Type: TypeCommand}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
}

// TestCloseDrains closes while appends are in flight: each Append either
// succeeds (and its event is stored) or returns ErrClosed.
func TestCloseDrains(t *testing.T) {
	s, path := openTemp(t, "?synchronous=normal")
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				err := s.Append(context.Background(), &Event{ID: fmt.Sprintf("%d-%d", w, i), Type: TypeCommand})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				stored++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	res := mustVerify(t, openPath(t, path, ""))
	if !res.OK || res.Events != int64(stored) {
		t.Fatalf("after reopen Verify = %+v, want OK with %d events", res, stored)
	}
}

func TestDuplicateIDFailsAlone(t *testing.T) {
	s, _ := openTemp(t, "")
	appendAll(t, s, []*Event{{ID: "dup", Type: TypeCommand}})
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("ok%d", i)
			if i%10 == 0 {
				id = "dup"
			}
			errs[i] = s.Append(context.Background(), &Event{ID: id, Type: TypeCommand})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%10 == 0) != errors.Is(err, ErrDuplicateID) || (i%10 != 0 && err != nil) {
			t.Errorf("append %d: err = %v", i, err)
		}
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 46 {
		t.Errorf("Verify = %+v, want OK with 46 events", res)
	}
}

func TestOpenURLs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct{ url, want string }{
		{filepath.Join(dir, "x.db"), "has no scheme"},
		{"postgres://db/regate", "not supported yet"},
		{"mysql://db", "unsupported store URL scheme"},
		{"sqlite://", "empty database path"},
		{"sqlite://:memory:", "not supported"},
		{"sqlite://" + filepath.Join(dir, "missing", "x.db"), "create it first"},
		{"sqlite://" + filepath.Join(dir, "x.db") + "?synchronous=off", "want full or normal"},
		{"sqlite://" + filepath.Join(dir, "x.db") + "?cache=shared", "unknown parameter"},
	} {
		st, err := Open(ctx, tc.url, nil)
		if err == nil {
			_ = st.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want it to mention %q", tc.url, err, tc.want)
		}
	}
	// Relative paths, and reopening (idempotent migrations).
	t.Chdir(dir)
	for i := 0; i < 2; i++ {
		st, err := Open(ctx, "sqlite://./rel.db", hclog.NewNullLogger())
		if err != nil {
			t.Fatalf("Open relative (%d): %v", i, err)
		}
		appendAll(t, st, []*Event{{ID: fmt.Sprint(i), Type: TypeCommand}})
		if err := st.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "rel.db")); err != nil {
		t.Fatalf("relative database not created: %v", err)
	}
	// Characters that mean something in a SQLite URI.
	odd := filepath.Join(dir, "a b#c%3fd")
	if err := os.Mkdir(odd, 0o755); err != nil {
		t.Fatal(err)
	}
	appendAll(t, openPath(t, filepath.Join(odd, "x.db"), ""), []*Event{{ID: "odd", Type: TypeCommand}})
	if _, err := os.Stat(filepath.Join(odd, "x.db")); err != nil {
		t.Errorf("database with an odd path not created where expected: %v", err)
	}
	s := openPath(t, filepath.Join(dir, "rel.db"), "")
	var versions int
	if err := s.reader.QueryRow(`SELECT COUNT(*) FROM schema_version`).Scan(&versions); err != nil || versions != len(migrations) {
		t.Errorf("schema_version rows = %d, %v; want %d", versions, err, len(migrations))
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 2 {
		t.Errorf("Verify after reopen = %+v", res)
	}
}

// TestCanonicalBody checks that Seal's spliced body is exactly json.Marshal of
// the sealed event, which is the documented chain definition.
func TestCanonicalBody(t *testing.T) {
	evs := sessionEvents("s<&>\u2028é", t0)
	evs = append(evs, &Event{ID: "x", Type: "custom", Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 3600))})
	prev := GenesisPrevHash
	for i, ev := range evs {
		d, err := Encode(ev)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		r, err := d.Seal(int64(i+1), prev)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		ev.Seq, ev.PrevHash = r.Seq, r.PrevHash
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if string(r.Body) != string(want) {
			t.Fatalf("body of %s:\n got %s\nwant %s", ev.ID, r.Body, want)
		}
		prev = r.Hash
	}
	// A PrevHash that is not lowercase hex (never produced, but Seal is
	// exported) is still encoded as json.Marshal would.
	ev := &Event{ID: "odd", Type: "custom", Time: t0}
	d, err := Encode(ev)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	r, err := d.Seal(7, "A\"<\u2028")
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	ev.Seq, ev.PrevHash = 7, "A\"<\u2028"
	if want, _ := json.Marshal(ev); string(r.Body) != string(want) {
		t.Errorf("body with odd prev hash:\n got %s\nwant %s", r.Body, want)
	}
	if _, err := (Draft{}).Seal(1, ""); err == nil {
		t.Errorf("Seal of a zero Draft succeeded")
	}
	if got := evs[len(evs)-1].Time.Location(); got != time.UTC {
		t.Errorf("Encode left time in %v, want UTC", got)
	}
}

// TestCanonicalInputSplice checks that an input set with SetCanonicalInput
// gives the same body as the same input set as a plain RawMessage, and that
// replacing Input afterwards falls back to compacting it.
func TestCanonicalInputSplice(t *testing.T) {
	inputs := []any{
		map[string]any{"q": "SELECT '<&>' \u2028", "input": 0, "n": []any{1.5, nil}},
		"just a string",
		[]any{},
	}
	for i, in := range inputs {
		raw, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		mk := func() *Event {
			return &Event{ID: fmt.Sprintf("e%d", i), Type: TypeCommand, Time: t0, SessionID: "s\",\"input\":1",
				Subject: `"input":`, Ref: ",\"input\":", Outcome: &Outcome{Status: StatusOK}}
		}
		plain, spliced, replaced := mk(), mk(), mk()
		plain.Input = raw
		spliced.SetCanonicalInput(raw)
		replaced.SetCanonicalInput(raw)
		replaced.Input = json.RawMessage(" [ 1 , 2 ] ")
		var bodies [3][]byte
		for j, ev := range []*Event{plain, spliced, replaced} {
			d, err := Encode(ev)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			r, err := d.Seal(3, "ab")
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			bodies[j] = r.Body
		}
		if string(bodies[0]) != string(bodies[1]) {
			t.Errorf("input %d spliced:\n got %s\nwant %s", i, bodies[1], bodies[0])
		}
		replaced.Seq, replaced.PrevHash = 3, "ab"
		if want, _ := json.Marshal(replaced); string(bodies[2]) != string(want) {
			t.Errorf("input %d replaced:\n got %s\nwant %s", i, bodies[2], want)
		}
	}
}

// TestRawResultSplice: a decision that carries its result's encoding
// (RawResult, set on memoized decisions) gives the same body, byte for byte,
// as the same decision without it, with or without a spliced input, whatever
// the strings around it hold.
func TestRawResultSplice(t *testing.T) {
	results := []any{
		map[string]any{"allow": true, "reasons": []any{}, "mask": []any{map[string]any{"column": "email"}}},
		map[string]any{"allow": false, "reasons": []any{`x,"result":0`, `<&> \u2028`}},
		[]any{1.5, "a", nil, true},
		"just a string",
		float64(0),
	}
	decisions := []decision.Decision{
		{ID: "d1", Path: "regate/decision", Allow: true},
		{ID: `,"result":0`, Path: "p", Reasons: []string{`,"result":0,`, `,"bundles":{}`}, Error: `,"result":0}`},
		{ID: "d3", Path: "p", Allow: true, Mask: []decision.Mask{{Column: "email"}, {Detector: "jwt", With: `,"result":0`}},
			Approval: &decision.Approval{Groups: []string{"dba"}, Reason: `r,"result":0`},
			Bundles:  map[string]decision.Bundle{"b": {Revision: "r1"}, "a": {Revision: `,"result":0`}}},
		{ID: "d4", Path: "p", Bundles: map[string]decision.Bundle{"x": {Revision: "1"}}, Error: "e"},
	}
	input := json.RawMessage(`{"q":",\"result\":0","result":0}`)
	for ri, r := range results {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		for di, d := range decisions {
			for _, canon := range []bool{false, true} {
				mk := func(raw json.RawMessage) *Event {
					dc := d
					dc.Result, dc.RawResult = r, raw
					ev := &Event{ID: "e", Type: TypeCommand, Time: t0, SessionID: `,"result":0`, Decision: &dc}
					if canon {
						ev.SetCanonicalInput(input)
					} else {
						ev.Input = input
					}
					return ev
				}
				var bodies [2][]byte
				for j, ev := range []*Event{mk(nil), mk(raw)} {
					dr, err := Encode(ev)
					if err != nil {
						t.Fatalf("Encode: %v", err)
					}
					rec, err := dr.Seal(1, "")
					if err != nil {
						t.Fatal(err)
					}
					bodies[j] = rec.Body
				}
				if string(bodies[0]) != string(bodies[1]) {
					t.Errorf("result %d, decision %d, canonical input %v:\n got %s\nwant %s", ri, di, canon, bodies[1], bodies[0])
				}
			}
		}
	}
}

// TestDeferredAppends checks that deferred appends are committed on their own
// (after at most maxDefer) and together with a later undeferred append, in
// queue order.
func TestDeferredAppends(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx := context.Background()
	ev := func(id string) *Event { return &Event{ID: id, Type: TypeOutcome, SessionID: "s", Time: t0} }
	errs := make(chan error, 3)
	then := func(err error) { errs <- err }
	s.AppendDeferred(ctx, ev("alone"), then)
	if err := <-errs; err != nil {
		t.Fatalf("AppendDeferred: %v", err)
	}
	s.AppendDeferred(ctx, ev("d1"), then)
	s.AppendDeferred(ctx, ev("d2"), then)
	if err := s.Append(ctx, ev("now")); err != nil {
		t.Fatalf("Append: %v", err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("AppendDeferred: %v", err)
		}
	}
	evs, err := s.Events(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[0].ID != "alone" {
		t.Fatalf("events = %+v", evs)
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 4 {
		t.Errorf("Verify = %+v", res)
	}
}

// TestCloseDrainsDeferred closes the store while sessions append commands
// and deferred outcomes: every append reports exactly once, and exactly the
// events reported stored are in the chain.
func TestCloseDrainsDeferred(t *testing.T) {
	s, path := openTemp(t, "")
	var wg, outs sync.WaitGroup
	var stored atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("%d-%d", w, i)
				err := s.Append(context.Background(), &Event{ID: id, Type: TypeCommand})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				stored.Add(1)
				outs.Add(1)
				var once atomic.Bool
				s.AppendDeferred(context.Background(), &Event{ID: id + "-out", Type: TypeOutcome, Ref: id}, func(err error) {
					defer outs.Done()
					if once.Swap(true) {
						t.Errorf("outcome of %s reported twice", id)
					}
					if err == nil {
						stored.Add(1)
					} else if !errors.Is(err, ErrClosed) {
						t.Errorf("AppendDeferred: %v", err)
					}
				})
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	outs.Wait()
	res := mustVerify(t, openPath(t, path, ""))
	if !res.OK || res.Events != stored.Load() {
		t.Fatalf("after reopen Verify = %+v, want OK with %d events", res, stored.Load())
	}
}

// TestPageSize: a new database gets pageSize pages in WAL mode (the page
// size must be set before the journal mode, or SQLite keeps 4 KiB), and a
// database made with SQLite's default pages keeps them and stays usable.
func TestPageSize(t *testing.T) {
	pragma := func(s *sqliteStore, name string) string {
		t.Helper()
		var v string
		if err := s.writer.QueryRow("PRAGMA " + name).Scan(&v); err != nil {
			t.Fatalf("PRAGMA %s: %v", name, err)
		}
		return v
	}
	s, _ := openTemp(t, "")
	if got, want := pragma(s, "page_size"), fmt.Sprint(pageSize); got != want {
		t.Errorf("new store: page_size %s, want %s", got, want)
	}
	if got := pragma(s, "journal_mode"); got != "wal" {
		t.Errorf("new store: journal_mode %q, want wal", got)
	}

	path := filepath.Join(t.TempDir(), "old.db")
	db, err := openDB(context.Background(), sqliteDSN(path, "_pragma=journal_mode(WAL)"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	old := openPath(t, path, "")
	if got := pragma(old, "page_size"); got != "4096" {
		t.Errorf("existing store: page_size %s, want SQLite's default 4096 kept", got)
	}
	appendAll(t, old, sessionEvents("s1", t0))
	if res := mustVerify(t, old); !res.OK || res.Events != 10 {
		t.Errorf("existing store after appends: %+v", res)
	}
}
