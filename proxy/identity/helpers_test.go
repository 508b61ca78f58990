package identity_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/regate/regate/proxy/identity"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startMock runs a real mockoidc issuer for the test.
func startMock(t *testing.T) *mockoidc.MockOIDC {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatalf("mockoidc.Run: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// newVerifier builds a Verifier for issuer whose log goes to the returned
// buffer (at trace level, to catch any token leaking into it).
func newVerifier(t *testing.T, cfg identity.Config) (*identity.Verifier, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Audience == "" {
		cfg.Audience = "regate"
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	v, err := identity.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("identity.New: %v", err)
	}
	return v, logs
}

// claimsFor returns valid claims for m, then applies edits (a nil value
// deletes the claim).
func claimsFor(m *mockoidc.MockOIDC, edits map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss":    m.Issuer(),
		"sub":    "alice",
		"aud":    "regate",
		"exp":    now.Add(time.Hour).Unix(),
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"email":  "alice@example.com",
		"groups": []string{"dba", "oncall"},
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// signMock signs claims with mockoidc's own key (RS256, with its kid).
func signMock(t *testing.T, m *mockoidc.MockOIDC, c jwt.MapClaims) string {
	t.Helper()
	tok, err := m.Keypair.SignJWT(c)
	if err != nil {
		t.Fatalf("SignJWT: %v", err)
	}
	return tok
}

// handmade builds a compact JWS from a header, claims and a raw signature.
func handmade(t *testing.T, header map[string]any, c jwt.MapClaims, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString(sig)
}

// wantRefused checks that err is an *identity.Error with the given reason and
// exact message, and that neither the message nor the log shows the token.
func wantRefused(t *testing.T, err error, reason error, msg, token string, logs *syncBuffer) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted, want %q", msg)
	}
	var e *identity.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T (%v) is not an *identity.Error", err, err)
	}
	if !errors.Is(err, reason) {
		t.Errorf("error %q: reason %v, want %v", err, e.Reason, reason)
	}
	if err.Error() != msg {
		t.Errorf("message\n got %q\nwant %q", err.Error(), msg)
	}
	noLeak(t, err.Error(), token)
	if logs != nil {
		noLeak(t, logs.String(), token)
	}
}

// noLeak fails if text contains the token or any of its non-trivial parts.
func noLeak(t *testing.T, text, token string) {
	t.Helper()
	if token == "" {
		return
	}
	for _, part := range append(strings.Split(token, "."), token) {
		if len(part) >= 8 && strings.Contains(text, part) {
			t.Errorf("token (or part of it) leaked into %q", text)
		}
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
