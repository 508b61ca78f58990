package approval

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/regate/regate/parse"
)

type tokens map[string]Person

func (t tokens) Verify(_ context.Context, tok string) (parse.Identity, error) {
	p, ok := t[tok]
	if !ok {
		return parse.Identity{}, errors.New("token signature does not verify with the issuer's keys")
	}
	return parse.Identity{Subject: p.Subject, Issuer: p.Issuer, Groups: p.Groups}, nil
}

func TestAdminAPI(t *testing.T) {
	b, _ := newBroker(t, 0)
	r := ask(t, b, "fp")
	srv := httptest.NewServer(Handler(b, tokens{"a": agent, "d": dana, "i": ivan}, nil))
	defer srv.Close()
	call := func(method, path, tok, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, sb.String()
	}
	cases := []struct {
		method, path, tok, body string
		status                  int
		want                    string
	}{
		{"GET", "/v1/approvals", "", "", 401, "missing bearer token"},
		{"GET", "/v1/approvals", "forged", "", 401, "signature"},
		{"GET", "/v1/approvals", "i", "", 200, "[]"}, // not the requester, not an approver
		{"GET", "/v1/approvals", "d", "", 200, r.ID},
		{"GET", "/v1/approvals?state=bogus", "d", "", 400, "state must be"},
		{"GET", "/v1/approvals/" + r.ID, "i", "", 404, "no approval request"},
		{"GET", "/v1/approvals/" + r.ID, "a", "", 200, `"state":"pending"`},
		{"POST", "/v1/approvals/" + r.ID + "/deny", "d", `{}`, 400, "needs a reason"},
		{"POST", "/v1/approvals/" + r.ID + "/approve", "a", "", 403, "own request"},
		{"POST", "/v1/approvals/" + r.ID + "/approve", "i", "", 403, "approver groups"},
		{"POST", "/v1/approvals/" + r.ID + "/approve", "d", `{"reason":"ok"}`, 200, `"state":"approved"`},
		{"POST", "/v1/approvals/" + r.ID + "/deny", "d", `{"reason":"no"}`, 409, "no longer pending"},
		{"POST", "/v1/approvals/nope/approve", "d", "", 404, "no such approval request"},
	}
	for _, c := range cases {
		status, body := call(c.method, c.path, c.tok, c.body)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %s as %q: %d %s, want %d containing %q", c.method, c.path, c.tok, status, body, c.status, c.want)
		}
	}
}
