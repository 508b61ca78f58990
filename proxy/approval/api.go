package approval

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/parse"
)

// Authenticator verifies the Bearer token of an admin API call.
type Authenticator interface {
	Verify(ctx context.Context, token string) (parse.Identity, error)
}

// Handler serves the approval admin API (JSON):
//
//	GET  /v1/approvals[?state=pending|approved|denied|expired|all]   requests the caller may see (default pending)
//	GET  /v1/approvals/{id}
//	POST /v1/approvals/{id}/approve   {"reason": "optional"}
//	POST /v1/approvals/{id}/deny      {"reason": "required"}
//
// Every call needs "Authorization: Bearer <OIDC token>". A caller sees the
// requests they made and those they may decide (they are in one of the
// approver groups).
func Handler(b *Broker, auth Authenticator, log hclog.Logger) http.Handler {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	a := &api{b: b, auth: auth, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/approvals", a.list)
	mux.HandleFunc("GET /v1/approvals/{id}", a.show)
	mux.HandleFunc("POST /v1/approvals/{id}/approve", a.decide(Approved))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", a.decide(Denied))
	return mux
}

type api struct {
	b    *Broker
	auth Authenticator
	log  hclog.Logger
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

// caller authenticates the request; on failure it has answered 401.
func (a *api) caller(w http.ResponseWriter, r *http.Request) (Person, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="regate"`)
		fail(w, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <OIDC token>)")
		return Person{}, false
	}
	id, err := a.auth.Verify(r.Context(), strings.TrimSpace(tok))
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="regate", error="invalid_token"`)
		fail(w, http.StatusUnauthorized, "authentication failed: "+err.Error())
		return Person{}, false
	}
	return Person{Subject: id.Subject, Issuer: id.Issuer, Email: id.Email, Groups: id.Groups}, true
}

func visible(p Person, r Request) bool { return p.Same(r.Requester) || inGroups(p, r.Groups) }

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	who, ok := a.caller(w, r)
	if !ok {
		return
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "":
		state = Pending
	case "all":
		state = ""
	case Pending, Approved, Denied, Expired:
	default:
		fail(w, http.StatusBadRequest, "state must be one of pending, approved, denied, expired, all")
		return
	}
	all, err := a.b.List(r.Context(), state)
	if err != nil {
		fail(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := []Request{}
	for _, req := range all {
		if visible(who, req) {
			out = append(out, req)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) show(w http.ResponseWriter, r *http.Request) {
	who, ok := a.caller(w, r)
	if !ok {
		return
	}
	req, err := a.b.Get(r.Context(), r.PathValue("id"))
	if err != nil || !visible(who, req) {
		fail(w, http.StatusNotFound, "no approval request "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (a *api) decide(state string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := a.caller(w, r)
		if !ok {
			return
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil {
				fail(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
				return
			}
		}
		if state == Denied && strings.TrimSpace(body.Reason) == "" {
			fail(w, http.StatusBadRequest, "a denial needs a reason")
			return
		}
		id := r.PathValue("id")
		var req Request
		var err error
		if state == Approved {
			req, err = a.b.Approve(r.Context(), id, who, body.Reason)
		} else {
			req, err = a.b.Deny(r.Context(), id, who, body.Reason)
		}
		switch {
		case errors.Is(err, ErrNotFound):
			fail(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrForbidden):
			fail(w, http.StatusForbidden, err.Error())
		case errors.Is(err, ErrNotPending):
			fail(w, http.StatusConflict, err.Error())
		case err != nil:
			fail(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusOK, req)
		}
	}
}
