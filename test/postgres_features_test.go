package test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/regate/regate/test/testenv"
)

// ---------------------------------------------------------------------------
// Records

// recEvent is the part of a `regate replay --json` event these tests read.
type recEvent struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Ref       string `json:"ref"`
	SessionID string `json:"session_id"`
	Input     struct {
		Postgres struct {
			Query      string `json:"query"`
			Statements []struct {
				Command string         `json:"command"`
				Node    string         `json:"node"`
				AST     map[string]any `json:"ast"`
			} `json:"statements"`
		} `json:"postgres"`
	} `json:"input"`
	Decision *struct {
		Allow   bool                                 `json:"allow"`
		Reasons []string                             `json:"reasons"`
		Bundles map[string]struct{ Revision string } `json:"bundles"`
	} `json:"decision"`
	Outcome *struct {
		Status string   `json:"status"`
		Tags   []string `json:"tags"`
		Rows   int64    `json:"rows"`
		Error  string   `json:"error"`
		Code   string   `json:"code"`
	} `json:"outcome"`
}

// sessionRow is the part of a `regate sessions --json` row these tests read.
type sessionRow struct {
	ID       string     `json:"id"`
	Subject  string     `json:"subject"`
	Target   string     `json:"target"`
	End      *time.Time `json:"end"`
	Commands int        `json:"commands"`
	Allowed  int        `json:"allowed"`
	Blocked  int        `json:"blocked"`
}

// listSessions lists the gateway's recorded sessions through the CLI.
func listSessions(t *testing.T, gw *testenv.Gateway) []sessionRow {
	t.Helper()
	out, errOut, code := testenv.Run(t, "sessions", "--json", "--store", gw.Store)
	if code != 0 {
		t.Fatalf("sessions: %d %s", code, errOut)
	}
	var sessions []sessionRow
	if err := json.Unmarshal([]byte(out), &sessions); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	return sessions
}

// records reads every session's events through the CLI.
func records(t *testing.T, gw *testenv.Gateway) []recEvent {
	t.Helper()
	var all []recEvent
	for _, s := range listSessions(t, gw) {
		out, errOut, code := testenv.Run(t, "replay", s.ID, "--json", "--store", gw.Store)
		if code != 0 {
			t.Fatalf("replay %s: %d %s", s.ID, code, errOut)
		}
		var evs []recEvent
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatalf("replay --json: %v\n%s", err, out)
		}
		all = append(all, evs...)
	}
	return all
}

// findCommand returns the last command event whose query matches, and its
// outcome event (nil when none).
//
// An outcome is committed shortly after the answer reaches the client (it
// shares the next commit, at most a few ms later), so a command found
// without its outcome is looked up again for up to 10 s.
func findCommand(t *testing.T, gw *testenv.Gateway, match func(query string) bool) (cmd, out *recEvent) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		cmd, out = findCommandOnce(t, gw, match)
		if cmd == nil || out != nil || time.Now().After(deadline) {
			return cmd, out
		}
	}
}

func findCommandOnce(t *testing.T, gw *testenv.Gateway, match func(query string) bool) (cmd, out *recEvent) {
	t.Helper()
	evs := records(t, gw)
	for i := range evs {
		if evs[i].Type == "command" && match(evs[i].Input.Postgres.Query) {
			cmd = &evs[i]
		}
	}
	if cmd == nil {
		return nil, nil
	}
	for i := range evs {
		if evs[i].Type == "outcome" && evs[i].Ref == cmd.ID {
			out = &evs[i]
		}
	}
	return cmd, out
}

func outcomeOf(e *recEvent) any {
	if e == nil {
		return nil
	}
	return e.Outcome
}

// backends starts PostgreSQL with the customers table and an issuer.
func backends(t *testing.T) (*testenv.Postgres, *testenv.Issuer) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.customers (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL);
		INSERT INTO public.customers VALUES (1, 'ann@example.com', 'Ann'), (2, 'bob@example.com', 'Bob'), (3, 'cy@example.com', 'Cy');
		ALTER TABLE public.customers OWNER TO app;`)
	return pg, testenv.StartIssuer(t)
}
