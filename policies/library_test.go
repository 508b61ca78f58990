package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/format"
)

func TestDefaultLibraryRegoTests(t *testing.T) {
	var out bytes.Buffer
	passed, failed, err := Test(context.Background(), nil, &out, TestOptions{Verbose: testing.Verbose()})
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	t.Log(out.String())
	if failed != 0 || passed == 0 {
		t.Fatalf("Rego tests: %d passed, %d failed\n%s", passed, failed, out.String())
	}
}

func TestDefaultLibraryIsFormatted(t *testing.T) {
	files, err := fs.Glob(Default(), "*.rego")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"postgres.rego", "postgres_test.rego", "regate.rego", "regate_test.rego"}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Errorf("embedded files = %v, want %v", files, want)
	}
	for _, name := range files {
		src, err := fs.ReadFile(Default(), name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := format.Source(name, src)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, src) {
			t.Errorf("%s is not opa fmt clean; formatted:\n%s", name, got)
		}
	}
}

func TestTestReportsFailuresInPaths(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package p\n\nx := 1\n")
	writeFile(t, filepath.Join(dir, "p_test.rego"), `package p_test

import data.p

test_ok if p.x == 1

test_bad if p.x == 2

test_error if 1 / 0 == 1
`)
	var out bytes.Buffer
	passed, failed, err := Test(context.Background(), []string{dir}, &out, TestOptions{})
	if err != nil {
		t.Fatalf("Test: %v", err)
	}
	if passed != 1 || failed != 2 {
		t.Errorf("passed %d, failed %d; want 1 and 2\n%s", passed, failed, out.String())
	}
	for _, want := range []string{"test_bad: FAIL", "divide by zero", "PASS: 1/3", "ERROR: 1/3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestTestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "broken.rego"), "package p\n\nx if {\n")
	_, _, err := Test(context.Background(), []string{dir}, &bytes.Buffer{}, TestOptions{})
	if err == nil || !strings.Contains(err.Error(), "broken.rego:") {
		t.Errorf("Test on a syntax error: %v", err)
	}
	_, _, err = Test(context.Background(), []string{filepath.Join(dir, "missing")}, &bytes.Buffer{}, TestOptions{})
	if err == nil {
		t.Error("Test on a missing path succeeded")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCoverageReport: --coverage prints OPA's JSON coverage report of the
// library's tests.
func TestCoverageReport(t *testing.T) {
	var out bytes.Buffer
	passed, failed, err := Test(context.Background(), nil, &out, TestOptions{Coverage: true})
	if err != nil || failed != 0 || passed == 0 {
		t.Fatalf("passed %d failed %d err %v", passed, failed, err)
	}
	var report struct {
		Files    map[string]any `json:"files"`
		Coverage float64        `json:"coverage"`
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("not a JSON coverage report: %v\n%s", err, out.String())
	}
	if report.Coverage < 50 || report.Files["postgres.rego"] == nil {
		t.Fatalf("coverage %.1f%% over %d files", report.Coverage, len(report.Files))
	}
}
