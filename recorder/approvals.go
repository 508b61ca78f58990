package recorder

import (
	"context"
	"errors"
	"time"
)

// ApprovalRecord is one stored approval request. The recorder stores it
// without interpreting Body (proxy/approval's JSON encoding of the request);
// State, Fingerprint and the times are columns so requests can be found.
type ApprovalRecord struct {
	ID          string
	State       string // pending, approved, denied, expired
	Fingerprint string
	CreatedAt   time.Time
	// ExpiresAt is when a pending request expires, or when an approved one
	// can no longer be used.
	ExpiresAt time.Time
	// Used is set once an approved request has let its command through.
	Used bool
	Body []byte
}

// ErrNotFound is returned for an approval id the store does not hold.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when an approval is not in the state a change
// expected (someone else decided it first).
var ErrConflict = errors.New("changed concurrently")

// ApprovalStore persists approval requests. Several gateways may share one
// store, so every change is a compare-and-set on the current state.
type ApprovalStore interface {
	// CreateApproval stores a new request; its ID must be unused.
	CreateApproval(ctx context.Context, r ApprovalRecord) error
	// Approval returns one request, or ErrNotFound.
	Approval(ctx context.Context, id string) (ApprovalRecord, error)
	// Approvals lists requests in the given state ("" for all), newest first.
	Approvals(ctx context.Context, state string) ([]ApprovalRecord, error)
	// UpdateApproval replaces the request with id if its stored state is
	// fromState and its Used flag is fromUsed; otherwise ErrConflict (or
	// ErrNotFound).
	UpdateApproval(ctx context.Context, fromState string, fromUsed bool, r ApprovalRecord) error
	// ReusableApproval returns the newest approved, unused request with the
	// fingerprint whose ExpiresAt is after now, or ErrNotFound.
	ReusableApproval(ctx context.Context, fingerprint string, now time.Time) (ApprovalRecord, error)
}
