package identity_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/proxy/identity"
	"github.com/regate/regate/proxy/identity/devidp"
)

func startDevIdP(t *testing.T, addr string) *devidp.Server {
	t.Helper()
	s, err := devidp.Start(context.Background(), addr, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("devidp.Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestVerifyDevIdPTokens(t *testing.T) {
	idp := startDevIdP(t, "127.0.0.1:0")
	v, logs := newVerifier(t, identity.Config{Issuer: idp.Issuer()})

	tok, err := idp.Mint("bob", []string{"dev", "ops"}, "bob@example.com", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Subject != "bob" || id.Email != "bob@example.com" || id.Issuer != idp.Issuer() ||
		!reflect.DeepEqual(id.Groups, []string{"dev", "ops"}) {
		t.Errorf("identity = %+v", id)
	}
	if _, ok := id.Claims["jti"].(string); !ok {
		t.Errorf("claims = %#v, want a jti", id.Claims)
	}

	// The access token from the HTTP endpoint verifies too.
	access, err := devidp.RequestToken(context.Background(), idp.Issuer(), "carol", nil, "", "", 0)
	if err != nil {
		t.Fatalf("RequestToken: %v", err)
	}
	id, err = v.Verify(context.Background(), access)
	if err != nil {
		t.Fatalf("Verify(access token): %v", err)
	}
	if id.Subject != "carol" || id.Email != "" || id.Groups == nil || len(id.Groups) != 0 {
		t.Errorf("identity = %+v", id)
	}

	// A token minted for another audience is refused.
	other, err := idp.Mint("bob", nil, "", "kubernetes", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), other)
	wantRefused(t, err, identity.ErrAudience, `token audience [kubernetes] does not include "regate"`, other, logs)

	// A token of another devidp instance (another key, another issuer) is refused.
	idp2 := startDevIdP(t, "127.0.0.1:0")
	foreign, err := idp2.Mint("bob", nil, "", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), foreign)
	if !errors.Is(err, identity.ErrIssuer) {
		t.Errorf("foreign token: %v, want ErrIssuer", err)
	}
	noLeak(t, logs.String(), tok)
	noLeak(t, logs.String(), access)
}

// TestIssuerUnreachableAtStart: New succeeds, Verify fails closed while the
// issuer is down, and succeeds once it is up (after the retry backoff).
func TestIssuerUnreachableAtStart(t *testing.T) {
	addr := freeAddr(t)
	issuer := "http://" + addr
	v, logs := newVerifier(t, identity.Config{Issuer: issuer})
	if !strings.Contains(logs.String(), "OIDC discovery failed") {
		t.Errorf("no warning logged for the unreachable issuer; log:\n%s", logs)
	}

	// A well-formed RS256 token, so that only reachability is in question.
	early := handmade(t, map[string]any{"alg": "RS256"}, map[string]any{"iss": issuer}, []byte("signature"))
	_, err := v.Verify(context.Background(), early)
	if !errors.Is(err, identity.ErrUnreachable) ||
		!strings.HasPrefix(err.Error(), "identity provider unreachable: ") {
		t.Fatalf("Verify while the issuer is down: %v, want ErrUnreachable", err)
	}

	idp := startDevIdP(t, addr)
	tok, err := idp.Mint("alice", []string{"dba"}, "", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		id, err := v.Verify(context.Background(), tok)
		if err == nil {
			if id.Subject != "alice" {
				t.Errorf("identity = %+v", id)
			}
			break
		}
		if !errors.Is(err, identity.ErrUnreachable) {
			t.Fatalf("Verify: %v, want ErrUnreachable until discovery succeeds", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Verify still failing after the issuer came up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	noLeak(t, logs.String(), tok)
}

// TestKeysUnreachable: discovery succeeded, but the JWKS cannot be fetched.
func TestKeysUnreachable(t *testing.T) {
	m := startMock(t)
	v, logs := newVerifier(t, identity.Config{Issuer: m.Issuer()})
	tok := signMock(t, m, claimsFor(m, nil))
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(context.Background(), tok)
	if !errors.Is(err, identity.ErrUnreachable) ||
		!strings.HasPrefix(err.Error(), "identity provider unreachable: fetching the issuer's signing keys") {
		t.Fatalf("Verify: %v, want ErrUnreachable", err)
	}
	noLeak(t, err.Error(), tok)
	noLeak(t, logs.String(), tok)
}
