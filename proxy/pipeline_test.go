package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/recorder"
	"github.com/regate/regate/recorder/recordertest"
)

// staticAuth accepts one token.
type staticAuth struct{ token string }

func (a staticAuth) Verify(_ context.Context, tok string) (parse.Identity, error) {
	if tok != a.token {
		return parse.Identity{}, errors.New("token signature does not verify")
	}
	return parse.Identity{Subject: "agent-7", Issuer: "https://idp.test", Groups: []string{"agents"}}, nil
}

// staticDecider allows everything except queries containing "DROP"; "APPROVE"
// allows with an approval obligation.
type staticDecider struct{}

func (staticDecider) Decide(_ context.Context, in *parse.Input) decision.Decision {
	switch q := in.Postgres.Query; {
	case strings.Contains(q, "DROP"):
		return decision.Decision{ID: "d-deny", Reasons: []string{"no DROP"}}
	case strings.Contains(q, "APPROVE"):
		return decision.Decision{ID: "d-appr", Allow: true, Approval: &decision.Approval{Groups: []string{"dba"}}}
	}
	return decision.Decision{ID: "d-allow", Allow: true}
}

func newPipeline() (*Pipeline, *recordertest.Memory) {
	mem := recordertest.NewMemory()
	return &Pipeline{Auth: staticAuth{"good"}, Decider: staticDecider{}, Recorder: mem}, mem
}

func input(s *Session, q string) *parse.Input {
	in := s.Input()
	in.Postgres = &parse.Postgres{Query: q}
	return &in
}

func TestPipelineRecordsEverything(t *testing.T) {
	ctx := context.Background()
	p, mem := newPipeline()
	target := parse.Target{Name: "db", Protocol: "postgres"}
	if _, err := p.Open(ctx, SessionRequest{Target: target, Token: "bad"}); err == nil {
		t.Fatal("bad token accepted")
	} else if ae := new(AuthError); !errors.As(err, &ae) || !strings.Contains(ae.Reason, "signature") {
		t.Fatalf("auth error = %v", err)
	}
	s, err := p.Open(ctx, SessionRequest{Target: target, Token: "good", ClientAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := s.Authorize(ctx, input(s, "SELECT 1"))
	no := s.Authorize(ctx, input(s, "DROP TABLE t"))
	if !ok.Allowed || no.Allowed || no.Message != "regate: blocked by policy: no DROP" {
		t.Fatalf("allowed=%v blocked=%v message=%q", ok.Allowed, !no.Allowed, no.Message)
	}
	ok.Done(ctx, recorder.Outcome{Status: recorder.StatusOK, Tags: []string{"SELECT 1"}, Rows: 1})
	no.Done(ctx, recorder.Outcome{Status: recorder.StatusBlocked})
	s.Close(ctx, "")

	var types []string
	for _, ev := range mem.All() {
		types = append(types, ev.Type)
		if strings.Contains(string(ev.Input), "good") {
			t.Fatal("the token reached a record")
		}
	}
	want := "auth_failure session_start command command outcome outcome session_end"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events = %s, want %s", got, want)
	}
	last := mem.All()[len(types)-1]
	if last.Session.Commands != 2 || last.Session.Blocked != 1 {
		t.Fatalf("session_end counts = %+v", last.Session)
	}
	var in parse.Input
	if err := json.Unmarshal(mem.All()[2].Input, &in); err != nil || in.Identity.Subject != "agent-7" || in.Postgres.Query != "SELECT 1" {
		t.Fatalf("recorded input = %+v, %v", in, err)
	}
	if res, err := mem.Verify(ctx); err != nil || !res.OK {
		t.Fatalf("verify = %+v, %v", res, err)
	}
}

// A store that cannot write blocks the command: nothing is forwarded unrecorded.
func TestPipelineFailsClosedWhenTheStoreFails(t *testing.T) {
	ctx := context.Background()
	p, mem := newPipeline()
	s, err := p.Open(ctx, SessionRequest{Target: parse.Target{Name: "db", Protocol: "postgres"}, Token: "good"})
	if err != nil {
		t.Fatal(err)
	}
	mem.FailAppends(errors.New("database or disk is full"))
	c := s.Authorize(ctx, input(s, "SELECT 1"))
	if c.Allowed || !strings.Contains(c.Message, "cannot be recorded") || !strings.Contains(c.Message, "disk is full") {
		t.Fatalf("allowed=%v message=%q", c.Allowed, c.Message)
	}
	if _, err := p.Open(ctx, SessionRequest{Target: parse.Target{Name: "db"}, Token: "good"}); err == nil {
		t.Fatal("a session opened although its start could not be recorded")
	}
}

// Obligations regate cannot carry out yet deny instead of being dropped.
func TestPipelineDeniesUnsupportedObligations(t *testing.T) {
	ctx := context.Background()
	p, _ := newPipeline()
	s, err := p.Open(ctx, SessionRequest{Target: parse.Target{Name: "db", Protocol: "postgres"}, Token: "good"})
	if err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]string{"SELECT APPROVE": "approval"} {
		c := s.Authorize(ctx, input(s, q))
		if c.Allowed || !strings.Contains(c.Message, want) {
			t.Errorf("%s: allowed=%v message=%q", q, c.Allowed, c.Message)
		}
	}
}
