package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
)

// Issuer is a real OIDC issuer over HTTP (mockoidc): discovery and JWKS.
type Issuer struct {
	m *mockoidc.MockOIDC
}

// StartIssuer starts an issuer with a fresh RSA key on a loopback port.
func StartIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mockoidc.NewServer(key)
	if err != nil {
		t.Fatal(err)
	}
	// mockoidc computes the key ID on first use and caches it without a lock,
	// and both the JWKS handler and Sign use it: compute it before serving,
	// so that every later call only reads it.
	if _, err := m.Keypair.KeyID(); err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return &Issuer{m: m}
}

// URL is the issuer URL (the `iss` of its tokens).
func (i *Issuer) URL() string { return i.m.Issuer() }

// Claims builds standard claims for sub, valid for an hour, audience aud.
func (i *Issuer) Claims(sub, aud string, groups ...string) jwt.MapClaims {
	now := time.Now()
	if groups == nil {
		groups = []string{}
	}
	return jwt.MapClaims{
		"iss": i.URL(), "sub": sub, "aud": aud, "groups": groups,
		"email": sub + "@example.com", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

// Sign signs claims with the issuer's key.
func (i *Issuer) Sign(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	tok, err := i.m.Keypair.SignJWT(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Token is a valid token for sub with audience aud.
func (i *Issuer) Token(t testing.TB, sub, aud string, groups ...string) string {
	return i.Sign(t, i.Claims(sub, aud, groups...))
}

// Forge signs claims with a different key but the issuer's key id.
func (i *Issuer) Forge(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := i.m.Keypair.KeyID()
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
