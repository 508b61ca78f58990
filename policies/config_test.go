package policies

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

func TestBundleDirectoryRevision(t *testing.T) {
	dir := bundleDir(t, "acme-policies", map[string]string{
		".manifest":   `{"revision": "r42"}`,
		"policy.rego": "package regate\n\ndecision := {\"allow\": true}\n",
	})
	e := newEngine(t, Config{Bundle: dir})
	want := map[string]decision.Bundle{"acme-policies": {Revision: "r42"}}
	if got := e.Bundles(); !reflect.DeepEqual(got, want) {
		t.Errorf("Bundles() = %v, want %v", got, want)
	}
	d := e.Decide(context.Background(), pgInput(selectStmt))
	if !d.Allow || !reflect.DeepEqual(d.Bundles, want) {
		t.Errorf("decision = %+v", d)
	}
	// Callers get copies.
	e.Bundles()["acme-policies"] = decision.Bundle{Revision: "changed"}
	if e.Bundles()["acme-policies"].Revision != "r42" {
		t.Error("Bundles() exposes the engine's map")
	}
}

func TestBundleTarball(t *testing.T) {
	src := "package regate\n\ndecision := {\"allow\": false, \"reasons\": [\"from tarball\"]}\n"
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "t1"},
		Data:     map[string]any{},
		Modules:  []bundle.ModuleFile{{Path: "/regate.rego", Raw: []byte(src), Parsed: ast.MustParseModule(src)}},
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, Config{Bundle: path})
	d := e.Decide(context.Background(), pgInput(selectStmt))
	if d.Allow || !reflect.DeepEqual(d.Reasons, []string{"from tarball"}) ||
		!reflect.DeepEqual(d.Bundles, map[string]decision.Bundle{"policy.tar.gz": {Revision: "t1"}}) {
		t.Errorf("decision = %+v", d)
	}
}

func TestNewErrors(t *testing.T) {
	syntax := bundleDir(t, "syntax", map[string]string{"bad.rego": "package regate\n\ndecision := {\n"})
	compile := bundleDir(t, "compile", map[string]string{"ok.rego": "package regate\n\ndecision := {\"allow\": true}\n",
		"undefined.rego": "package regate\n\nx if {\n\tnot_a_function(1)\n}\n"})
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"syntax error", Config{Bundle: syntax}, []string{filepath.Join(syntax, "bad.rego") + ":", "rego_parse_error"}},
		{"compile error", Config{Bundle: compile}, []string{filepath.Join(compile, "undefined.rego") + ":4", "not_a_function"}},
		{"missing bundle", Config{Bundle: filepath.Join(t.TempDir(), "nope")}, []string{"nope", "does not exist"}},
		{"bad decision path", Config{Decision: "data.regate[x]"}, []string{"decision path", "not a name"}},
		{"empty segment", Config{Decision: "regate//decision"}, []string{"empty segment"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDecisionPath(t *testing.T) {
	dir := bundleDir(t, "acme", map[string]string{"authz.rego": `package acme.authz

decision := {"allow": input.identity.subject == "alice", "reasons": ["acme"]}
`})
	for _, p := range []string{"acme/authz/decision", "/acme/authz/decision", "data.acme.authz.decision", `data.acme["authz"].decision`} {
		t.Run(p, func(t *testing.T) {
			e := newEngine(t, Config{Bundle: dir, Decision: p})
			d := e.Decide(context.Background(), pgInput(selectStmt))
			if !d.Allow || d.Path != "acme/authz/decision" || e.Path() != d.Path {
				t.Errorf("decision = %+v", d)
			}
		})
	}
	e := newEngine(t, Config{Bundle: dir}) // default path: undefined in this bundle
	if d := e.Decide(context.Background(), pgInput(selectStmt)); d.Allow || d.Path != "regate/decision" {
		t.Errorf("decision at default path = %+v", d)
	}
}

func TestPrintGoesToLogger(t *testing.T) {
	var logs bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	dir := bundleDir(t, "print", map[string]string{"p.rego": `package regate

decision := {"allow": true} if {
	print("subject is", input.identity.subject)
}
`})
	e := newEngine(t, Config{Bundle: dir, Logger: logger})
	d := e.Decide(context.Background(), pgInput(selectStmt))
	for _, want := range []string{"rego print", "subject is alice", "p.rego:4", d.ID} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestExtendingTheLibrary follows the README: a bundle made of the default
// library plus a file of extra rules in package regate.
func TestExtendingTheLibrary(t *testing.T) {
	files := map[string]string{"extra.rego": `package regate

deny contains "writes to the billing schema need a ticket" if {
	input.protocol == "postgres"
	some stmt in input.postgres.statements
	some rel in stmt.relations
	rel.schema == "billing"
	rel.access != "read"
}

deny contains msg if some msg in data.regate.acme.deny

mask contains {"column": "email"} if input.protocol == "postgres"
`, "acme.rego": `package regate.acme

deny contains "no SELECT on secrets" if {
	some stmt in input.postgres.statements
	some rel in stmt.relations
	rel.name == "secrets"
}
`}
	lib, err := fs.Glob(Default(), "*.rego")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range lib {
		data, _ := fs.ReadFile(Default(), name)
		files["lib/"+name] = string(data)
	}
	e := newEngine(t, Config{Bundle: bundleDir(t, "extended", files)})

	write := selectStmt
	write.Command, write.Node, write.HasWhere = "UPDATE", "UpdateStmt", true
	write.Relations = []parse.Relation{{Schema: "billing", Name: "invoices", Access: "write"}}
	secrets := selectStmt
	secrets.Relations = []parse.Relation{{Name: "secrets", Access: "read"}}

	tests := []struct {
		name    string
		d       decision.Decision
		allow   bool
		reasons []string
	}{
		{"safe", e.Decide(context.Background(), pgInput(selectStmt)), true, nil},
		{"library rule", e.Decide(context.Background(), pgInput(dropStmt)), false, []string{"DROP is not allowed: it destroys data (DROP TABLE public.t)"}},
		{"extra rule", e.Decide(context.Background(), pgInput(write)), false, []string{"writes to the billing schema need a ticket"}},
		{"own package", e.Decide(context.Background(), pgInput(secrets)), false, []string{"no SELECT on secrets"}},
	}
	for _, tc := range tests {
		if tc.d.Allow != tc.allow || !reflect.DeepEqual(tc.d.Reasons, tc.reasons) {
			t.Errorf("%s: allow=%v reasons=%q error=%q", tc.name, tc.d.Allow, tc.d.Reasons, tc.d.Error)
		}
		if !reflect.DeepEqual(tc.d.Mask, []decision.Mask{{Column: "email"}}) {
			t.Errorf("%s: mask = %+v", tc.name, tc.d.Mask)
		}
	}
}

// TestExtendingPitfalls checks what regate.rego says about adding allow or
// decision rules next to the library: they never turn a deny into an allow.
func TestExtendingPitfalls(t *testing.T) {
	for name, extra := range map[string]string{
		"allow":    "package regate\n\nallow if input.identity.subject == \"alice\"\n",
		"decision": "package regate\n\ndecision := {\"allow\": true}\n",
	} {
		t.Run(name, func(t *testing.T) {
			files := map[string]string{"extra.rego": extra}
			for _, lib := range []string{"regate.rego", "postgres.rego"} {
				data, err := fs.ReadFile(Default(), lib)
				if err != nil {
					t.Fatal(err)
				}
				files[lib] = string(data)
			}
			e := newEngine(t, Config{Bundle: bundleDir(t, name, files)})
			d := e.Decide(context.Background(), pgInput(dropStmt))
			if d.Allow || !strings.Contains(d.Error, "eval_conflict_error") {
				t.Errorf("decision = %+v, want a denying conflict", d)
			}
		})
	}
}

func TestConcurrentDecide(t *testing.T) {
	e := newEngine(t, Config{})
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				in, wantAllow := pgInput(selectStmt), true
				if (g+i)%2 == 0 {
					in, wantAllow = pgInput(selectStmt, dropStmt), false
				}
				if d := e.Decide(context.Background(), in); d.Allow != wantAllow || d.Error != "" {
					errs <- d.ID + ": " + strings.Join(d.Reasons, "; ")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
