package bundles

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

const policy = `package acme

allow if input.user == "alice"
`

const policyTest = `package acme_test

import data.acme

test_alice if acme.allow with input as {"user": "alice"}
`

// writeFiles creates files (relative path -> content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func modulePaths(b *bundle.Bundle) []string {
	var paths []string
	for _, m := range b.Modules {
		paths = append(paths, filepath.Base(m.Path))
	}
	return paths
}

func TestLoadDirectoryWithManifest(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		".manifest":             `{"revision": "r42", "roots": ["acme", "acme_test"]}`,
		"acme/policy.rego":      policy,
		"acme/policy_test.rego": policyTest,
		"acme/limits/data.json": `{"max": 3}`,
		"README.md":             "# not part of the bundle",
		"acme/notes.txt":        "ignored",
	})
	b, err := Load(context.Background(), dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.Manifest.Revision != "r42" {
		t.Errorf("revision = %q, want r42", b.Manifest.Revision)
	}
	if roots := *b.Manifest.Roots; len(roots) != 2 || roots[0] != "acme" {
		t.Errorf("roots = %v, want [acme acme_test]", roots)
	}
	paths := modulePaths(b)
	if len(paths) != 2 {
		t.Fatalf("modules = %v, want policy.rego and policy_test.rego", paths)
	}
	acme, _ := b.Data["acme"].(map[string]any)
	limits, _ := acme["limits"].(map[string]any)
	if limits["max"] == nil {
		t.Errorf("data.acme.limits.max missing: %v", b.Data)
	}
	for _, m := range b.Modules {
		if !strings.HasPrefix(m.Path, dir) {
			t.Errorf("module path %q does not start with the bundle directory", m.Path)
		}
	}
}

func TestLoadDirectoryWithoutManifestHasEmptyRevision(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.rego": policy})
	b, err := Load(context.Background(), dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.Manifest.Revision != "" {
		t.Errorf("revision = %q, want empty", b.Manifest.Revision)
	}
}

func TestLoadTarball(t *testing.T) {
	src := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "tar-7"},
		Data:     map[string]any{},
		Modules: []bundle.ModuleFile{{
			Path:   "/acme/policy.rego",
			Raw:    []byte(policy),
			Parsed: ast.MustParseModule(policy),
		}},
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, src); err != nil {
		t.Fatalf("bundle.Write: %v", err)
	}
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := Load(context.Background(), path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if b.Manifest.Revision != "tar-7" {
		t.Errorf("revision = %q, want tar-7", b.Manifest.Revision)
	}
	if got := modulePaths(b); len(got) != 1 || got[0] != "policy.rego" {
		t.Errorf("modules = %v", got)
	}
}

func TestLoadInvalidRegoNamesFileAndLine(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ok.rego":     policy,
		"broken.rego": "package acme\n\nallow if {\n",
	})
	_, err := Load(context.Background(), dir)
	if err == nil {
		t.Fatal("Load succeeded on a bundle with a syntax error")
	}
	t.Log(err)
	want := filepath.Join(dir, "broken.rego") + ":"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "rego_parse_error") {
		t.Errorf("error %q does not name %s with a line", err, want)
	}
}

func TestLoadBadPaths(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "policy.txt")
	writeFiles(t, dir, map[string]string{"policy.txt": policy})
	notGzip := filepath.Join(dir, "bad.tar.gz")
	writeFiles(t, dir, map[string]string{"bad.tar.gz": "not gzip"})
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name, path, want string
		is               error
	}{
		{"missing", missing, "file does not exist", os.ErrNotExist},
		{"plain file", text, "not a directory or .tar.gz", ErrNotBundle},
		{"not gzip", notGzip, notGzip, nil},
		{"empty", "", "empty path", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(context.Background(), tc.path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q should name %q and say %q", err, tc.path, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestLoadCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Load(ctx, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with canceled context: %v", err)
	}
}

func TestLoadFS(t *testing.T) {
	fsys := fstest.MapFS{
		"acme/policy.rego":      {Data: []byte(policy)},
		"acme/policy_test.rego": {Data: []byte(policyTest)},
		"data.json":             {Data: []byte(`{"x": 1}`)},
	}
	b, err := LoadFS(fsys, "builtin-abc")
	if err != nil {
		t.Fatalf("LoadFS: %v", err)
	}
	if b.Manifest.Revision != "builtin-abc" {
		t.Errorf("revision = %q", b.Manifest.Revision)
	}
	if len(b.Modules) != 2 || b.Data["x"] == nil {
		t.Errorf("modules = %v, data = %v", modulePaths(b), b.Data)
	}

	_, err = LoadFS(fstest.MapFS{"bad.rego": {Data: []byte("package x\nallow if {")}}, "")
	if err == nil || !strings.Contains(err.Error(), "bad.rego:") {
		t.Errorf("LoadFS of invalid rego: %v", err)
	}
	if _, err := LoadFS(nil, ""); err == nil {
		t.Error("LoadFS(nil) succeeded")
	}
}

// TestOPAActivationLogOnce: OPA's "activated successfully" message is logged
// at INFO the first time per bundle and at DEBUG after that (a bundle server
// without ETags makes OPA activate, and log, at every poll).
func TestOPAActivationLogOnce(t *testing.T) {
	var buf bytes.Buffer
	log := newOPALogger(hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info}))
	a, b := log.WithFields(map[string]any{"name": "a"}), log.WithFields(map[string]any{"name": "b"})
	a.Info("Bundle loaded and activated successfully. Etag updated to %s.", "x")
	a.Info("Bundle loaded and activated successfully.")
	b.Info("Bundle loaded and activated successfully.")
	a.Info("Starting bundle loader.")
	out := buf.String()
	if n := strings.Count(out, "activated successfully"); n != 2 {
		t.Errorf("activation logged %d times at INFO, want 2 (once per bundle):\n%s", n, out)
	}
	if !strings.Contains(out, "Starting bundle loader") {
		t.Errorf("other INFO messages are dropped:\n%s", out)
	}
}
