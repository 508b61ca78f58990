package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/regate/regate/test/testenv"
)

// approvalPolicy is written from the README's decision contract only.
const approvalPolicy = `package regate

import rego.v1

writes if {
	some s in input.postgres.statements
	some r in s.relations
	r.access == "write"
}

decision := {"allow": true, "approval": {"groups": ["dba"], "reason": "writes to prod need a DBA"}} if writes

decision := {"allow": true} if not writes
`

// TestApprovalThroughPsql: a write waits for a DBA; approvals, refusals,
// denials, timeouts and late approvals behave as documented, and the record
// tells who approved.
func TestApprovalThroughPsql(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 100), (2, 200);
		ALTER TABLE accounts OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	dir := t.TempDir()
	writeFile(t, dir, "policy.rego", approvalPolicy)
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{
		Issuer: iss.URL(), Audience: audience, Bundle: dir,
		Global: "admin: {listen: " + admin + "}\napproval: {wait: 6s, ttl: 15m}",
	})
	agent := iss.Token(t, "agent-7", audience, "agents")
	dba := iss.Token(t, "dana", audience, "dba")
	intern := iss.Token(t, "ivan", audience, "interns")
	cli := func(tok string, args ...string) (string, string, int) {
		return testenv.Run(t, append(args, "--addr", "http://"+admin, "--token", tok)...)
	}
	pendingID := func(t *testing.T) string {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			out, errOut, code := cli(dba, "approvals", "--json")
			if code != 0 {
				t.Fatalf("approvals: %s", errOut)
			}
			var list []struct{ ID, State, Command string }
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatal(err)
			}
			if len(list) > 0 {
				return list[0].ID
			}
		}
		t.Fatal("no pending approval appeared")
		return ""
	}
	start := func(sql string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
		host, port, _ := strings.Cut(gw.Listen, ":")
		cmd := exec.Command("psql", "-X", "-A", "-t", "-h", host, "-p", port, "-U", "agent-7", "-d", "app", "-c", sql)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+agent, "PGSSLMODE=disable")
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &o, &e
	}
	balance := func(id int) string {
		return pg.Psql(t, "app", fmt.Sprintf("SELECT balance FROM accounts WHERE id = %d", id))
	}

	t.Run("approved in time", func(t *testing.T) {
		cmd, _, stderr := start("UPDATE accounts SET balance = 150 WHERE id = 1")
		id := pendingID(t)
		if _, e, code := cli(agent, "approve", id); code == 0 || !strings.Contains(e, "own request") {
			t.Fatalf("the requester approved their own request: %d %s", code, e)
		}
		if _, e, code := cli(intern, "approve", id); code == 0 || !strings.Contains(e, "not in any of the approver groups") {
			t.Fatalf("an outsider approved: %d %s", code, e)
		}
		if out, e, code := cli(dba, "approve", id, "--reason", "ticket 42"); code != 0 || !strings.Contains(out, "approved") {
			t.Fatalf("approve: %d %s %s", code, out, e)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("psql: %v\n%s", err, stderr)
		}
		if !strings.Contains(stderr.String(), "regate: waiting for approval "+id+" (approvers: dba)") {
			t.Errorf("no waiting notice: %q", stderr)
		}
		if balance(1) != "150" {
			t.Fatal("the approved UPDATE did not run")
		}
	})
	t.Run("denied", func(t *testing.T) {
		cmd, _, stderr := start("UPDATE accounts SET balance = 0 WHERE id = 2")
		id := pendingID(t)
		if _, e, code := cli(dba, "deny", id, "--reason", "not during the freeze"); code != 0 {
			t.Fatalf("deny: %s", e)
		}
		_ = cmd.Wait()
		if !strings.Contains(stderr.String(), "denied by dana: not during the freeze") || balance(2) != "200" {
			t.Fatalf("denial: %q, balance %s", stderr, balance(2))
		}
	})
	t.Run("timeout, then a late approval passes exactly once", func(t *testing.T) {
		q := "UPDATE accounts SET balance = balance + 1 WHERE id = 2"
		cmd, _, stderr := start(q)
		id := pendingID(t)
		_ = cmd.Wait()
		if !strings.Contains(stderr.String(), "approval "+id+" is still pending") || balance(2) != "200" {
			t.Fatalf("timeout: %q", stderr)
		}
		if _, e, code := cli(dba, "approve", id); code != 0 {
			t.Fatalf("late approve: %s", e)
		}
		r := testenv.PsqlVia(t, gw.Listen, "agent-7", "app", agent, []string{q})
		if r.Code != 0 || balance(2) != "201" {
			t.Fatalf("re-run after a late approval: %d %q", r.Code, r.Err)
		}
		cmd, _, stderr = start(q) // once only: this one waits again
		second := pendingID(t)
		_ = cmd.Wait()
		if second == id || balance(2) != "201" || !strings.Contains(stderr.String(), "still pending") {
			t.Fatalf("the approval was used twice: %q", stderr)
		}
	})
	t.Run("the record tells who approved", func(t *testing.T) {
		all := ""
		for _, s := range listSessions(t, gw) {
			rep, _, _ := testenv.Run(t, "replay", s.ID, "--store", gw.Store)
			all += rep
		}
		for _, want := range []string{"APPROVAL requested", "approved by dana", "denied by dana: not during the freeze", "timed_out", "reused"} {
			if !strings.Contains(all, want) {
				t.Errorf("replays lack %q:\n%s", want, all)
			}
		}
		if out, e, code := testenv.Run(t, "verify", "--store", gw.Store); code != 0 {
			t.Fatalf("verify: %s %s", out, e)
		}
	})
}
