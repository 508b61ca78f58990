package config

import (
	"os"
	"strings"
	"testing"
)

const good = `
admin: {listen: 127.0.0.1:8080}
identity:
  oidc: {issuer: https://idp.example, audience: regate, groups_claim: roles}
policy:
  bundle: ./policies
  decision: regate/decision
store: {url: "sqlite://./regate.db"}
targets:
  - name: app-db
    protocol: postgres
    listen: 127.0.0.1:6432
    upstream: 127.0.0.1:5432
    labels: {env: prod}
    credentials: {user: app, password: "${APP_DB_PASSWORD}"}
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseGood(t *testing.T) {
	cfg, err := Parse([]byte(good), env(map[string]string{"APP_DB_PASSWORD": "s3cr$t"}))
	if err != nil {
		t.Fatal(err)
	}
	tg := cfg.Targets[0]
	if tg.Credentials.Password != "s3cr$t" || tg.Labels["env"] != "prod" || tg.Name != "app-db" {
		t.Fatalf("unexpected target: %+v", tg)
	}
	if cfg.Identity.OIDC.GroupsClaim != "roles" || cfg.Policy.Bundle != "./policies" || cfg.Admin.Listen != "127.0.0.1:8080" {
		t.Fatalf("unexpected config: %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	vars := env(map[string]string{"APP_DB_PASSWORD": "x"})
	cases := []struct {
		name, edit, from, want string
	}{
		{"unknown top key", "colour: blue\n", "", "colour: unknown key"},
		{"unknown nested key", "", "labels: {env: prod}", "targets[0].credentials.passwd: unknown key"},
		{"missing user", "", "credentials: {user: app, ", "targets[0].credentials.user: required field is missing"},
		{"missing issuer", "", "issuer: https://idp.example, ", "identity.oidc.issuer: required field is missing"},
		{"unset env", "", "${APP_DB_PASSWORD}", "targets[0].credentials.password: environment variable NOPE is not set"},
		{"bad protocol", "", "protocol: postgres", "targets[0].protocol: \"mysql\" is not supported"},
		{"public listener without tls", "", "listen: 127.0.0.1:6432", "targets[0].tls: required because 0.0.0.0:6432"},
		{"http issuer off loopback", "", "https://idp.example", "must use https"},
		{"list expected", "", "targets:\n", "targets: expected a list"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := good + c.edit
			switch c.name {
			case "unknown nested key":
				doc = strings.Replace(good, "labels: {env: prod}", "labels: {env: prod}\n    credentials: {user: app, passwd: x}", 1)
				doc = strings.Replace(doc, "    credentials: {user: app, password: \"${APP_DB_PASSWORD}\"}\n", "", 1)
			case "missing user":
				doc = strings.Replace(good, "credentials: {user: app, ", "credentials: {", 1)
			case "missing issuer":
				doc = strings.Replace(good, "issuer: https://idp.example, ", "", 1)
			case "unset env":
				doc = strings.Replace(good, "${APP_DB_PASSWORD}", "${NOPE}", 1)
			case "bad protocol":
				doc = strings.Replace(good, "protocol: postgres", "protocol: mysql", 1)
			case "public listener without tls":
				doc = strings.Replace(good, "listen: 127.0.0.1:6432", "listen: 0.0.0.0:6432", 1)
			case "http issuer off loopback":
				doc = strings.Replace(good, "https://idp.example", "http://idp.example", 1)
			case "list expected":
				doc = strings.Replace(good, "targets:\n", "targets: 3\nx:\n", 1)
			}
			_, err := Parse([]byte(doc), vars)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	got, err := expand("a$${X}-${X}$", env(map[string]string{"X": "1"}))
	if err != nil || got != "a${X}-1$" {
		t.Fatalf("expand = %q, %v", got, err)
	}
}

// TestPolicyOPAFreeForm: policy.opa is passed to OPA as written, with its
// scalar types kept and ${VAR} expanded in strings.
func TestPolicyOPAFreeForm(t *testing.T) {
	doc := strings.Replace(good, "  decision: regate/decision\n", `  decision: regate/decision
  ready_timeout: 5s
  opa:
    services:
      ci: {url: "https://bundles.example", credentials: {bearer: {token: "${TOKEN}"}}}
    bundles:
      authz: {service: ci, resource: b.tar.gz, persist: true, polling: {min_delay_seconds: 10}}
    labels: {region: eu}
    list: [1, "two", null]
`, 1)
	cfg, err := Parse([]byte(doc), env(map[string]string{"APP_DB_PASSWORD": "x", "TOKEN": "t0k"}))
	if err != nil {
		t.Fatal(err)
	}
	opa := cfg.Policy.OPA
	ci := opa["services"].(map[string]any)["ci"].(map[string]any)
	if ci["credentials"].(map[string]any)["bearer"].(map[string]any)["token"] != "t0k" {
		t.Fatalf("token not expanded: %v", ci)
	}
	authz := opa["bundles"].(map[string]any)["authz"].(map[string]any)
	if authz["persist"] != true || authz["polling"].(map[string]any)["min_delay_seconds"] != 10 {
		t.Fatalf("scalar types lost: %#v", authz)
	}
	if l := opa["list"].([]any); len(l) != 3 || l[0] != 1 || l[1] != "two" || l[2] != nil {
		t.Fatalf("list: %#v", l)
	}
	if cfg.Policy.ReadyTimeout.String() != "5s" {
		t.Fatalf("ready_timeout = %v", cfg.Policy.ReadyTimeout)
	}
	_, err = Parse([]byte(strings.Replace(doc, "${TOKEN}", "${UNSET_TOKEN}", 1)), env(map[string]string{"APP_DB_PASSWORD": "x"}))
	if err == nil || !strings.Contains(err.Error(), "policy.opa.services.ci.credentials.bearer.token") {
		t.Fatalf("unset variable in policy.opa: %v", err)
	}
}

// TestReadmeConfigurationParses: the configuration documented in the README
// (the reference block and the policy lifecycle example) is valid.
func TestReadmeConfigurationParses(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(after string) string {
		t.Helper()
		s := string(readme)
		i := strings.Index(s, after)
		if i < 0 {
			t.Fatalf("README has no %q", after)
		}
		s = s[i:]
		start := strings.Index(s, "```yaml\n")
		end := strings.Index(s[start+8:], "```")
		return s[start+8 : start+8+end]
	}
	vars := env(map[string]string{"APP_DB_PASSWORD": "x", "SLACK_HOOK": "h", "BUNDLE_PUBLIC_KEY": "k", "BUNDLE_TOKEN": "t"})
	cfg, err := Parse([]byte(block("### Configuration")), vars)
	if err != nil {
		t.Fatalf("README configuration: %v", err)
	}
	if cfg.Policy.OPA["bundles"] == nil || cfg.Policy.ReadyTimeout == 0 || len(cfg.Approval.Notify) != 1 {
		t.Fatalf("README configuration parsed incompletely: %+v", cfg.Policy)
	}
	lifecycle := block("### Bundle sources")
	doc := strings.Replace(good, "policy:\n  bundle: ./policies\n  decision: regate/decision\n", lifecycle, 1)
	cfg, err = Parse([]byte(doc), vars)
	if err != nil {
		t.Fatalf("README policy lifecycle example: %v\n%s", err, doc)
	}
	authz := cfg.Policy.OPA["bundles"].(map[string]any)["authz"].(map[string]any)
	if authz["signing"].(map[string]any)["keyid"] != "ci" {
		t.Fatalf("lifecycle example: %v", authz)
	}
}

// TestLoadOPA: an OPA configuration file (regate dev --opa) is decoded
// free-form, with ${VAR} expanded and errors naming the file and key path.
func TestLoadOPA(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/opa.yaml"
	t.Setenv("REGATE_TEST_OPA_TOKEN", "t0k")
	if err := os.WriteFile(file, []byte("services:\n  ci: {url: \"http://127.0.0.1:1\", credentials: {bearer: {token: \"${REGATE_TEST_OPA_TOKEN}\"}}}\nbundles:\n  b: {service: ci, resource: x.tar.gz, persist: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opa, err := LoadOPA(file)
	if err != nil {
		t.Fatal(err)
	}
	ci := opa["services"].(map[string]any)["ci"].(map[string]any)
	if ci["credentials"].(map[string]any)["bearer"].(map[string]any)["token"] != "t0k" ||
		opa["bundles"].(map[string]any)["b"].(map[string]any)["persist"] != true {
		t.Fatalf("LoadOPA = %#v", opa)
	}
	if err := os.WriteFile(file, []byte("bundles:\n  b: {resource: \"${REGATE_TEST_UNSET_VAR}\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOPA(file); err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "bundles.b.resource") {
		t.Fatalf("unset variable: %v", err)
	}
}
