package test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regate/regate/test/testenv"
)

// policyV1 allows everything but DELETE; policyV2 also blocks UPDATE. Both
// are written only from the README's input schema and decision contract.
const policyV1 = `package regate

decision := {"allow": count(blocked) == 0, "reasons": [r | some r in blocked]}

blocked contains "DELETE is not allowed" if {
	some st in input.postgres.statements
	st.command == "DELETE"
}
`

const policyV2 = policyV1 + `
blocked contains "UPDATE is frozen" if {
	some st in input.postgres.statements
	st.command == "UPDATE"
}
`

// TestPolicyLifecycle is issue 5 as a user would try it: CI builds and
// signs bundles with regate policy build, a plain HTTP server serves them,
// the gateway polls it; a tampered and an unsigned bundle are refused while
// the old revision keeps deciding, a new signed revision takes effect on a
// psql-style session that stays connected, every record names its revision,
// what-if names exactly the decisions a candidate changes, fixtures become
// Rego tests, and exported decisions are OPA decision-log events.
func TestPolicyLifecycle(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.orders (id int PRIMARY KEY, state text NOT NULL);
		INSERT INTO public.orders VALUES (1, 'new'), (2, 'new'), (3, 'new');
		ALTER TABLE public.orders OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	work := t.TempDir()

	// The signing key pair: CI holds the private key, gateways the public one.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	keyFile := filepath.Join(work, "ci.key")
	if err := os.WriteFile(keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	srvDir := filepath.Join(work, "srv")
	if err := os.MkdirAll(srvDir, 0o755); err != nil {
		t.Fatal(err)
	}
	v1 := policyDir(t, work, "v1", policyV1)
	v2 := policyDir(t, work, "v2", policyV2)
	build := func(dir, rev, out string, sign bool) {
		t.Helper()
		args := []string{"policy", "build", dir, "-o", out, "--revision", rev}
		if sign {
			args = append(args, "--signing-key", keyFile, "--key-id", "ci")
		}
		if _, errOut, code := testenv.Run(t, args...); code != 0 {
			t.Fatalf("policy build %s: %d %s", rev, code, errOut)
		}
	}
	published := filepath.Join(srvDir, "bundle.tar.gz")
	build(v1, "v1", published, true)

	bs := &bundleServer{dir: srvDir}
	srv := httptest.NewServer(bs)
	t.Cleanup(srv.Close)

	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{
		Issuer: iss.URL(), Audience: audience,
		Global: "admin: {listen: " + admin + "}",
		Policy: fmt.Sprintf(`  opa:
    services:
      ci: {url: %q}
    bundles:
      authz:
        service: ci
        resource: bundle.tar.gz
        polling: {min_delay_seconds: 1, max_delay_seconds: 1}
        signing: {keyid: ci}
    keys:
      ci: {algorithm: RS256, key: %q}`, srv.URL, string(pubPEM)),
	})
	status := waitStatus(t, admin, func(s policyStatus) bool { return s.Active["authz"].Revision == "v1" })
	if !status.Ready {
		t.Fatalf("status not ready with v1 active: %+v", status)
	}

	// Polling an unchanged file costs a 304: the gateway sends the ETag back.
	for deadline := time.Now().Add(10 * time.Second); bs.notModif.Load() == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never polled with If-None-Match (%d requests)", bs.requests.Load())
		}
	}

	// One long-lived session across every bundle change.
	tok := iss.Token(t, "release-bot", audience, "agents")
	ctx, conn := connectPgxWithin(t, gw.Listen, tok, 3*time.Minute)
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, "UPDATE orders SET state = 'paid' WHERE id = 1")
	mustBlock(t, ctx, conn, "DELETE FROM orders WHERE id = 3", "DELETE is not allowed")

	// A tampered bundle (the v2 policy under v1's signature) and an unsigned
	// one are refused; v1 keeps deciding.
	signedV1, err := os.ReadFile(published)
	if err != nil {
		t.Fatal(err)
	}
	tampered := replaceInBundle(t, signedV1, "policy.rego", []byte(policyV2))
	publish(t, published, tampered)
	waitBundleError(t, admin, "digest mismatch")
	mustExec(t, ctx, conn, "UPDATE orders SET state = 'paid' WHERE id = 2")

	build(v2, "v2", filepath.Join(work, "unsigned.tar.gz"), false)
	unsigned, _ := os.ReadFile(filepath.Join(work, "unsigned.tar.gz"))
	publish(t, published, unsigned)
	waitBundleError(t, admin, "bundle missing .signatures.json file")
	mustExec(t, ctx, conn, "UPDATE orders SET state = 'shipped' WHERE id = 1")
	if got := activeRevision(t, admin); got != "v1" {
		t.Fatalf("after refused bundles the active revision is %q, want v1", got)
	}
	metrics := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{`regate_policy_bundle_info{bundle="authz",revision="v1"} 1`, `regate_policy_bundle_ok{bundle="authz"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	if !strings.Contains(gw.Logs(), "digest mismatch") {
		t.Errorf("the refused signature is not in the logs")
	}

	// The signed v2 takes effect on the same connection within the polling
	// interval.
	build(v2, "v2", published, true)
	waitStatus(t, admin, func(s policyStatus) bool { return s.Active["authz"].Revision == "v2" })
	mustBlock(t, ctx, conn, "UPDATE orders SET state = 'lost' WHERE id = 3", "UPDATE is frozen")
	var pid2 int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil || pid2 != pid {
		t.Fatalf("the session did not survive the swap: pid %d then %d (%v)", pid, pid2, err)
	}
	metrics = httpGet(t, "http://"+admin+"/metrics")
	if !strings.Contains(metrics, `regate_policy_bundle_ok{bundle="authz"} 1`) {
		t.Errorf("/metrics after v2:\n%s", metrics)
	}

	// A second, short session decided entirely by v2 (for the fixture).
	conn2, err := pgx.Connect(ctx, connString(gw.Listen, iss.Token(t, "night-bot", audience, "agents")))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn2, "SELECT count(*) FROM orders")
	mustBlock(t, ctx, conn2, "UPDATE orders SET state = 'x'", "UPDATE is frozen")
	conn2.Close(ctx)
	conn.Close(ctx)

	// Records and replay name the revision that made each decision.
	revs := map[string]string{}
	for _, ev := range records(t, gw) {
		if ev.Type != "command" {
			continue
		}
		if ev.Decision != nil {
			revs[ev.Input.Postgres.Query] = ev.Decision.Bundles["authz"].Revision
		}
	}
	for q, want := range map[string]string{
		"UPDATE orders SET state = 'paid' WHERE id = 1":    "v1",
		"UPDATE orders SET state = 'shipped' WHERE id = 1": "v1",
		"UPDATE orders SET state = 'lost' WHERE id = 3":    "v2",
	} {
		if revs[q] != want {
			t.Errorf("record of %q names revision %q, want %q", q, revs[q], want)
		}
	}
	sessions := sessionIDs(t, gw)
	out, errOut, code := testenv.Run(t, "replay", sessions["release-bot"], "--store", gw.Store)
	if code != 0 || !strings.Contains(out, "authz@v1") || !strings.Contains(out, "authz@v2") {
		t.Errorf("replay does not show both revisions: %d %s\n%s", code, errOut, out)
	}

	// what-if: a candidate that unfreezes UPDATE but blocks SELECT count(*)
	// changes exactly those recorded decisions.
	v3 := policyDir(t, work, "v3", policyV1+`
blocked contains "no counting" if {
	some st in input.postgres.statements
	some f in st.functions
	f == "count"
}
`)
	out, errOut, code = testenv.Run(t, "policy", "what-if", "--bundle", v3, "--store", gw.Store, "--json")
	if code != 1 {
		t.Fatalf("what-if with changes exited %d: %s\n%s", code, errOut, out)
	}
	var report struct {
		Evaluated int `json:"evaluated"`
		Changed   int `json:"changed"`
		Changes   []struct {
			Statement string   `json:"statement"`
			Changes   []string `json:"changes"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("what-if --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range report.Changes {
		got[c.Statement] = strings.Join(c.Changes, ";")
	}
	want := map[string]string{
		"UPDATE orders SET state = 'lost' WHERE id = 3": "deny->allow",
		"UPDATE orders SET state = 'x'":                 "deny->allow",
		"SELECT count(*) FROM orders":                   "allow->deny",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("what-if changes:\n got %v\nwant %v\n%s", got, want, out)
	}
	if report.Evaluated < 8 {
		t.Errorf("what-if evaluated only %d decisions", report.Evaluated)
	}
	if _, _, code := testenv.Run(t, "policy", "what-if", "--bundle", v3, "--store", gw.Store, "--allow-changes"); code != 0 {
		t.Errorf("what-if --allow-changes exited %d", code)
	}
	// The candidate identical to the deciding policy changes nothing for
	// the v2-decided decisions.
	out, errOut, code = testenv.Run(t, "policy", "what-if", "--bundle", v2, "--store", gw.Store, "--target", "app-db")
	if code != 1 || !strings.Contains(out, "deny") {
		// v1-era UPDATEs were allowed; v2 denies them.
		t.Errorf("what-if v2: %d %s\n%s", code, errOut, out)
	}

	// Export: OPA decision-log events, with data.system.log.mask applied.
	maskDir := policyDir(t, work, "withmask", policyV2+`
`)
	writeFile(t, maskDir, "mask.rego", `package system.log

mask contains "/input/identity/claims"
`)
	exported := filepath.Join(work, "decisions.ndjson")
	_, errOut, code = testenv.Run(t, "export", "decisions", "--store", gw.Store, "--bundle", maskDir, "-o", exported)
	if code != 0 {
		t.Fatalf("export: %d %s", code, errOut)
	}
	events := readNDJSON(t, exported)
	if len(events) != report.Evaluated {
		t.Errorf("exported %d events, recorded %d decisions", len(events), report.Evaluated)
	}
	for _, ev := range events {
		for _, k := range []string{"decision_id", "path", "input", "result", "bundles", "timestamp", "labels"} {
			if _, ok := ev[k]; !ok {
				t.Fatalf("exported event lacks %q: %v", k, ev)
			}
		}
		in := ev["input"].(map[string]any)
		if _, ok := in["identity"].(map[string]any)["claims"]; ok {
			t.Fatalf("data.system.log.mask did not erase the claims: %v", in["identity"])
		}
		if fmt.Sprint(ev["erased"]) != "[/input/identity/claims]" {
			t.Fatalf("erased = %v", ev["erased"])
		}
	}
	raw, _ := os.ReadFile(exported)
	if bytes.Contains(raw, []byte(tok)) {
		t.Fatal("the token is in the export")
	}
	// what-if reads the exported window as CI would.
	out, errOut, code = testenv.Run(t, "policy", "what-if", "--bundle", v3, "--decisions", exported, "--since", "")
	if code != 1 || !strings.Contains(out, "3 of ") {
		t.Errorf("what-if over the export: %d %s\n%s", code, errOut, out)
	}

	// Fixture: night-bot's session, all decided by v2, becomes a Rego test
	// that passes on v2 and fails on v1 (which let its UPDATE through).
	fixture := filepath.Join(work, "incident_test.rego")
	if _, errOut, code := testenv.Run(t, "policy", "fixture", sessions["night-bot"], "--store", gw.Store, "-o", fixture); code != 0 {
		t.Fatalf("fixture: %d %s", code, errOut)
	}
	if out, errOut, code := testenv.Run(t, "policy", "test", filepath.Join(v2, "policy.rego"), fixture); code != 0 || !strings.Contains(out, "PASS: 2/2") {
		t.Errorf("fixture tests on v2: %d %s\n%s", code, errOut, out)
	}
	if out, _, code := testenv.Run(t, "policy", "test", filepath.Join(v1, "policy.rego"), fixture); code != 1 || !strings.Contains(out, "FAIL") {
		t.Errorf("fixture tests on v1 should fail: %d\n%s", code, out)
	}

	// The CI example: a policy repository with tests; what-if over the
	// exported window stops the publication of a changing revision, and
	// ALLOW_CHANGES=1 publishes it, signed; the gateway picks it up.
	repo := policyDir(t, work, "repo", policyV2)
	writeFile(t, repo, "policy_test.rego", `package regate

test_update_frozen if {
	not decision.allow with input as {"postgres": {"statements": [{"command": "UPDATE"}]}}
}
`)
	ci := func(extra ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("bash", filepath.Join(repoRoot(t), "policies", "ci", "policy-ci.sh"))
		cmd.Env = append(os.Environ(), "REGATE="+testenv.Binary(t), "POLICY_DIR="+repo, "DECISIONS="+exported,
			"SIGNING_KEY="+keyFile, "KEY_ID=ci", "REVISION=v4", "PUBLISH_DIR="+srvDir, "OUT="+filepath.Join(work, "dist", "bundle.tar.gz"))
		cmd.Env = append(cmd.Env, extra...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := ci(); code == 0 || !strings.Contains(out, "allow->deny") && !strings.Contains(out, "deny->allow") {
		t.Fatalf("policy-ci.sh published a revision that changes decisions: %d\n%s", code, out)
	}
	time.Sleep(1500 * time.Millisecond) // more than a polling interval
	if got := activeRevision(t, admin); got != "v2" {
		t.Fatalf("after a stopped CI run the gateway runs %q", got)
	}
	if out, code := ci("ALLOW_CHANGES=1"); code != 0 || !strings.Contains(out, "revision v4 ready") {
		t.Fatalf("policy-ci.sh with ALLOW_CHANGES=1: %d\n%s", code, out)
	}
	waitStatus(t, admin, func(s policyStatus) bool { return s.Active["authz"].Revision == "v4" })
}
