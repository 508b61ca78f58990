package test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/regate/regate/test/testenv"
)

// bundleServer is a plain HTTP file server for bundles, with ETag and
// If-None-Match as any static file server or CDN has.
type bundleServer struct {
	dir                string
	requests, notModif atomic.Int64
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	data, err := os.ReadFile(filepath.Join(s.dir, filepath.Base(r.URL.Path)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		s.notModif.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/gzip")
	_, _ = w.Write(data)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

func policyDir(t *testing.T, parent, name, rego string) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "policy.rego", rego)
	return dir
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func mustBlock(t *testing.T, ctx context.Context, conn *pgx.Conn, sql, reason string) {
	t.Helper()
	_, err := conn.Exec(ctx, sql)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, reason) {
		t.Fatalf("%s: want 42501 %q, got %v", sql, reason, err)
	}
}

// publish replaces the served file atomically, as a deploy would.
func publish(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// replaceInBundle rewrites one file of a bundle tarball, keeping everything
// else (including .signatures.json) as it was.
func replaceInBundle(t *testing.T, bundle []byte, name string, content []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	replaced := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if path.Base(h.Name) == name {
			data, replaced = content, true
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if !replaced {
		t.Fatalf("%s not in the bundle", name)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type policyStatus struct {
	Active  map[string]struct{ Revision string } `json:"active"`
	Ready   bool                                 `json:"ready"`
	Bundles []struct {
		Name           string   `json:"name"`
		ActiveRevision string   `json:"active_revision"`
		Code           string   `json:"code"`
		Message        string   `json:"message"`
		Errors         []string `json:"errors"`
		LastRequest    string   `json:"last_request"`
	} `json:"bundles"`
}

func getStatus(t *testing.T, admin string) policyStatus {
	t.Helper()
	var body struct {
		Policy policyStatus `json:"policy"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+admin+"/v1/status")), &body); err != nil {
		t.Fatal(err)
	}
	return body.Policy
}

func waitStatus(t *testing.T, admin string, ok func(policyStatus) bool) policyStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := getStatus(t, admin)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never reached the expected state: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitBundleError waits for the bundle plugin to report an error containing
// want on /v1/status.
func waitBundleError(t *testing.T, admin string, want string) {
	t.Helper()
	s := waitStatus(t, admin, func(s policyStatus) bool {
		for _, b := range s.Bundles {
			if b.Code != "" && strings.Contains(b.Message+" "+strings.Join(b.Errors, " "), want) {
				return true
			}
		}
		return false
	})
	if s.Active["authz"].Revision != "v1" || s.Bundles[0].ActiveRevision != "v1" {
		t.Fatalf("a refused bundle changed the active revision: %+v", s)
	}
}

func activeRevision(t *testing.T, admin string) string {
	t.Helper()
	return getStatus(t, admin).Active["authz"].Revision
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// sessionIDs maps each subject to its (last) session id.
func sessionIDs(t *testing.T, gw *testenv.Gateway) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, s := range listSessions(t, gw) {
		if _, seen := ids[s.Subject]; !seen {
			ids[s.Subject] = s.ID
		}
	}
	return ids
}

func readNDJSON(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var events []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", path, err, sc.Text())
		}
		events = append(events, ev)
	}
	return events
}
