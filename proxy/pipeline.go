package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/proxy/approval"
	"github.com/regate/regate/recorder"
)

// Authenticator verifies a client's OIDC token. proxy/identity.Verifier
// implements it.
type Authenticator interface {
	Verify(ctx context.Context, token string) (parse.Identity, error)
}

// Decider evaluates the policy for one input document. It never fails: an
// evaluation problem is a denying Decision. policies.Engine implements it.
type Decider interface {
	Decide(ctx context.Context, input *parse.Input) decision.Decision
}

// EncodedDecider is a Decider that can use the input's canonical encoding,
// which the pipeline makes anyway for the record (policies.Engine finds a
// memoized decision by it).
type EncodedDecider interface {
	DecideEncoded(ctx context.Context, input *parse.Input, enc *parse.Encoding) decision.Decision
}

// Pipeline is shared by every engine and every session. All fields except
// Logger and Now are required.
type Pipeline struct {
	Auth     Authenticator
	Decider  Decider
	Recorder recorder.Appender
	// Approvals handles decisions that ask for human approval; when nil such
	// decisions deny.
	Approvals *approval.Broker
	// Logger receives operational messages; nil discards them.
	Logger hclog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// SessionRequest is what an engine knows about a new client before it is
// authenticated.
type SessionRequest struct {
	Target     parse.Target
	ClientAddr string
	// Token is the client's OIDC token. It is verified and then forgotten: it
	// never reaches a log, an input document or a record.
	Token string
	// Details carries protocol-specific session facts (database, user) for the
	// session_start record.
	Details recorder.SessionInfo
	// Login is the account name the client asked for in its protocol's own
	// handshake (a PostgreSQL startup user, an SSH user); "" when the
	// protocol has none. It must be one of Logins or one of the verified
	// identity's own names (subject, email, preferred_username), as a
	// server refuses a role it does not know.
	Login string
	// Logins are the other names Login may be: the account regate uses on
	// the target and the target's configured client_users; "*" accepts any.
	Logins []string
}

// AuthError is returned by Open when the client could not be authenticated
// (Login false) or asked for an account it may not use (Login true). Reason
// is safe to show to the client.
type AuthError struct {
	Reason string
	Login  bool
}

func (e *AuthError) Error() string { return "authentication failed: " + e.Reason }

// Validate reports the first missing required field.
func (p *Pipeline) Validate() error {
	switch {
	case p.Auth == nil:
		return errors.New("proxy: Pipeline.Auth is required")
	case p.Decider == nil:
		return errors.New("proxy: Pipeline.Decider is required")
	case p.Recorder == nil:
		return errors.New("proxy: Pipeline.Recorder is required")
	}
	return nil
}

func (p *Pipeline) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

func (p *Pipeline) logger() hclog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return hclog.NewNullLogger()
}

// Open authenticates a client and records the start of its session. On a bad
// token it records an auth_failure event and returns an *AuthError. If the
// session start cannot be recorded the session is refused.
func (p *Pipeline) Open(ctx context.Context, req SessionRequest) (*Session, error) {
	id := NewID()
	now := p.now()
	ident, err := p.Auth.Verify(ctx, req.Token)
	if err != nil {
		return nil, p.authFailure(ctx, req, id, now, parse.Identity{}, &AuthError{Reason: err.Error()})
	}
	if reason := loginRefusal(req, ident); reason != "" {
		return nil, p.authFailure(ctx, req, id, now, ident, &AuthError{Reason: reason, Login: true})
	}
	s := &Session{
		p: p, ID: id, Identity: ident, Target: req.Target,
		ClientAddr: req.ClientAddr, StartedAt: now, details: req.Details,
	}
	ev := s.event(recorder.TypeSessionStart, now)
	ev.Session = sessionInfo(req, ident)
	if err := p.Recorder.Append(ctx, ev); err != nil {
		return nil, fmt.Errorf("cannot record the session start, so the session is refused: %w", err)
	}
	p.logger().Info("session started", "session_id", id, "target", req.Target.Name,
		"subject", ident.Subject, "client_addr", req.ClientAddr)
	return s, nil
}

// authFailure records a refused login as an auth_failure event (the reason,
// never the token) and returns ae.
func (p *Pipeline) authFailure(ctx context.Context, req SessionRequest, id string, now time.Time,
	ident parse.Identity, ae *AuthError) error {
	ev := &recorder.Event{
		ID: NewID(), Time: now, Type: recorder.TypeAuthFailure, SessionID: id,
		Protocol: req.Target.Protocol, Target: req.Target.Name, Subject: ident.Subject,
		Session: sessionInfo(req, ident),
		Outcome: &recorder.Outcome{Status: recorder.StatusBlocked, Error: ae.Reason},
	}
	if rerr := p.Recorder.Append(ctx, ev); rerr != nil {
		p.logger().Error("cannot record an authentication failure", "session_id", id, "error", rerr)
	}
	p.logger().Info("client authentication failed", "session_id", id, "target", req.Target.Name,
		"client_addr", req.ClientAddr, "subject", ident.Subject, "reason", ae.Reason)
	return ae
}

// loginRefusal says why req.Login may not be used by ident, or returns "".
func loginRefusal(req SessionRequest, ident parse.Identity) string {
	if req.Login == "" {
		return ""
	}
	names := slices.Clone(req.Logins)
	names = append(names, ident.Subject, ident.Email)
	if u, ok := ident.Claims["preferred_username"].(string); ok {
		names = append(names, u)
	}
	var accepted []string
	for _, n := range names {
		if n == "*" || n == req.Login {
			return ""
		}
		if n != "" && !slices.Contains(accepted, n) {
			accepted = append(accepted, n)
		}
	}
	quoted := make([]string, len(accepted))
	for i, n := range accepted {
		quoted[i] = strconv.Quote(n)
	}
	return fmt.Sprintf("user %q is not accepted on target %q: connect as %s (the target's account "+
		"or your own identity)", req.Login, req.Target.Name, strings.Join(quoted, " or "))
}

func sessionInfo(req SessionRequest, ident parse.Identity) *recorder.SessionInfo {
	info := req.Details
	info.ClientAddr = req.ClientAddr
	info.Issuer = ident.Issuer
	info.Groups = ident.Groups
	return &info
}

// Session is one authenticated client connection.
type Session struct {
	p          *Pipeline
	ID         string
	Identity   parse.Identity
	Target     parse.Target
	ClientAddr string
	StartedAt  time.Time
	details    recorder.SessionInfo

	// OnApprovalWait, set by the engine, tells the client that its command
	// waits for approval (a Postgres NoticeResponse, for example).
	OnApprovalWait func(approval.Request)

	// enc encodes the session's input documents for the record (it keeps
	// the encoding of the parts every request shares).
	encMu sync.Mutex
	enc   parse.InputEncoder

	commands, allowed, blocked atomic.Int64
	pending                    sync.WaitGroup
	closeOnce                  sync.Once
}

// Input returns the input document for a new request of this session, with
// every field but the protocol object filled in.
func (s *Session) Input() parse.Input {
	return parse.Input{
		Version:  parse.SchemaVersion,
		Protocol: s.Target.Protocol,
		Time:     s.p.now(),
		Identity: s.Identity,
		Target:   s.Target,
		Session:  parse.Session{ID: s.ID, ClientAddr: s.ClientAddr, StartedAt: s.StartedAt},
	}
}

func (s *Session) event(typ string, t time.Time) *recorder.Event {
	return &recorder.Event{
		ID: newEventID(), Time: t, Type: typ, SessionID: s.ID,
		Protocol: s.Target.Protocol, Target: s.Target.Name, Subject: s.Identity.Subject,
	}
}

// Close records the end of the session once every outcome is recorded. It is
// safe to call more than once; reason says why the session ended ("" for a
// normal end).
func (s *Session) Close(ctx context.Context, reason string) {
	s.closeOnce.Do(func() {
		s.pending.Wait()
		ev := s.event(recorder.TypeSessionEnd, s.p.now())
		info := s.details
		info.Commands, info.Allowed, info.Blocked = s.commands.Load(), s.allowed.Load(), s.blocked.Load()
		ev.Session = &info
		status := recorder.StatusOK
		if reason != "" {
			status = recorder.StatusFailed
		}
		ev.Outcome = &recorder.Outcome{Status: status, Error: reason}
		if err := s.p.Recorder.Append(ctx, ev); err != nil {
			s.p.logger().Error("cannot record the session end", "session_id", s.ID, "error", err)
		}
		s.p.logger().Info("session ended", "session_id", s.ID, "commands", info.Commands,
			"blocked", info.Blocked, "reason", reason)
	})
}

// newEventID returns a 128-bit event identifier in hex: the current time in
// nanoseconds (64 bits), then 64 random bits. Events created one after the
// other get increasing IDs, so the store's unique index on event IDs grows at
// its end (one page written per commit) instead of at a random page per event.
func newEventID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	if _, err := rand.Read(b[8:]); err != nil {
		return NewID()
	}
	return hex.EncodeToString(b[:])
}

// NewID returns a random 128-bit identifier in hex.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on supported platforms; fall back to time.
		return fmt.Sprintf("%032x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b[:])
}
