package recorder_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/regate/regate/recorder"
	"github.com/regate/regate/recorder/recordertest"
)

// approvalStore is what the behavioural tests need of a store.
type approvalStore interface {
	recorder.ApprovalStore
	Close() error
}

// approvalStores are the implementations every behavioural test runs against.
var approvalStores = []struct {
	name string
	open func(t *testing.T) approvalStore
}{
	{"sqlite", func(t *testing.T) approvalStore {
		return openSQLite(t, filepath.Join(t.TempDir(), "events.db"))
	}},
	{"memory", func(t *testing.T) approvalStore { return recordertest.NewMemory() }},
}

func openSQLite(t *testing.T, path string) recorder.Store {
	t.Helper()
	st, err := recorder.Open(context.Background(), "sqlite://"+path, nil)
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var base = time.Date(2025, 3, 4, 10, 0, 0, 123456789, time.UTC)

// rec is an approval created at base+created minutes that expires at
// base+expires minutes.
func rec(id, state, fp string, created, expires int, used bool) recorder.ApprovalRecord {
	return recorder.ApprovalRecord{ID: id, State: state, Fingerprint: fp,
		CreatedAt: base.Add(time.Duration(created) * time.Minute),
		ExpiresAt: base.Add(time.Duration(expires) * time.Minute),
		Used:      used, Body: []byte(fmt.Sprintf(`{"id":%q,"state":%q}`, id, state))}
}

func sameApproval(a, b recorder.ApprovalRecord) bool {
	return a.ID == b.ID && a.State == b.State && a.Fingerprint == b.Fingerprint &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.Used == b.Used && bytes.Equal(a.Body, b.Body)
}

func mustCreate(t *testing.T, s recorder.ApprovalStore, recs ...recorder.ApprovalRecord) {
	t.Helper()
	for _, r := range recs {
		if err := s.CreateApproval(context.Background(), r); err != nil {
			t.Fatalf("CreateApproval(%s): %v", r.ID, err)
		}
	}
}

func mustGet(t *testing.T, s recorder.ApprovalStore, id string) recorder.ApprovalRecord {
	t.Helper()
	r, err := s.Approval(context.Background(), id)
	if err != nil {
		t.Fatalf("Approval(%s): %v", id, err)
	}
	return r
}

func ids(recs []recorder.ApprovalRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestApprovalStores(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, s approvalStore)
	}{
		{"CreateGetList", testCreateGetList},
		{"CompareAndSet", testCompareAndSet},
		{"NotFound", testNotFound},
		{"Reusable", testReusable},
		{"ConcurrentCAS", testConcurrentCAS},
		{"Closed", testClosed},
	}
	for _, impl := range approvalStores {
		for _, tc := range cases {
			t.Run(impl.name+"/"+tc.name, func(t *testing.T) { tc.run(t, impl.open(t)) })
		}
	}
}

func testCreateGetList(t *testing.T, s approvalStore) {
	ctx := context.Background()
	a, b, c := rec("a", "pending", "f1", 0, 10, false), rec("b", "approved", "f1", 2, 10, true),
		rec("c", "pending", "f2", 1, 10, false)
	a.CreatedAt = a.CreatedAt.In(time.FixedZone("CET", 3600)) // stored in UTC
	mustCreate(t, s, a, b, c)
	if got := mustGet(t, s, "b"); !sameApproval(got, b) {
		t.Errorf("Approval(b) = %+v, want %+v", got, b)
	}
	if got := mustGet(t, s, "a"); !sameApproval(got, a) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("Approval(a) = %+v, want %+v in UTC", got, a)
	}
	for state, want := range map[string]string{"": "[b c a]", "pending": "[c a]", "approved": "[b]", "denied": "[]"} {
		got, err := s.Approvals(ctx, state)
		if err != nil {
			t.Fatalf("Approvals(%q): %v", state, err)
		}
		if fmt.Sprint(ids(got)) != want || got == nil {
			t.Errorf("Approvals(%q) = %v, want %s", state, ids(got), want)
		}
	}
	if err := s.CreateApproval(ctx, rec("a", "denied", "f3", 5, 5, false)); !errors.Is(err, recorder.ErrConflict) {
		t.Errorf("CreateApproval(duplicate a) = %v, want ErrConflict", err)
	}
	if err := s.CreateApproval(ctx, rec("", "pending", "f", 0, 1, false)); err == nil {
		t.Error("CreateApproval with an empty ID succeeded")
	}
	if got := mustGet(t, s, "a"); !sameApproval(got, a) {
		t.Errorf("Approval(a) after a rejected duplicate = %+v", got)
	}
}

func testCompareAndSet(t *testing.T, s approvalStore) {
	ctx := context.Background()
	mustCreate(t, s, rec("a", "pending", "f1", 0, 10, false))
	approved := rec("a", "approved", "f1", 0, 60, false)
	if err := s.UpdateApproval(ctx, "pending", false, approved); err != nil {
		t.Fatalf("UpdateApproval(pending→approved): %v", err)
	}
	if got := mustGet(t, s, "a"); !sameApproval(got, approved) {
		t.Errorf("after update: %+v, want %+v", got, approved)
	}
	for _, tc := range []struct {
		from string
		used bool
	}{{"pending", false}, {"approved", true}, {"denied", false}} {
		err := s.UpdateApproval(ctx, tc.from, tc.used, rec("a", "denied", "f1", 0, 60, false))
		if !errors.Is(err, recorder.ErrConflict) {
			t.Errorf("UpdateApproval(from %s, used=%t) = %v, want ErrConflict", tc.from, tc.used, err)
		}
	}
	used := rec("a", "approved", "f1", 0, 60, true)
	if err := s.UpdateApproval(ctx, "approved", false, used); err != nil {
		t.Fatalf("UpdateApproval(mark used): %v", err)
	}
	if err := s.UpdateApproval(ctx, "approved", false, used); !errors.Is(err, recorder.ErrConflict) {
		t.Errorf("second use = %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, "a"); !sameApproval(got, used) {
		t.Errorf("after conflicts: %+v, want %+v", got, used)
	}
}

func testNotFound(t *testing.T, s approvalStore) {
	ctx := context.Background()
	mustCreate(t, s, rec("a", "pending", "f1", 0, 10, false))
	if _, err := s.Approval(ctx, "nope"); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("Approval(nope) = %v, want ErrNotFound", err)
	}
	err := s.UpdateApproval(ctx, "pending", false, rec("nope", "approved", "f1", 0, 10, false))
	if !errors.Is(err, recorder.ErrNotFound) || errors.Is(err, recorder.ErrConflict) {
		t.Errorf("UpdateApproval(nope) = %v, want ErrNotFound", err)
	}
	if _, err := s.ReusableApproval(ctx, "f1", base); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("ReusableApproval with only a pending request = %v, want ErrNotFound", err)
	}
	if _, err := s.Approval(ctx, "nope"); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("a failed update created the approval: %v", err)
	}
}

func testReusable(t *testing.T, s approvalStore) {
	ctx := context.Background()
	now := base.Add(30 * time.Minute)
	mustCreate(t, s,
		rec("old", "approved", "fp", 1, 60, false),       // usable, older
		rec("want", "approved", "fp", 5, 40, false),      // usable, newest usable
		rec("used", "approved", "fp", 9, 60, true),       // used
		rec("expired", "approved", "fp", 8, 30, false),   // expires exactly now
		rec("pending", "pending", "fp", 7, 60, false),    // not approved
		rec("denied", "denied", "fp", 6, 60, false),      // not approved
		rec("other", "approved", "other", 10, 60, false), // other fingerprint
	)
	got, err := s.ReusableApproval(ctx, "fp", now)
	if err != nil || got.ID != "want" {
		t.Fatalf("ReusableApproval = %s, %v; want the request \"want\"", got.ID, err)
	}
	if !sameApproval(got, rec("want", "approved", "fp", 5, 40, false)) {
		t.Errorf("ReusableApproval returned %+v", got)
	}
	// Once "want" is used, the older one is next; once past its expiry, none.
	if err := s.UpdateApproval(ctx, "approved", false, rec("want", "approved", "fp", 5, 40, true)); err != nil {
		t.Fatalf("mark used: %v", err)
	}
	if got, err := s.ReusableApproval(ctx, "fp", now); err != nil || got.ID != "old" {
		t.Errorf("ReusableApproval after use = %s, %v; want old", got.ID, err)
	}
	later := base.Add(2 * time.Hour).In(time.FixedZone("PST", -8*3600))
	if _, err := s.ReusableApproval(ctx, "fp", later); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("ReusableApproval after expiry = %v, want ErrNotFound", err)
	}
	if got, err := s.ReusableApproval(ctx, "other", now); err != nil || got.ID != "other" {
		t.Errorf("ReusableApproval(other) = %s, %v", got.ID, err)
	}
}

func testConcurrentCAS(t *testing.T, s approvalStore) {
	ctx := context.Background()
	mustCreate(t, s, rec("a", "pending", "f1", 0, 10, false))
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := rec("a", "approved", "f1", 0, 10, false)
			r.Body = []byte(fmt.Sprintf(`{"winner":%d}`, i))
			errs[i] = s.UpdateApproval(ctx, "pending", false, r)
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("goroutines %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, recorder.ErrConflict):
			t.Errorf("goroutine %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no goroutine won")
	}
	got := mustGet(t, s, "a")
	if want := fmt.Sprintf(`{"winner":%d}`, winner); got.State != "approved" || string(got.Body) != want {
		t.Errorf("stored %s %s, want approved %s", got.State, got.Body, want)
	}
}

func testClosed(t *testing.T, s approvalStore) {
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	if err := s.CreateApproval(ctx, rec("a", "pending", "f", 0, 1, false)); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("CreateApproval after Close = %v, want ErrClosed", err)
	}
	if err := s.UpdateApproval(ctx, "pending", false, rec("a", "approved", "f", 0, 1, false)); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("UpdateApproval after Close = %v, want ErrClosed", err)
	}
}

func TestSQLiteApprovalsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openSQLite(t, path)
	a, b := rec("a", "approved", "f1", 0, 10, true), rec("b", "pending", "f2", 1, 10, false)
	mustCreate(t, s, a, b)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openSQLite(t, path)
	if got := mustGet(t, s, "a"); !sameApproval(got, a) {
		t.Errorf("Approval(a) after reopen = %+v, want %+v", got, a)
	}
	got, err := s.Approvals(context.Background(), "")
	if err != nil || fmt.Sprint(ids(got)) != "[b a]" {
		t.Errorf("Approvals after reopen = %v, %v", ids(got), err)
	}
}
