package policies

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/policies/decision"
)

// bundleFiles serves bundle tarballs by name; Set replaces one atomically.
type bundleFiles struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (b *bundleFiles) Set(name string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files[name] = data
}

func (b *bundleFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	data, ok := b.files[strings.TrimPrefix(r.URL.Path, "/")]
	b.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(data)
}

// buildBundle builds a bundle of files with Build.
func buildBundle(t *testing.T, rev string, files map[string]string) []byte {
	t.Helper()
	dir := bundleDir(t, "src", files)
	var out bytes.Buffer
	if err := Build(context.Background(), BuildOptions{Paths: []string{dir}, Revision: rev}, &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// revisionPolicy decides allow and reports, as its reason, the revision it
// was built as, so a test can tell which policy made a decision.
func revisionPolicy(rev string) map[string]string {
	return map[string]string{
		".manifest":   `{"roots": ["app"]}`,
		"policy.rego": fmt.Sprintf("package app\n\ndecision := {\"allow\": true, \"reasons\": [%q]}\n", rev),
	}
}

func startEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func opaConfig(url string, bundles map[string]string) []byte {
	cfg := map[string]any{"services": map[string]any{"s": map[string]any{"url": url}}}
	bs := map[string]any{}
	for name, resource := range bundles {
		bs[name] = map[string]any{"service": "s", "resource": resource,
			"polling": map[string]any{"min_delay_seconds": 1, "max_delay_seconds": 1}}
	}
	cfg["bundles"] = bs
	out, _ := json.Marshal(cfg)
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestHotSwapIsAtomic hammers Decide from several goroutines while bundle
// revisions change under it: every decision must name the revision whose
// policy made it, and no decision may fail.
func TestHotSwapIsAtomic(t *testing.T) {
	files := &bundleFiles{files: map[string][]byte{"app.tar.gz": buildBundle(t, "r0", revisionPolicy("r0"))}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	e := startEngine(t, Config{OPA: opaConfig(srv.URL, map[string]string{"app": "app.tar.gz"}), Decision: "app/decision"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var decided, mismatched atomic.Int64
	var firstBad atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && i < 200000; i++ {
				d := e.Decide(ctx, pgInput(selectStmt))
				decided.Add(1)
				if !d.Allow || len(d.Reasons) != 1 || d.Bundles["app"].Revision != d.Reasons[0] {
					mismatched.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%+v", d))
				}
			}
		}()
	}
	for i := 1; i <= 3; i++ {
		rev := fmt.Sprintf("r%d", i)
		files.Set("app.tar.gz", buildBundle(t, rev, revisionPolicy(rev)))
		waitFor(t, "revision "+rev, func() bool { return e.Bundles()["app"].Revision == rev })
	}
	stop.Store(true)
	wg.Wait()
	if decided.Load() < 100 {
		t.Fatalf("only %d decisions during the swaps", decided.Load())
	}
	if mismatched.Load() > 0 {
		t.Fatalf("%d of %d decisions named another revision than the one that decided; first: %v",
			mismatched.Load(), decided.Load(), firstBad.Load())
	}
	if got := e.metrics.activations.Load(); got < 4 {
		t.Fatalf("activations = %d, want at least 4", got)
	}
}

// TestBundlesActiveTogetherAndRefused: two bundles with distinct roots are
// active together; a bundle that does not compile, and one whose roots
// overlap, are refused with the previous revision kept, visible in Status
// and metrics.
func TestBundlesActiveTogetherAndRefused(t *testing.T) {
	main := map[string]string{
		".manifest":   `{"roots": ["gate"]}`,
		"policy.rego": "package gate\n\ndecision := {\"allow\": input.postgres.database in data.lists.allowed_dbs}\n",
	}
	lists := map[string]string{
		".manifest": `{"roots": ["lists"]}`,
		"data.json": `{"lists": {"allowed_dbs": ["app"]}}`,
	}
	files := &bundleFiles{files: map[string][]byte{
		"main.tar.gz":  buildBundle(t, "m1", main),
		"lists.tar.gz": buildBundle(t, "l1", lists),
	}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &logs, mu: &logMu}, Level: hclog.Info})
	e := startEngine(t, Config{
		OPA:      opaConfig(srv.URL, map[string]string{"main": "main.tar.gz", "lists": "lists.tar.gz"}),
		Decision: "gate/decision", Logger: logger,
	})
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := e.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]decision.Bundle{"main": {Revision: "m1"}, "lists": {Revision: "l1"}}
	if d := e.Decide(ctx, pgInput(selectStmt)); !d.Allow || fmt.Sprint(d.Bundles) != fmt.Sprint(want) {
		t.Fatalf("with both bundles: %+v", d)
	}

	// Data-only update of one bundle swaps in its data.
	files.Set("lists.tar.gz", buildBundle(t, "l2", map[string]string{
		".manifest": `{"roots": ["lists"]}`, "data.json": `{"lists": {"allowed_dbs": ["other"]}}`,
	}))
	waitFor(t, "lists l2", func() bool { return e.Bundles()["lists"].Revision == "l2" })
	if d := e.Decide(ctx, pgInput(selectStmt)); d.Allow {
		t.Fatalf("after lists l2 the database is no longer allowed: %+v", d)
	}

	// A non-compiling revision is refused; m1 keeps deciding.
	files.Set("main.tar.gz", brokenBundle(t))
	waitFor(t, "compile error in status", func() bool { return bundleError(e, "main") != "" })
	if msg := bundleError(e, "main"); !strings.Contains(msg, "rego_parse_error") && !strings.Contains(msg, "rego_compile_error") {
		t.Fatalf("status error for a broken bundle: %s", msg)
	}
	if got := e.Bundles()["main"].Revision; got != "m1" {
		t.Fatalf("broken bundle changed the revision to %q", got)
	}
	// A revision that claims the other bundle's root is refused too.
	files.Set("main.tar.gz", buildBundle(t, "m3", map[string]string{
		".manifest":   `{"roots": ["gate", "lists"]}`,
		"policy.rego": "package gate\n\ndecision := {\"allow\": true}\n",
	}))
	waitFor(t, "root conflict in status", func() bool { return strings.Contains(bundleError(e, "main"), "overlap") })
	if got := e.Bundles()["main"].Revision; got != "m1" {
		t.Fatalf("conflicting bundle changed the revision to %q", got)
	}
	var m bytes.Buffer
	if err := e.WriteMetrics(&m); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`regate_policy_bundle_ok{bundle="main"} 0`, `regate_policy_bundle_ok{bundle="lists"} 1`,
		`regate_policy_bundle_info{bundle="main",revision="m1"} 1`} {
		if !strings.Contains(m.String(), w) {
			t.Errorf("metrics lack %s:\n%s", w, m.String())
		}
	}
	if !strings.Contains(m.String(), "regate_policy_activation_failures_total ") ||
		strings.Contains(m.String(), "regate_policy_activation_failures_total 0\n") {
		t.Errorf("failures not counted:\n%s", m.String())
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "[ERROR]") || !strings.Contains(logs.String(), "overlap") {
		t.Errorf("refusals not logged at ERROR:\n%s", logs.String())
	}
}

// TestNoBundleYetDenies: before a configured bundle has been activated,
// every decision denies with a reason saying so, and WaitReady says which
// bundle is missing.
func TestNoBundleYetDenies(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	e := startEngine(t, Config{OPA: opaConfig(srv.URL, map[string]string{"authz": "missing.tar.gz"})})
	d := e.Decide(context.Background(), pgInput(selectStmt))
	if d.Allow || !strings.Contains(d.Error, "no policy bundle is active yet") {
		t.Fatalf("decision before any bundle: %+v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err == nil || !strings.Contains(err.Error(), "authz") {
		t.Fatalf("WaitReady: %v", err)
	}
	if e.Status().Ready {
		t.Fatal("status ready without a bundle")
	}
}

// TestBadOPAConfig: a policy.opa that OPA rejects is an error at start.
func TestBadOPAConfig(t *testing.T) {
	_, err := New(context.Background(), Config{OPA: []byte(`{"bundles": {"x": {"service": "nope"}}}`)})
	if err == nil || !strings.Contains(err.Error(), "policy.opa") || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v", err)
	}
}

// TestBuildSignedBundleVerifies: a bundle signed by Build is accepted by a
// gateway configured with the public key and refused with another key.
func TestBuildSignedBundleVerifies(t *testing.T) {
	dir := bundleDir(t, "src", revisionPolicy("s1"))
	var signed bytes.Buffer
	if err := Build(context.Background(), BuildOptions{Paths: []string{dir}, Revision: "s1",
		SigningKey: "secret-one", SigningAlg: "HS256", KeyID: "k"}, &signed); err != nil {
		t.Fatal(err)
	}
	files := &bundleFiles{files: map[string][]byte{"app.tar.gz": signed.Bytes()}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	for _, tc := range []struct {
		secret string
		ok     bool
	}{{"secret-one", true}, {"secret-two", false}} {
		cfg := map[string]any{
			"services": map[string]any{"s": map[string]any{"url": srv.URL}},
			"bundles": map[string]any{"app": map[string]any{"service": "s", "resource": "app.tar.gz",
				"signing": map[string]any{"keyid": "k"}}},
			"keys": map[string]any{"k": map[string]any{"algorithm": "HS256", "key": tc.secret}},
		}
		raw, _ := json.Marshal(cfg)
		e := startEngine(t, Config{OPA: raw, Decision: "app/decision"})
		if tc.ok {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := e.WaitReady(ctx)
			cancel()
			if err != nil || e.Bundles()["app"].Revision != "s1" {
				t.Fatalf("right key: %v %v", err, e.Bundles())
			}
			continue
		}
		waitFor(t, "signature error", func() bool { return bundleError(e, "app") != "" })
		if len(e.Bundles()) != 0 || !strings.Contains(bundleError(e, "app"), "signature") {
			t.Fatalf("wrong key: %v %q", e.Bundles(), bundleError(e, "app"))
		}
	}
}

// TestBuildNamesBrokenFile: a build of a non-compiling policy fails naming
// the file and line.
func TestBuildNamesBrokenFile(t *testing.T) {
	dir := bundleDir(t, "src", map[string]string{"x.rego": "package x\n\np if {\n"})
	err := Build(context.Background(), BuildOptions{Paths: []string{dir}}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "x.rego:") || !strings.Contains(err.Error(), "rego_parse_error") ||
		!strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v", err)
	}
	if err := Build(context.Background(), BuildOptions{Paths: []string{filepath.Join(dir, "missing")}}, &bytes.Buffer{}); err == nil {
		t.Fatal("missing path built")
	}
}

func bundleError(e *Engine, name string) string {
	for _, b := range e.Status().Bundles {
		if b.Name == name && b.Code != "" {
			return b.Message + " " + strings.Join(b.Errors, " ")
		}
	}
	return ""
}

// brokenBundle is a tarball whose policy does not parse (Build refuses to
// make one, so it is written by hand).
func brokenBundle(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	for _, f := range []struct{ name, body string }{
		{"/.manifest", `{"revision": "m2", "roots": ["gate"]}`},
		{"/policy.rego", "package gate\n\ndecision := {\n"},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestLongPolling: with long_polling_timeout_seconds and a service that
// supports it, a new revision is active right after it is published, not
// after the (here one minute) polling delay.
func TestLongPolling(t *testing.T) {
	lp := &longPollServer{}
	lp.Set(buildBundle(t, "r1", revisionPolicy("r1")), `"1"`)
	srv := httptest.NewServer(lp)
	t.Cleanup(srv.Close) // after the engine's cleanup, which ends the held request
	raw, _ := json.Marshal(map[string]any{
		"services": map[string]any{"s": map[string]any{"url": srv.URL}},
		"bundles": map[string]any{"app": map[string]any{"service": "s", "resource": "app.tar.gz",
			"polling": map[string]any{"min_delay_seconds": 60, "max_delay_seconds": 120, "long_polling_timeout_seconds": 10}}},
	})
	e := startEngine(t, Config{OPA: raw, Decision: "app/decision"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a held long-poll request", func() bool { return lp.held.Load() > 0 })
	published := time.Now()
	lp.Set(buildBundle(t, "r2", revisionPolicy("r2")), `"2"`)
	waitFor(t, "r2", func() bool { return e.Bundles()["app"].Revision == "r2" })
	if d := time.Since(published); d > 5*time.Second {
		t.Fatalf("r2 took %v to activate: not long polling", d)
	}
}

// TestSignedLocalBundle: a signed .tar.gz given as a local bundle is refused
// (no key to verify it with; serve it through policy.opa with a file://
// resource and signing instead), and loads unverified only for local
// evaluation (what-if candidates).
func TestSignedLocalBundle(t *testing.T) {
	dir := bundleDir(t, "src", revisionPolicy("s1"))
	path := filepath.Join(t.TempDir(), "signed.tar.gz")
	var signed bytes.Buffer
	if err := Build(context.Background(), BuildOptions{Paths: []string{dir}, Revision: "s1",
		SigningKey: "secret", SigningAlg: "HS256", KeyID: "k"}, &signed); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, signed.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), Config{Bundle: path, Decision: "app/decision"}); err == nil || !strings.Contains(err.Error(), "verification") {
		t.Fatalf("signed local bundle loaded without a key: %v", err)
	}
	e := startEngine(t, Config{Bundle: path, Decision: "app/decision", Unverified: true})
	if d := e.Decide(context.Background(), pgInput(selectStmt)); !d.Allow || d.Reasons[0] != "s1" {
		t.Fatalf("unverified candidate: %+v", d)
	}
	// The same file through OPA's file:// loader, with the key, is verified.
	raw, _ := json.Marshal(map[string]any{
		"bundles": map[string]any{"app": map[string]any{"resource": "file://" + path, "signing": map[string]any{"keyid": "k"}}},
		"keys":    map[string]any{"k": map[string]any{"algorithm": "HS256", "key": "secret"}},
	})
	e = startEngine(t, Config{OPA: raw, Decision: "app/decision"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil || e.Bundles()["app"].Revision != "s1" {
		t.Fatalf("file:// signed bundle: %v %v", err, e.Bundles())
	}
}

// TestReloadLocalBundle: Reload (serve's SIGHUP) activates a changed local
// bundle atomically; a broken one is refused and the old revision stays.
func TestReloadLocalBundle(t *testing.T) {
	dir := bundleDir(t, "local", map[string]string{
		".manifest":   `{"revision": "l1"}`,
		"policy.rego": "package regate\n\ndecision := {\"allow\": true, \"reasons\": [\"l1\"]}\n",
	})
	e := startEngine(t, Config{Bundle: dir})
	ctx := context.Background()
	if d := e.Decide(ctx, pgInput(selectStmt)); d.Reasons[0] != "l1" || d.Bundles["local"].Revision != "l1" {
		t.Fatalf("before reload: %+v", d)
	}
	writeFile(t, filepath.Join(dir, ".manifest"), `{"revision": "l2"}`)
	writeFile(t, filepath.Join(dir, "policy.rego"), "package regate\n\ndecision := {\"allow\": false, \"reasons\": [\"l2\"]}\n")
	if name, rev, err := e.Reload(ctx); err != nil || name != "local" || rev != "l2" {
		t.Fatalf("reload: %q %q %v", name, rev, err)
	}
	if d := e.Decide(ctx, pgInput(selectStmt)); d.Allow || d.Reasons[0] != "l2" || d.Bundles["local"].Revision != "l2" {
		t.Fatalf("after reload: %+v", d)
	}
	writeFile(t, filepath.Join(dir, ".manifest"), `{"revision": "l3"}`)
	writeFile(t, filepath.Join(dir, "policy.rego"), "package regate\n\ndecision := {\n")
	if _, _, err := e.Reload(ctx); err == nil || !strings.Contains(err.Error(), "policy.rego:") {
		t.Fatalf("broken reload: %v", err)
	}
	writeFile(t, filepath.Join(dir, "policy.rego"), "package regate\n\ndecision := {\"allow\": true}\n")
	writeFile(t, filepath.Join(dir, "data.json"), `{"regate": {"decision": 1}}`) // conflicts with the rule
	if _, _, err := e.Reload(ctx); err == nil {
		t.Fatal("a bundle whose data conflicts with its rules was activated")
	}
	if d := e.Decide(ctx, pgInput(selectStmt)); d.Allow || d.Reasons[0] != "l2" || d.Bundles["local"].Revision != "l2" {
		t.Fatalf("refused reloads changed the policy: %+v", d)
	}
	if msg := bundleError(e, "local"); !strings.Contains(msg, "local") {
		t.Fatalf("the refused reload is not in the status: %q", msg)
	}
	var m bytes.Buffer
	_ = e.WriteMetrics(&m)
	if !strings.Contains(m.String(), `regate_policy_bundle_ok{bundle="local"} 0`) {
		t.Fatalf("the refused reload is not in the metrics:\n%s", m.String())
	}
	if _, _, err := startEngine(t, Config{}).Reload(ctx); err == nil {
		t.Fatal("the embedded library reloaded")
	}
}

// TestOPAConfigAsYAML: Config.OPA may be YAML, as its documentation says.
func TestOPAConfigAsYAML(t *testing.T) {
	files := &bundleFiles{files: map[string][]byte{"app.tar.gz": buildBundle(t, "y1", revisionPolicy("y1"))}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	yaml := fmt.Sprintf("services:\n  s:\n    url: %q\nbundles:\n  app:\n    service: s\n    resource: app.tar.gz\n", srv.URL)
	e := startEngine(t, Config{OPA: []byte(yaml), Decision: "app/decision"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil || e.Bundles()["app"].Revision != "y1" {
		t.Fatalf("YAML OPA configuration: %v %v", err, e.Bundles())
	}
}
