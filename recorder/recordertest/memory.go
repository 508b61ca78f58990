// Package recordertest provides an in-memory recorder.Store for tests of the
// packages that record events.
package recordertest

import (
	"context"
	"fmt"
	"sync"

	"github.com/regate/regate/recorder"
)

// Memory is an in-memory recorder.Store. It encodes, chains, verifies and
// summarizes with the same code as the SQLite store. It is safe for
// concurrent use.
type Memory struct {
	mu      sync.Mutex
	records []recorder.Record
	ids     map[string]bool
	failErr error
	closed  bool

	approvals map[string]recorder.ApprovalRecord // approvals.go
}

var _ recorder.Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{ids: make(map[string]bool), approvals: make(map[string]recorder.ApprovalRecord)}
}

// FailAppends makes every later Append return err without storing anything;
// nil makes appends succeed again.
func (m *Memory) FailAppends(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failErr = err
}

// Append chains and stores ev.
func (m *Memory) Append(ctx context.Context, ev *recorder.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recordertest: append: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return recorder.ErrClosed
	case m.failErr != nil:
		return m.failErr
	}
	draft, err := recorder.Encode(ev)
	if err != nil {
		return err
	}
	if m.ids[draft.ID()] {
		return fmt.Errorf("recordertest: append event %q: duplicate ID", draft.ID())
	}
	prev := recorder.GenesisPrevHash
	if n := len(m.records); n > 0 {
		prev = m.records[n-1].Hash
	}
	r, err := draft.Seal(int64(len(m.records))+1, prev)
	if err != nil {
		return err
	}
	m.records = append(m.records, r)
	m.ids[r.ID] = true
	ev.Seq, ev.PrevHash, ev.Hash = r.Seq, r.PrevHash, r.Hash
	return nil
}

// Sessions summarizes the stored sessions.
func (m *Memory) Sessions(ctx context.Context, f recorder.SessionFilter) ([]recorder.SessionSummary, error) {
	events, err := m.decode(ctx, func(recorder.Record) bool { return true })
	if err != nil {
		return nil, err
	}
	sum := recorder.NewSessionSummarizer()
	for i := range events {
		sum.Add(&events[i])
	}
	return sum.Summaries(f), nil
}

// Events returns the session's events in chain order.
func (m *Memory) Events(ctx context.Context, sessionID string) ([]recorder.Event, error) {
	return m.decode(ctx, func(r recorder.Record) bool { return r.SessionID == sessionID })
}

// All returns every stored event in chain order.
func (m *Memory) All() []recorder.Event {
	events, err := m.decode(context.Background(), func(recorder.Record) bool { return true })
	if err != nil { // only after Tamper broke a body
		return nil
	}
	return events
}

func (m *Memory) decode(ctx context.Context, keep func(recorder.Record) bool) ([]recorder.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recordertest: read events: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	events := []recorder.Event{}
	for _, r := range m.records {
		if !keep(r) {
			continue
		}
		ev, err := r.Event()
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	return events, nil
}

// Verify walks the chain.
func (m *Memory) Verify(ctx context.Context) (recorder.VerifyResult, error) {
	if err := ctx.Err(); err != nil {
		return recorder.VerifyResult{}, fmt.Errorf("recordertest: verify: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := recorder.NewChainVerifier()
	for _, r := range m.records {
		if !v.Add(r) {
			break
		}
	}
	return v.Result(), nil
}

// Tamper lets a test edit the stored records (as an attacker with access to
// the database would) to exercise verification failures. The function may
// modify, reorder or reslice the records and returns the new slice.
func (m *Memory) Tamper(fn func(records []recorder.Record) []recorder.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records = fn(m.records)
}

// Close makes later appends fail with recorder.ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Commands calls fn for every command event f selects, in chain order.
func (m *Memory) Commands(ctx context.Context, f recorder.CommandFilter, fn func(*recorder.Event) error) error {
	events, err := m.decode(ctx, func(r recorder.Record) bool { return r.Type == recorder.TypeCommand })
	if err != nil {
		return err
	}
	for i := range events {
		if !f.Match(&events[i]) {
			continue
		}
		if err := fn(&events[i]); err != nil {
			return err
		}
	}
	return nil
}
