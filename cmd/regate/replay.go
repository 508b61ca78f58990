package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/recorder"
)

// printReplay writes a session's events as text: every command with its
// decision (allow/deny, reasons, decision id, bundle revisions) and outcome.
func printReplay(w io.Writer, events []recorder.Event) error {
	outcomes := map[string]*recorder.Outcome{}
	for _, ev := range events {
		if ev.Type == recorder.TypeOutcome {
			outcomes[ev.Ref] = ev.Outcome
		}
	}
	for _, ev := range events {
		ts := ev.Time.Local().Format("2006-01-02 15:04:05.000")
		switch ev.Type {
		case recorder.TypeSessionStart:
			info := ev.Session
			if info == nil {
				info = &recorder.SessionInfo{}
			}
			fmt.Fprintf(w, "%s  SESSION START %s  protocol=%s target=%s subject=%s groups=%s client=%s database=%s as=%s\n",
				ts, ev.SessionID, ev.Protocol, ev.Target, ev.Subject, strings.Join(info.Groups, ","),
				info.ClientAddr, info.Database, info.User)
		case recorder.TypeAuthFailure:
			fmt.Fprintf(w, "%s  AUTH FAILURE  target=%s: %s\n", ts, ev.Target, outcomeError(ev.Outcome))
		case recorder.TypeCommand:
			printCommand(w, ts, ev, outcomes[ev.ID])
		case recorder.TypeCancel:
			fmt.Fprintf(w, "%s  CANCEL  %s\n", ts, outcomeError(ev.Outcome))
		case recorder.TypeApproval:
			printApproval(w, ts, ev.Approval)
		case recorder.TypeSessionEnd:
			msg := ""
			if ev.Outcome != nil && ev.Outcome.Error != "" {
				msg = ": " + ev.Outcome.Error
			}
			fmt.Fprintf(w, "%s  SESSION END%s\n", ts, msg)
		}
	}
	return nil
}

func printCommand(w io.Writer, ts string, ev recorder.Event, out *recorder.Outcome) {
	var in parse.Input
	_ = json.Unmarshal(ev.Input, &in)
	text := ""
	if in.Postgres != nil {
		text = in.Postgres.Query
	}
	verdict := "DENY "
	d := ev.Decision
	switch {
	case d != nil && d.Allow && out != nil && out.Status == recorder.StatusBlocked:
		verdict = "BLOCK" // allowed by the policy, refused by regate (e.g. a mask it cannot apply)
	case d != nil && d.Allow:
		verdict = "ALLOW"
	}
	fmt.Fprintf(w, "%s  %s  %s\n", ts, verdict, oneLine(text))
	if d != nil {
		fmt.Fprintf(w, "    decision %s  bundles %s\n", d.ID, bundleList(d))
		for _, r := range d.Reasons {
			fmt.Fprintf(w, "    reason: %s\n", r)
		}
	}
	switch {
	case out == nil:
		fmt.Fprintln(w, "    outcome: (none recorded)")
	case out.Status == recorder.StatusOK:
		fmt.Fprintf(w, "    outcome: ok %s (%d rows)\n", strings.Join(out.Tags, ", "), out.Rows)
	default:
		fmt.Fprintf(w, "    outcome: %s %s\n", out.Status, outcomeError(out))
	}
	if out != nil && len(out.Masked) > 0 {
		cols := make([]string, 0, len(out.Masked))
		for c, n := range out.Masked {
			cols = append(cols, fmt.Sprintf("%s=%d", c, n))
		}
		sort.Strings(cols)
		fmt.Fprintf(w, "    masked: %s\n", strings.Join(cols, " "))
	}
}

func outcomeError(o *recorder.Outcome) string {
	if o == nil {
		return ""
	}
	if o.Code != "" {
		return fmt.Sprintf("%s (SQLSTATE %s)", o.Error, o.Code)
	}
	return o.Error
}

func bundleList(d *decision.Decision) string {
	if len(d.Bundles) == 0 {
		return "(none)"
	}
	names := make([]string, 0, len(d.Bundles))
	for n, b := range d.Bundles {
		names = append(names, n+"@"+b.Revision)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func printApproval(w io.Writer, ts string, a *recorder.ApprovalInfo) {
	if a == nil {
		return
	}
	switch a.Step {
	case "requested":
		fmt.Fprintf(w, "%s  APPROVAL requested %s (approvers: %s): %s\n", ts, a.ID, strings.Join(a.Groups, ", "), a.Reason)
	case "approved", "denied":
		fmt.Fprintf(w, "%s  APPROVAL %s %s by %s: %s  (issuer %s)\n", ts, a.ID, a.Step, a.Approver, a.Comment, a.ApproverIssuer)
	case "reused":
		fmt.Fprintf(w, "%s  APPROVAL reused %s (approved earlier by %s)\n", ts, a.ID, a.Approver)
	default:
		fmt.Fprintf(w, "%s  APPROVAL %s %s: no decision within the wait\n", ts, a.Step, a.ID)
	}
}
