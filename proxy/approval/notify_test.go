package approval

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestWebhooksDeliverRetryAndLog(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string][]string{}
	fails := 2 // the json hook fails twice before it succeeds
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path == "/json" && fails > 0 {
			fails--
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		bodies[r.URL.Path] = append(bodies[r.URL.Path], string(b))
	}))
	defer srv.Close()
	var logs strings.Builder
	var logMu sync.Mutex
	n := &Notifier{
		Hooks:   []Webhook{{URL: srv.URL + "/json"}, {URL: srv.URL + "/slack", Format: "slack"}, {URL: srv.URL + "/down"}},
		Backoff: 10 * time.Millisecond,
		Logger:  hclog.New(&hclog.LoggerOptions{Output: lockedWriter{&logMu, &logs}}),
	}
	r := Request{ID: "abc123defg", Requester: agent, Target: "db", Command: "UPDATE t SET x = 1", Groups: []string{"dba"}, Reason: "prod"}
	start := time.Now()
	n.Notify(r) // never blocks
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("Notify blocked the caller")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(bodies["/json"]) == 1 && len(bodies["/slack"]) == 1
		mu.Unlock()
		logMu.Lock()
		logged := strings.Contains(logs.String(), "approval notification failed")
		logMu.Unlock()
		if done && logged {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var generic struct {
		Type     string  `json:"type"`
		Approval Request `json:"approval"`
		Approve  string  `json:"approve"`
	}
	if len(bodies["/json"]) != 1 || json.Unmarshal([]byte(bodies["/json"][0]), &generic) != nil ||
		generic.Type != "approval_requested" || generic.Approval.ID != r.ID || generic.Approve != "regate approve abc123defg" {
		t.Fatalf("json hook got %v", bodies["/json"])
	}
	var slack struct{ Text string }
	if len(bodies["/slack"]) != 1 || json.Unmarshal([]byte(bodies["/slack"][0]), &slack) != nil ||
		!strings.Contains(slack.Text, "regate approve abc123defg") || !strings.Contains(slack.Text, "agent-7") {
		t.Fatalf("slack hook got %v", bodies["/slack"])
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), "approval notification failed") || strings.Contains(logs.String(), "/down") {
		t.Fatalf("failure not logged, or the URL path leaked: %s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
