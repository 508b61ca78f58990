package test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/regate/regate/test/testenv"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestRecordsTellTheTruth drives a session through psql, then checks the CLI's
// view of it and that verify catches an edit of the SQLite file.
func TestRecordsTellTheTruth(t *testing.T) {
	_, iss, gw := setup(t)
	tok := iss.Token(t, "auditor-test", audience, "agents")
	r := testenv.PsqlVia(t, gw.Listen, "auditor-test", "app", tok,
		[]string{"SELECT count(*) FROM customers", "DROP TABLE customers"})
	if r.Out != "3" || !strings.Contains(r.Err, "42501") {
		t.Fatalf("psql: out %q err %q", r.Out, r.Err)
	}

	out, errOut, code := testenv.Run(t, "sessions", "--json", "--config", gw.Config)
	if code != 0 {
		t.Fatalf("sessions: %d %s", code, errOut)
	}
	var sessions []struct {
		ID       string `json:"id"`
		Subject  string `json:"subject"`
		Target   string `json:"target"`
		Commands int    `json:"commands"`
		Allowed  int    `json:"allowed"`
		Blocked  int    `json:"blocked"`
	}
	if err := json.Unmarshal([]byte(out), &sessions); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	var id string
	for _, s := range sessions {
		if s.Subject == "auditor-test" {
			id = s.ID
			if s.Commands != 2 || s.Allowed != 1 || s.Blocked != 1 || s.Target != "app-db" {
				t.Fatalf("session summary wrong: %+v", s)
			}
		}
	}
	if id == "" {
		t.Fatalf("no session for auditor-test in %s", out)
	}

	out, errOut, code = testenv.Run(t, "replay", id[:12], "--store", gw.Store)
	if code != 0 {
		t.Fatalf("replay: %d %s", code, errOut)
	}
	for _, want := range []string{"ALLOW  SELECT count(*) FROM customers", "DENY   DROP TABLE customers",
		"reason: ", "decision ", "regate-default@builtin-", "outcome: ok SELECT 1", "outcome: blocked", "SESSION END"} {
		if !strings.Contains(out, want) {
			t.Errorf("replay lacks %q:\n%s", want, out)
		}
	}
	out, _, code = testenv.Run(t, "replay", id, "--json", "--store", gw.Store)
	if code != 0 || !strings.Contains(out, `"decision_id"`) || !strings.Contains(out, `"statements"`) {
		t.Fatalf("replay --json: %d\n%s", code, out)
	}
	if strings.Contains(out, tok) {
		t.Fatal("the token was recorded")
	}

	out, errOut, code = testenv.Run(t, "verify", "--store", gw.Store)
	if code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("verify on an untouched store: %d %s %s", code, out, errOut)
	}

	// Edit one recorded decision in the SQLite file: verify must name it.
	// The gateway copies its journal into the file in the background (up to
	// 100 ms later under load): wait for the row.
	if countWhere(t, gw, 1, `type = 'command' AND body LIKE '%"allow":false%'`) < 1 {
		t.Fatal("the denied command never reached the database file")
	}
	db := openStore(t, gw)
	res, err := db.Exec(`UPDATE event_blocks SET bodies = replace(bodies, '"allow":false', '"allow":true')
		WHERE first_seq = (SELECT min(first_seq) FROM event_blocks WHERE bodies LIKE '%"allow":false%')`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tampering touched %d rows", n)
	}
	out, errOut, code = testenv.Run(t, "verify", "--store", gw.Store)
	if code == 0 || !strings.Contains(errOut, "seq") {
		t.Fatalf("verify did not catch the edit: %d %s %s", code, out, errOut)
	}
}

// TestCustomPolicyFromTheDocumentedSchema replaces the default library with a
// bundle written only against the README's input schema and decision contract.
func TestCustomPolicyFromTheDocumentedSchema(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE accounts (id int PRIMARY KEY, owner text); INSERT INTO accounts VALUES (1, 'a');
		ALTER TABLE accounts OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(".manifest", `{"revision": "custom-7", "roots": ["acme"]}`)
	write("policy.rego", `package acme.gate

import rego.v1

deny contains "accounts is read-only for agents" if {
	some s in input.postgres.statements
	some r in s.relations
	r.name == "accounts"
	r.access != "read"
}

deny contains "only members of group agents may query prod" if {
	input.target.labels.env == "prod"
	not "agents" in input.identity.groups
}

deny contains sprintf("account %s is frozen", [p]) if {
	some p in input.postgres.params
	p == "666"
}

decision := {"allow": count(deny) == 0, "reasons": sort([r | some r in deny])}
`)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{
		Issuer: iss.URL(), Audience: audience, Bundle: dir, Decision: "acme/gate/decision", Labels: "{env: prod}",
	})
	agent := iss.Token(t, "agent-1", audience, "agents")
	if r := testenv.PsqlVia(t, gw.Listen, "agent-1", "app", agent, []string{"SELECT owner FROM accounts"}); r.Out != "a" {
		t.Fatalf("allowed SELECT: out %q err %q", r.Out, r.Err)
	}
	r := testenv.PsqlVia(t, gw.Listen, "agent-1", "app", agent, []string{"UPDATE accounts SET owner = 'b' WHERE id = 1"})
	if !strings.Contains(r.Err, "regate: blocked by policy: accounts is read-only for agents") {
		t.Fatalf("UPDATE: %q", r.Err)
	}
	// A rule on a bound parameter's value: pgx sends the int4 in binary.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connString(gw.Listen, agent))
	if err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := conn.QueryRow(ctx, "SELECT owner FROM accounts WHERE id = $1", 1).Scan(&owner); err != nil || owner != "a" {
		t.Fatalf("param 1: %q %v", owner, err)
	}
	err = conn.QueryRow(ctx, "SELECT owner FROM accounts WHERE id = $1", 666).Scan(&owner)
	if err == nil || !strings.Contains(err.Error(), "account 666 is frozen") {
		t.Fatalf("param 666: %v", err)
	}
	conn.Close(ctx)
	outsider := iss.Token(t, "intern", audience, "interns")
	r = testenv.PsqlVia(t, gw.Listen, "intern", "app", outsider, []string{"SELECT 1"})
	if !strings.Contains(r.Err, "only members of group agents may query prod") {
		t.Fatalf("outsider: out %q err %q", r.Out, r.Err)
	}
	if got := pg.Psql(t, "app", "SELECT owner FROM accounts"); got != "a" {
		t.Fatalf("accounts changed: %q", got)
	}
	found := false
	for _, s := range listSessions(t, gw) {
		if s.Subject != "agent-1" {
			continue
		}
		rep, _, _ := testenv.Run(t, "replay", s.ID, "--store", gw.Store)
		if strings.Contains(rep, "@custom-7") && strings.Contains(rep, "accounts is read-only") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no replay names revision custom-7 with the reason")
	}
}

func writeFile(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
