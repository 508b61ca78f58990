package policies

import (
	"context"
	"io/fs"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"testing/fstest"
	"time"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

func pgInput(stmts ...parse.Statement) *parse.Input {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &parse.Input{
		Version:  parse.SchemaVersion,
		Protocol: "postgres",
		Time:     now,
		Identity: parse.Identity{Subject: "alice", Issuer: "https://idp", Groups: []string{"dev"}, Claims: map[string]any{"email": "alice@example.com"}},
		Target:   parse.Target{Name: "prod", Protocol: "postgres", Labels: map[string]string{"env": "prod"}},
		Session:  parse.Session{ID: "s1", ClientAddr: "10.0.0.1:5555", StartedAt: now},
		Postgres: &parse.Postgres{Database: "app", User: "app", ClientUser: "alice", Query: "...", Statements: stmts},
	}
}

var (
	selectStmt = parse.Statement{
		Command: "SELECT", Node: "SelectStmt", Functions: []string{"pg_sleep"},
		Relations: []parse.Relation{{Schema: "public", Name: "t", Access: parse.AccessRead}},
		AST: map[string]any{"SelectStmt": map[string]any{
			"fromClause": []any{map[string]any{"RangeVar": map[string]any{"schemaname": "public", "relname": "t"}}},
		}},
	}
	dropStmt = parse.Statement{
		Command: "DROP", Node: "DropStmt",
		Relations: []parse.Relation{{Schema: "public", Name: "t", Access: parse.AccessDDL}},
		AST: map[string]any{"DropStmt": map[string]any{
			"removeType": "OBJECT_TABLE",
			"objects": []any{map[string]any{"List": map[string]any{"items": []any{
				map[string]any{"String": map[string]any{"sval": "public"}},
				map[string]any{"String": map[string]any{"sval": "t"}},
			}}}},
		}},
	}
)

// bundleDir writes a bundle directory named name with the given files.
func bundleDir(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for file, content := range files {
		writeFile(t, filepath.Join(dir, filepath.FromSlash(file)), content)
	}
	return dir
}

// decisionBundle is a bundle whose data.regate.decision is the given Rego
// expression.
func decisionBundle(t *testing.T, expr string) string {
	return bundleDir(t, "custom", map[string]string{
		"policy.rego": "package regate\n\ndecision := " + expr + "\n",
	})
}

func newEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return e
}

func TestDecideDefaultLibrary(t *testing.T) {
	e := newEngine(t, Config{})
	rev, err := defaultRevision()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		input   *parse.Input
		allow   bool
		reasons []string
	}{
		{"select allowed", pgInput(selectStmt), true, nil},
		{"drop blocked", pgInput(dropStmt), false, []string{"DROP is not allowed: it destroys data (DROP TABLE public.t)"}},
		{"one bad statement blocks all", pgInput(selectStmt, dropStmt), false, []string{"DROP is not allowed: it destroys data (DROP TABLE public.t)"}},
		{"ssh allowed", &parse.Input{Version: 1, Protocol: "ssh"}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(context.Background(), tc.input)
			if d.Allow != tc.allow || !reflect.DeepEqual(d.Reasons, tc.reasons) || d.Error != "" {
				t.Errorf("allow=%v reasons=%q error=%q; want allow=%v reasons=%q", d.Allow, d.Reasons, d.Error, tc.allow, tc.reasons)
			}
			if len(d.ID) != 36 || d.Path != "regate/decision" {
				t.Errorf("ID %q, Path %q", d.ID, d.Path)
			}
			want := map[string]decision.Bundle{DefaultBundleName: {Revision: rev}}
			if !reflect.DeepEqual(d.Bundles, want) {
				t.Errorf("Bundles = %v, want %v", d.Bundles, want)
			}
			if _, ok := d.Result.(map[string]any); !ok {
				t.Errorf("Result = %#v, want the decision object", d.Result)
			}
		})
	}
}

func TestDecisionIDsAreUnique(t *testing.T) {
	e := newEngine(t, Config{})
	a := e.Decide(context.Background(), pgInput(selectStmt))
	b := e.Decide(context.Background(), pgInput(selectStmt))
	if a.ID == "" || a.ID == b.ID {
		t.Errorf("decision IDs %q and %q", a.ID, b.ID)
	}
}

func TestDefaultRevision(t *testing.T) {
	e := newEngine(t, Config{})
	got := e.Bundles()[DefaultBundleName].Revision
	if !regexp.MustCompile(`^builtin-[0-9a-f]{12}$`).MatchString(got) {
		t.Fatalf("revision = %q", got)
	}
	// The revision is a hash of every file of the library, data included.
	files := fstest.MapFS{}
	err := fs.WalkDir(Default(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(Default(), path)
		files[path] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := fsRevision(files); same != got {
		t.Fatalf("revision of a copy = %q, want %q", same, got)
	}
	files["regate/postgres/data.json"] = &fstest.MapFile{Data: []byte(`{"masked_columns": []}`)}
	if changed, _ := fsRevision(files); changed == got {
		t.Fatal("changing the library's data did not change the revision")
	}
}
