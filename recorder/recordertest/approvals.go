package recordertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/regate/regate/recorder"
)

// stateApproved is the state ReusableApproval looks for.
const stateApproved = "approved"

// CreateApproval stores a new request. A request whose ID is already stored
// is rejected with an error wrapping recorder.ErrConflict. After Close it
// returns recorder.ErrClosed.
func (m *Memory) CreateApproval(ctx context.Context, r recorder.ApprovalRecord) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recordertest: create approval %q: %w", r.ID, err)
	}
	if r.ID == "" {
		return fmt.Errorf("recordertest: create approval: %w", errors.New("empty ID"))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return recorder.ErrClosed
	}
	if _, ok := m.approvals[r.ID]; ok {
		return fmt.Errorf("recordertest: create approval %q: ID already stored: %w", r.ID, recorder.ErrConflict)
	}
	if m.approvals == nil {
		m.approvals = make(map[string]recorder.ApprovalRecord)
	}
	m.approvals[r.ID] = normalize(r)
	return nil
}

// UpdateApproval replaces the request if it is still in fromState with Used
// equal to fromUsed; otherwise it returns an error wrapping
// recorder.ErrConflict, or recorder.ErrNotFound for an unknown ID.
func (m *Memory) UpdateApproval(ctx context.Context, fromState string, fromUsed bool, r recorder.ApprovalRecord) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recordertest: update approval %q: %w", r.ID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return recorder.ErrClosed
	}
	cur, ok := m.approvals[r.ID]
	switch {
	case !ok:
		return fmt.Errorf("recordertest: update approval %q: %w", r.ID, recorder.ErrNotFound)
	case cur.State != fromState || cur.Used != fromUsed:
		return fmt.Errorf("recordertest: update approval %q: not %s with used=%t: %w",
			r.ID, fromState, fromUsed, recorder.ErrConflict)
	}
	m.approvals[r.ID] = normalize(r)
	return nil
}

// Approval returns the request with id, or an error wrapping
// recorder.ErrNotFound.
func (m *Memory) Approval(ctx context.Context, id string) (recorder.ApprovalRecord, error) {
	if err := ctx.Err(); err != nil {
		return recorder.ApprovalRecord{}, fmt.Errorf("recordertest: read approval %q: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.approvals[id]
	if !ok {
		return recorder.ApprovalRecord{}, fmt.Errorf("recordertest: read approval %q: %w", id, recorder.ErrNotFound)
	}
	return normalize(r), nil
}

// Approvals lists the requests in state ("" for all), newest first.
func (m *Memory) Approvals(ctx context.Context, state string) ([]recorder.ApprovalRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recordertest: list approvals in state %q: %w", state, err)
	}
	return m.selectApprovals(func(r recorder.ApprovalRecord) bool {
		return state == "" || r.State == state
	}), nil
}

// ReusableApproval returns the newest approved, unused request with the
// fingerprint that expires after now, or an error wrapping
// recorder.ErrNotFound.
func (m *Memory) ReusableApproval(ctx context.Context, fingerprint string, now time.Time) (recorder.ApprovalRecord, error) {
	if err := ctx.Err(); err != nil {
		return recorder.ApprovalRecord{}, fmt.Errorf("recordertest: find reusable approval for %q: %w", fingerprint, err)
	}
	found := m.selectApprovals(func(r recorder.ApprovalRecord) bool {
		return r.State == stateApproved && !r.Used && r.Fingerprint == fingerprint && r.ExpiresAt.After(now)
	})
	if len(found) == 0 {
		return recorder.ApprovalRecord{}, fmt.Errorf("recordertest: find reusable approval for %q: %w",
			fingerprint, recorder.ErrNotFound)
	}
	return found[0], nil
}

// selectApprovals returns copies of the requests keep accepts, newest created
// first, ties broken by descending ID (the SQLite store's order).
func (m *Memory) selectApprovals(keep func(recorder.ApprovalRecord) bool) []recorder.ApprovalRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []recorder.ApprovalRecord{}
	for _, r := range m.approvals {
		if keep(r) {
			out = append(out, normalize(r))
		}
	}
	slices.SortFunc(out, func(a, b recorder.ApprovalRecord) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out
}

// normalize returns r with its times in UTC (as the SQLite store returns
// them) and its own copy of Body, so callers and the store never share it.
func normalize(r recorder.ApprovalRecord) recorder.ApprovalRecord {
	r.CreatedAt, r.ExpiresAt = r.CreatedAt.UTC(), r.ExpiresAt.UTC()
	r.Body = append([]byte{}, r.Body...)
	return r
}
