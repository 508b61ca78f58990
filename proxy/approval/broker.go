package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/recorder"
)

// Config configures a Broker.
type Config struct {
	// Store persists requests. Required.
	Store recorder.ApprovalStore
	// Wait is how long a command waits for a decision; 60 s when zero.
	Wait time.Duration
	// TTL is how long a request stays open, and how long an approval that
	// came after the wait can be used; 15 min when zero.
	TTL time.Duration
	// Notify, when set, is called (in its own goroutine) for every new request.
	Notify func(Request)
	// Poll is how often a waiting command checks the store for a decision
	// made by another gateway; 1 s when zero.
	Poll   time.Duration
	Logger hclog.Logger
	Now    func() time.Time
}

// Broker creates, waits for and decides approval requests.
type Broker struct {
	cfg     Config
	mu      sync.Mutex
	waiters map[string][]chan struct{}
}

// Errors callers branch on.
var (
	ErrNotFound   = errors.New("no such approval request")
	ErrNotPending = errors.New("the approval request is no longer pending")
	ErrForbidden  = errors.New("not allowed to decide this approval request")
)

// New validates cfg and fills its defaults.
func New(cfg Config) (*Broker, error) {
	if cfg.Store == nil {
		return nil, errors.New("approval: Store is required")
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 60 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 15 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Broker{cfg: cfg, waiters: map[string][]chan struct{}{}}, nil
}

// Wait returns the configured wait.
func (b *Broker) WaitDuration() time.Duration { return b.cfg.Wait }

// TTL returns the configured TTL.
func (b *Broker) TTL() time.Duration { return b.cfg.TTL }

func (b *Broker) now() time.Time { return b.cfg.Now().UTC() }

// Ask stores a new pending request (filling ID, State and times) and notifies.
func (b *Broker) Ask(ctx context.Context, r Request) (Request, error) {
	r.ID, r.State = newID(), Pending
	r.CreatedAt = b.now()
	r.ExpiresAt = r.CreatedAt.Add(b.cfg.TTL)
	r.Groups = slices.Clone(r.Groups)
	if err := b.cfg.Store.CreateApproval(ctx, toRecord(r)); err != nil {
		return Request{}, fmt.Errorf("cannot store the approval request: %w", err)
	}
	b.cfg.Logger.Info("approval requested", "approval_id", r.ID, "session_id", r.SessionID,
		"subject", r.Requester.Subject, "groups", r.Groups)
	if b.cfg.Notify != nil {
		go b.cfg.Notify(r)
	}
	return r, nil
}

// Wait blocks until the request is decided, the wait ends or ctx is done, and
// returns the request as it then is (still pending when the wait ended). An
// approved request is consumed by this call, so it lets one command through.
func (b *Broker) Wait(ctx context.Context, id string) (Request, error) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	b.waiters[id] = append(b.waiters[id], ch)
	b.mu.Unlock()
	defer b.removeWaiter(id, ch)
	deadline := time.NewTimer(b.cfg.Wait)
	defer deadline.Stop()
	poll := time.NewTicker(b.cfg.Poll)
	defer poll.Stop()
	for {
		r, err := b.Get(ctx, id)
		if err != nil {
			return Request{}, err
		}
		if r.State == Approved {
			return b.consume(ctx, r)
		}
		if r.State != Pending {
			return r, nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			return r, nil
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}
}

func (b *Broker) removeWaiter(id string, ch chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.waiters[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(b.waiters, id)
	} else {
		b.waiters[id] = list
	}
}

func (b *Broker) wake(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.waiters[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// consume marks an approved request used; only one caller wins.
func (b *Broker) consume(ctx context.Context, r Request) (Request, error) {
	used := r
	used.Used = true
	if err := b.cfg.Store.UpdateApproval(ctx, Approved, false, toRecord(used)); err != nil {
		if errors.Is(err, recorder.ErrConflict) {
			return r, fmt.Errorf("approval %s was already used", r.ID)
		}
		return r, fmt.Errorf("cannot record the use of approval %s: %w", r.ID, err)
	}
	return used, nil
}

// Reuse finds an approval of the same request (by fingerprint) that came
// after its wait ended, is unused and still valid, and consumes it.
func (b *Broker) Reuse(ctx context.Context, fingerprint string) (*Request, error) {
	rec, err := b.cfg.Store.ReusableApproval(ctx, fingerprint, b.now())
	if errors.Is(err, recorder.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot look up earlier approvals: %w", err)
	}
	r, err := fromRecord(rec)
	if err != nil {
		return nil, err
	}
	used, err := b.consume(ctx, r)
	if err != nil {
		return nil, nil // someone else used it first; ask again
	}
	return &used, nil
}

// Get returns a request, expiring it first when its time is up.
func (b *Broker) Get(ctx context.Context, id string) (Request, error) {
	rec, err := b.cfg.Store.Approval(ctx, id)
	if errors.Is(err, recorder.ErrNotFound) {
		return Request{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Request{}, fmt.Errorf("cannot read approval %s: %w", id, err)
	}
	r, err := fromRecord(rec)
	if err != nil {
		return Request{}, err
	}
	if r.State == Pending && !b.now().Before(r.ExpiresAt) {
		exp := r
		exp.State = Expired
		if err := b.cfg.Store.UpdateApproval(ctx, Pending, false, toRecord(exp)); err == nil {
			return exp, nil
		}
		return b.Get(ctx, id)
	}
	return r, nil
}

// List returns requests in a state ("" for all), newest first.
func (b *Broker) List(ctx context.Context, state string) ([]Request, error) {
	recs, err := b.cfg.Store.Approvals(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("cannot list approvals: %w", err)
	}
	out := []Request{}
	for _, rec := range recs {
		r, err := b.Get(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	return out, nil
}

// Approve approves a pending request. The approver must be in one of its
// groups and must not be the requester.
func (b *Broker) Approve(ctx context.Context, id string, approver Person, comment string) (Request, error) {
	return b.decide(ctx, id, approver, comment, Approved)
}

// Deny denies a pending request, with the same rules as Approve.
func (b *Broker) Deny(ctx context.Context, id string, approver Person, comment string) (Request, error) {
	return b.decide(ctx, id, approver, comment, Denied)
}

func (b *Broker) decide(ctx context.Context, id string, who Person, comment, state string) (Request, error) {
	r, err := b.Get(ctx, id)
	if err != nil {
		return Request{}, err
	}
	switch {
	case r.State != Pending:
		return r, fmt.Errorf("%w: %s is %s", ErrNotPending, id, r.State)
	case who.Same(r.Requester):
		return r, fmt.Errorf("%w: %s cannot decide their own request", ErrForbidden, who.Subject)
	case !inGroups(who, r.Groups):
		return r, fmt.Errorf("%w: %s is not in any of the approver groups %v", ErrForbidden, who.Subject, r.Groups)
	}
	now := b.now()
	d := r
	d.State, d.DecidedBy, d.DecidedAt, d.Comment = state, &who, &now, comment
	if state == Approved {
		d.ExpiresAt = now.Add(b.cfg.TTL) // a late approval can be used within the TTL
	}
	if err := b.cfg.Store.UpdateApproval(ctx, Pending, false, toRecord(d)); err != nil {
		if errors.Is(err, recorder.ErrConflict) {
			return r, fmt.Errorf("%w: %s was decided concurrently", ErrNotPending, id)
		}
		return r, fmt.Errorf("cannot store the decision on %s: %w", id, err)
	}
	b.cfg.Logger.Info("approval decided", "approval_id", id, "state", state, "approver", who.Subject)
	b.wake(id)
	return d, nil
}

func toRecord(r Request) recorder.ApprovalRecord {
	body, _ := json.Marshal(r)
	return recorder.ApprovalRecord{ID: r.ID, State: r.State, Fingerprint: r.Fingerprint,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, Used: r.Used, Body: body}
}

func fromRecord(rec recorder.ApprovalRecord) (Request, error) {
	var r Request
	if err := json.Unmarshal(rec.Body, &r); err != nil {
		return Request{}, fmt.Errorf("cannot decode approval %s: %w", rec.ID, err)
	}
	r.State, r.Used = rec.State, rec.Used
	return r, nil
}
