package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/policies/decision"
)

// TestDecisionLogMasking: exported events go through OPA's decision-log
// plugin, so data.system.log.mask erases and upserts, and drop drops.
func TestDecisionLogMasking(t *testing.T) {
	dir := bundleDir(t, "b", map[string]string{
		"policy.rego": "package regate\n\ndecision := {\"allow\": true}\n",
		"log.rego": `package system.log

mask contains "/input/identity/claims"

mask contains {"op": "upsert", "path": "/input/session/client_addr", "value": "x.x.x.x"}

drop if input.input.postgres.database == "secret"
`,
	})
	e := startEngine(t, Config{Bundle: dir})
	var out bytes.Buffer
	dl, err := e.NewDecisionLog(&out)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(pgInput(selectStmt))
	ctx := context.Background()
	n, err := dl.Write(ctx, Recorded{DecisionID: "d1", Path: "regate/decision", Input: in,
		Result: map[string]any{"allow": true}, Bundles: map[string]decision.Bundle{"b": {Revision: "7"}}, Time: time.Unix(0, 0)})
	if err != nil || n != 1 {
		t.Fatalf("write: %d %v", n, err)
	}
	secret := pgInput(selectStmt)
	secret.Postgres.Database = "secret"
	in2, _ := json.Marshal(secret)
	if n, err := dl.Write(ctx, Recorded{DecisionID: "d2", Path: "regate/decision", Input: in2, Time: time.Unix(0, 0)}); err != nil || n != 0 {
		t.Fatalf("dropped event written: %d %v", n, err)
	}
	var ev map[string]any
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	input := ev["input"].(map[string]any)
	if _, ok := input["identity"].(map[string]any)["claims"]; ok {
		t.Errorf("claims not erased: %s", out.String())
	}
	if got := input["session"].(map[string]any)["client_addr"]; got != "x.x.x.x" {
		t.Errorf("client_addr = %v", got)
	}
	if fmt.Sprint(ev["erased"]) != "[/input/identity/claims]" || fmt.Sprint(ev["masked"]) != "[/input/session/client_addr]" {
		t.Errorf("erased %v masked %v", ev["erased"], ev["masked"])
	}
	if ev["decision_id"] != "d1" || ev["path"] != "regate/decision" || fmt.Sprint(ev["bundles"]) != "map[b:map[revision:7]]" {
		t.Errorf("event: %s", out.String())
	}
}

// TestOPADecisionLogsConfigured: with decision_logs in the OPA
// configuration, every decision reaches OPA's decision-log plugin (here its
// console output, which goes to regate's logger).
func TestOPADecisionLogsConfigured(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &logs, mu: &mu}, Level: hclog.Info})
	e := startEngine(t, Config{OPA: []byte(`{"decision_logs": {"console": true}}`), Logger: logger})
	d := e.Decide(context.Background(), pgInput(dropStmt))
	if d.Allow {
		t.Fatal("DROP allowed")
	}
	waitFor(t, "the console decision log", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), d.ID)
	})
}

// longPollServer serves one bundle as an OPA bundle service that supports
// long polling: a request carrying the current ETag and "Prefer: wait=N"
// is held until the bundle changes (or N seconds pass).
type longPollServer struct {
	mu      sync.Mutex
	data    []byte
	etag    string
	changed chan struct{}
	held    atomic.Int64
}

func (s *longPollServer) Set(data []byte, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.etag = data, etag
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

func (s *longPollServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data, etag, changed := s.data, s.etag, s.changed
	s.mu.Unlock()
	if r.Header.Get("If-None-Match") == etag {
		if !strings.Contains(r.Header.Get("Prefer"), "wait=") {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.held.Add(1)
		select {
		case <-changed:
			s.mu.Lock()
			data, etag = s.data, s.etag
			s.mu.Unlock()
		case <-time.After(10 * time.Second):
			w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
	w.Header().Set("ETag", etag)
	_, _ = w.Write(data)
}
