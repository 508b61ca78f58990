package proxy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/proxy/approval"
	"github.com/regate/regate/recorder"
)

// Command is one decided request. When Allowed is false the engine must refuse
// it with Message; either way it reports what happened with Done.
type Command struct {
	s        *Session
	EventID  string
	Decision decision.Decision
	// Allowed is true only when the policy allowed the request and the command
	// event was durably recorded.
	Allowed bool
	// Message is the refusal text for the client when Allowed is false, e.g.
	// "regate: blocked by policy: DROP is not allowed".
	Message string
	// Approval is the approval request the command waited for, if any.
	Approval *approval.Request
	done     bool
}

// Authorize decides in and records the command event. It returns only after
// the event is stored, so a command is never forwarded unrecorded: a store
// failure turns the command into a refusal.
func (s *Session) Authorize(ctx context.Context, in *parse.Input) *Command {
	// The input is encoded once, for the decider and the record.
	s.encMu.Lock()
	enc, encErr := s.enc.EncodeParts(in)
	s.encMu.Unlock()
	var d decision.Decision
	if ed, ok := s.p.Decider.(EncodedDecider); ok && encErr == nil {
		d = ed.DecideEncoded(ctx, in, &enc)
	} else {
		d = s.p.Decider.Decide(ctx, in)
	}
	c := &Command{s: s, Decision: d, Allowed: d.Allow}
	if !d.Allow {
		c.Message = "regate: blocked by policy: " + reasonText(d)
	} else if d.Approval != nil && s.p.Approvals == nil {
		// Fail closed: an obligation regate cannot carry out must not be
		// dropped silently.
		c.Allowed = false
		c.Message = "regate: blocked: the policy requires human approval, but no approval broker is configured"
	}
	c.recordEncoded(ctx, in.Time, enc.JSON, encErr)
	if c.Allowed && d.Approval != nil {
		c.awaitApproval(ctx, in)
	}
	return c
}

// Refuse records a command that regate refuses before asking the policy (for
// example SQL that does not parse). reason is shown to the client and stored.
func (s *Session) Refuse(ctx context.Context, in *parse.Input, reason string) *Command {
	d := decision.Decision{ID: decision.NewID(), Reasons: []string{reason}, Error: reason}
	c := &Command{s: s, Decision: d, Message: "regate: blocked: " + reason}
	c.record(ctx, in)
	return c
}

func (c *Command) record(ctx context.Context, in *parse.Input) {
	s := c.s
	s.encMu.Lock()
	raw, err := s.enc.Encode(in)
	s.encMu.Unlock()
	c.recordEncoded(ctx, in.Time, raw, err)
}

// recordEncoded records the command event for the input whose encoding is
// raw (or whose encoding failed with err), made at t.
func (c *Command) recordEncoded(ctx context.Context, t time.Time, raw []byte, err error) {
	s := c.s
	s.commands.Add(1)
	ev := s.event(recorder.TypeCommand, t)
	c.EventID = ev.ID
	ev.Decision = &c.Decision
	if err == nil {
		ev.SetCanonicalInput(raw)
		err = s.p.Recorder.Append(ctx, ev)
	}
	if err != nil {
		s.p.logger().Error("cannot record a command; it is blocked", "session_id", s.ID,
			"decision_id", c.Decision.ID, "error", err)
		c.Allowed = false
		c.Message = fmt.Sprintf("regate: blocked: the command cannot be recorded (%v)", err)
	}
	if c.Allowed {
		s.allowed.Add(1)
	} else {
		s.blocked.Add(1)
	}
}

// Deny turns an allowed command into a refusal after the fact (before it is
// forwarded), for a reason the engine found, such as a mask obligation it
// cannot apply. The reason is recorded with the command's outcome.
func (c *Command) Deny(ctx context.Context, reason string) {
	if c.Allowed {
		c.refuse("regate: blocked: " + reason)
	}
}

func reasonText(d decision.Decision) string {
	if len(d.Reasons) == 0 {
		return "the policy did not allow this request"
	}
	return strings.Join(d.Reasons, "; ")
}

// Done records the outcome of the command without holding up the caller. The
// session's end is recorded only after every outcome. Calling Done twice is a
// no-op.
func (c *Command) Done(ctx context.Context, out recorder.Outcome) {
	if c == nil || c.done {
		return
	}
	c.done = true
	s := c.s
	ev := s.event(recorder.TypeOutcome, s.p.now())
	ev.Ref = c.EventID
	ev.Outcome = &out
	s.pending.Add(1)
	then := func(err error) {
		defer s.pending.Done()
		if err != nil {
			s.p.logger().Error("cannot record a command outcome", "session_id", s.ID,
				"decision_id", c.Decision.ID, "error", err)
		}
	}
	ctx = context.WithoutCancel(ctx)
	if d, ok := s.p.Recorder.(deferredAppender); ok {
		d.AppendDeferred(ctx, ev, then)
		return
	}
	go func() { then(s.p.Recorder.Append(ctx, ev)) }()
}

// deferredAppender is implemented by stores that append without making the
// caller wait and may hold an append back briefly so that it shares the
// commit of the next one (recorder's SQLite store): an outcome needs no
// commit of its own, nothing waits on it to go ahead.
type deferredAppender interface {
	AppendDeferred(ctx context.Context, ev *recorder.Event, then func(error))
}
