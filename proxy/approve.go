package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/proxy/approval"
	"github.com/regate/regate/recorder"
)

// awaitApproval holds an allowed command whose decision asks for approval:
// an unused earlier approval of the same request lets it through once;
// otherwise it is stored, announced (onWait) and waited for. Every step is
// recorded in the session's chain.
func (c *Command) awaitApproval(ctx context.Context, in *parse.Input) {
	s, d := c.s, c.Decision
	b := s.p.Approvals
	text, params, summary := in.CommandText()
	who := approval.Person{Subject: s.Identity.Subject, Issuer: s.Identity.Issuer,
		Email: s.Identity.Email, Groups: s.Identity.Groups}
	fp := approval.Fingerprint(who, s.Target.Name, text, params)
	if prior, err := b.Reuse(ctx, fp); err != nil {
		c.fail(ctx, "cannot check earlier approvals: "+err.Error())
		return
	} else if prior != nil {
		c.recordApproval(ctx, *prior, "reused")
		return
	}
	req, err := b.Ask(ctx, approval.Request{
		SessionID: s.ID, CommandEventID: c.EventID, DecisionID: d.ID,
		Target: s.Target.Name, Protocol: s.Target.Protocol, Requester: who,
		Command: text, Summary: summary, Reasons: d.Reasons,
		Reason: d.Approval.Reason, Groups: d.Approval.Groups, Fingerprint: fp,
	})
	if err != nil {
		c.fail(ctx, err.Error())
		return
	}
	c.Approval = &req
	if !c.recordApproval(ctx, req, "requested") {
		return
	}
	if s.OnApprovalWait != nil {
		s.OnApprovalWait(req)
	}
	got, err := b.Wait(ctx, req.ID)
	c.Approval = &got
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		c.fail(ctx, fmt.Sprintf("approval %s: %v", req.ID, err))
	case got.State == approval.Approved:
		c.recordApproval(ctx, got, "approved")
	case got.State == approval.Denied:
		c.recordApproval(ctx, got, "denied")
		c.refuse(fmt.Sprintf("regate: blocked: approval %s was denied by %s: %s", got.ID, got.DecidedBy.Subject, orNone(got.Comment)))
	default:
		c.recordApproval(ctx, got, "timed_out")
		c.refuse(fmt.Sprintf("regate: blocked: approval %s is still pending (approvers: %s); "+
			"once it is approved (regate approve %s), run the same statement again within %s",
			got.ID, strings.Join(got.Groups, ", "), got.ID, b.TTL()))
	}
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

func (c *Command) refuse(msg string) {
	if c.Allowed {
		c.s.allowed.Add(-1)
		c.s.blocked.Add(1)
	}
	c.Allowed = false
	c.Message = msg
}

func (c *Command) fail(ctx context.Context, why string) {
	c.s.p.logger().Error("approval failed; the command is blocked", "session_id", c.s.ID, "error", why)
	c.refuse("regate: blocked: " + why)
}

// recordApproval appends an approval event; a failure blocks the command.
func (c *Command) recordApproval(ctx context.Context, r approval.Request, step string) bool {
	s := c.s
	ev := s.event(recorder.TypeApproval, s.p.now())
	ev.Ref = c.EventID
	info := &recorder.ApprovalInfo{ID: r.ID, Step: step, Groups: r.Groups, Reason: r.Reason, Comment: r.Comment}
	if r.DecidedBy != nil {
		info.Approver, info.ApproverIssuer = r.DecidedBy.Subject, r.DecidedBy.Issuer
	}
	ev.Approval = info
	if err := s.p.Recorder.Append(context.WithoutCancel(ctx), ev); err != nil {
		c.fail(ctx, "the approval cannot be recorded: "+err.Error())
		return false
	}
	return true
}
