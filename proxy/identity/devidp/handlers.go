package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/regate/regate/proxy/identity"
)

// maxBodyBytes bounds a /token request body.
const maxBodyBytes = 64 << 10

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", s.handleDiscovery)
	mux.HandleFunc("GET /jwks", s.handleJWKS)
	mux.HandleFunc("POST /token", s.handleToken)
	return mux
}

func (s *Server) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.issuer,
		"jwks_uri":                              s.issuer + "/jwks",
		"token_endpoint":                        s.issuer + "/token",
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "groups", "email"},
	})
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(s.jwks)
}

// tokenRequest is the body of POST /token.
type tokenRequest struct {
	Sub    string
	Groups []string
	Email  string
	Aud    string
	TTL    time.Duration
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r) {
		s.log.Warn("refused a token request from a non-loopback client", "remote_addr", r.RemoteAddr, "host", r.Host)
		writeError(w, http.StatusForbidden, "access_denied", "tokens are issued to loopback clients only")
		return
	}
	req, err := readTokenRequest(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	access, err := s.Mint(req.Sub, req.Groups, req.Email, req.Aud, req.TTL)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", strings.TrimPrefix(err.Error(), "devidp: "))
		return
	}
	idToken, err := s.Mint(req.Sub, req.Groups, req.Email, req.Aud, req.TTL)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	s.log.Info("issued a development token", "sub", req.Sub, "groups", cleanGroups(req.Groups),
		"aud", req.Aud, "ttl", ttl)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": access,
		"id_token":     idToken,
		"token_type":   "Bearer",
		"expires_in":   int64(ttl / time.Second),
	})
}

// fromLoopback tells whether the request comes from a loopback address and
// names a loopback host (a page whose DNS name was rebound to 127.0.0.1
// sends its own name in Host).
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return identity.IsLoopbackHost(h)
}

// readTokenRequest decodes a JSON or form body.
func readTokenRequest(w http.ResponseWriter, r *http.Request) (tokenRequest, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var (
		req tokenRequest
		ttl string
	)
	if mt == "application/json" {
		var body struct {
			Sub    string          `json:"sub"`
			Groups json.RawMessage `json:"groups"`
			Email  string          `json:"email"`
			Aud    string          `json:"aud"`
			TTL    string          `json:"ttl"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return req, fmt.Errorf("bad JSON body: %w", err)
		}
		groups, err := jsonGroups(body.Groups)
		if err != nil {
			return req, err
		}
		req = tokenRequest{Sub: body.Sub, Groups: groups, Email: body.Email, Aud: body.Aud}
		ttl = body.TTL
	} else {
		if err := r.ParseForm(); err != nil {
			return req, fmt.Errorf("bad form body: %w", err)
		}
		req = tokenRequest{Sub: r.PostForm.Get("sub"), Email: r.PostForm.Get("email"), Aud: r.PostForm.Get("aud")}
		for _, g := range r.PostForm["groups"] {
			req.Groups = append(req.Groups, strings.Split(g, ",")...)
		}
		ttl = r.PostForm.Get("ttl")
	}
	if strings.TrimSpace(req.Sub) == "" {
		return req, errors.New("sub is required")
	}
	if ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 || d > MaxTTL {
			return req, fmt.Errorf("ttl %q must be a Go duration between 1s and %s", ttl, MaxTTL)
		}
		req.TTL = d
	}
	return req, nil
}

// jsonGroups accepts an array of strings or one comma-separated string.
func jsonGroups(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, errors.New("groups must be an array of strings or a comma-separated string")
	}
	return strings.Split(one, ","), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}
