package recorder

import (
	"context"
	"encoding/json"
	"time"

	"github.com/regate/regate/policies/decision"
)

// Event types.
const (
	TypeSessionStart = "session_start"
	TypeSessionEnd   = "session_end"
	TypeAuthFailure  = "auth_failure"
	// TypeCommand is written before a command is forwarded: input and decision.
	TypeCommand = "command"
	// TypeOutcome is written once the target answered (or the command was
	// blocked); Ref names the command event it completes.
	TypeOutcome = "outcome"
	// TypeApproval is written when a command asks for human approval, when the
	// approval is decided or the wait ends, and when an earlier approval is
	// used; Ref names the command event.
	TypeApproval = "approval"
	// TypeCancel is a client's cancel request: forwarded (to the session it
	// cancels) or dropped for a wrong key (in a session of its own).
	TypeCancel = "cancel"
)

// Event is one record. Seq, PrevHash and Hash are assigned by the store when
// the event is appended; everything else is set by the caller.
type Event struct {
	Seq       int64     `json:"seq"`
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`
	SessionID string    `json:"session_id"`
	Protocol  string    `json:"protocol,omitempty"`
	Target    string    `json:"target,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	// Ref is the ID of the event this one completes (an outcome's command).
	Ref string `json:"ref,omitempty"`
	// Input is the input document (parse.Input) as JSON, for command events.
	Input json.RawMessage `json:"input,omitempty"`
	// Decision is set for command events.
	Decision *decision.Decision `json:"decision,omitempty"`
	// Outcome is set for outcome, auth_failure and session_end events.
	Outcome *Outcome `json:"outcome,omitempty"`
	// Session carries session details on session_start and session_end.
	Session *SessionInfo `json:"session,omitempty"`
	// Approval is set for approval events.
	Approval *ApprovalInfo `json:"approval,omitempty"`

	PrevHash string `json:"prev_hash"`
	Hash     string `json:"-"`

	// canonInput is Input when SetCanonicalInput set it: Encode then copies
	// it instead of compacting it again.
	canonInput []byte
}

// SetCanonicalInput sets Input to raw, which must be as json.Marshal writes
// it (json.Marshal's own output, or an encoder's that matches it byte for
// byte, like parse.InputEncoder's): Encode copies it into the body as it is
// instead of validating and compacting it again. raw must not be modified
// afterwards.
func (ev *Event) SetCanonicalInput(raw []byte) {
	ev.Input = raw
	ev.canonInput = raw
}

// canonicalInput reports whether Input is still what SetCanonicalInput set.
func (ev *Event) canonicalInput() bool {
	return len(ev.Input) > 0 && len(ev.canonInput) == len(ev.Input) && &ev.canonInput[0] == &ev.Input[0]
}

// Outcome is what happened to a command, or why a session or login ended.
type Outcome struct {
	// Status is "ok", "error" (the target answered with an error), "blocked"
	// (regate refused it), or "failed" (the connection broke before an answer).
	Status string `json:"status"`
	// Tags are the command tags the target returned (one per statement).
	Tags []string `json:"tags,omitempty"`
	// Rows is the total row count reported by the command tags.
	Rows int64 `json:"rows,omitempty"`
	// Error is the error message (with SQLSTATE for Postgres) or refusal reason.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
	// Masked counts the values masked per column ("table.column" when the
	// source table is known, else the result column name). Raw values are
	// never recorded.
	Masked map[string]int64 `json:"masked,omitempty"`
}

// Outcome statuses.
const (
	StatusOK      = "ok"
	StatusError   = "error"
	StatusBlocked = "blocked"
	StatusFailed  = "failed"
)

// SessionInfo is recorded at session start and end.
type SessionInfo struct {
	ClientAddr string   `json:"client_addr,omitempty"`
	Issuer     string   `json:"issuer,omitempty"`
	Groups     []string `json:"groups,omitempty"`
	Database   string   `json:"database,omitempty"`
	User       string   `json:"user,omitempty"`
	// Commands, Allowed and Blocked count the session's commands (session_end).
	Commands int64 `json:"commands,omitempty"`
	Allowed  int64 `json:"allowed,omitempty"`
	Blocked  int64 `json:"blocked,omitempty"`
}

// Appender is what the proxy pipeline needs of a store.
type Appender interface {
	// Append durably writes ev (assigning Seq, PrevHash and Hash) and returns
	// only once it is stored, or with the error that prevented it.
	Append(ctx context.Context, ev *Event) error
}

// ApprovalInfo is an approval event: a request, its decision or its use.
type ApprovalInfo struct {
	ID string `json:"id"`
	// Step is "requested", "approved", "denied", "timed_out" or "reused".
	Step   string   `json:"step"`
	Groups []string `json:"groups,omitempty"`
	Reason string   `json:"reason,omitempty"`
	// Approver is who decided (approved or denied), and Comment their reason.
	Approver       string `json:"approver,omitempty"`
	ApproverIssuer string `json:"approver_issuer,omitempty"`
	Comment        string `json:"comment,omitempty"`
}
