package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/regate/regate/proxy/identity"
)

func TestVerifyValidToken(t *testing.T) {
	m := startMock(t)
	v, logs := newVerifier(t, identity.Config{Issuer: m.Issuer()})
	tok := signMock(t, m, claimsFor(m, map[string]any{"aud": []string{"other", "regate"}}))

	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Subject != "alice" || id.Issuer != m.Issuer() || id.Email != "alice@example.com" {
		t.Errorf("identity = %+v", id)
	}
	if !reflect.DeepEqual(id.Groups, []string{"dba", "oncall"}) {
		t.Errorf("groups = %#v", id.Groups)
	}
	if id.Claims["sub"] != "alice" || id.Claims["iss"] != m.Issuer() {
		t.Errorf("claims = %#v", id.Claims)
	}
	if _, ok := id.Claims["exp"].(float64); !ok {
		t.Errorf("exp claim is %T, want float64 (plain JSON)", id.Claims["exp"])
	}
	// Surrounding whitespace (a pasted token) is tolerated.
	if _, err := v.Verify(context.Background(), " "+tok+"\n"); err != nil {
		t.Errorf("Verify(padded token): %v", err)
	}
	noLeak(t, logs.String(), tok)
}

func TestVerifyRefusals(t *testing.T) {
	m := startMock(t)
	v, logs := newVerifier(t, identity.Config{Issuer: m.Issuer()})
	kid, err := m.Keypair.KeyID()
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	soon := time.Now().Add(3 * time.Minute).Truncate(time.Second)

	cases := []struct {
		name   string
		token  string
		reason error
		msg    string
	}{
		{"expired", signMock(t, m, claimsFor(m, map[string]any{"exp": past.Unix()})),
			identity.ErrExpired, "token expired at " + past.UTC().Format(time.RFC3339)},
		{"no exp", signMock(t, m, claimsFor(m, map[string]any{"exp": nil})),
			identity.ErrClaims, `token has no "exp" claim`},
		{"nbf far in the future (go-oidc)", signMock(t, m, claimsFor(m, map[string]any{"nbf": future.Unix()})),
			identity.ErrNotYetValid, "token is not valid before " + future.UTC().Format(time.RFC3339)},
		{"nbf minutes in the future (own check)", signMock(t, m, claimsFor(m, map[string]any{"nbf": soon.Unix()})),
			identity.ErrNotYetValid, "token is not valid before " + soon.UTC().Format(time.RFC3339)},
		{"iat in the future", signMock(t, m, claimsFor(m, map[string]any{"iat": soon.Unix()})),
			identity.ErrNotYetValid, "token was issued in the future (iat " + soon.UTC().Format(time.RFC3339) + ")"},
		{"wrong audience", signMock(t, m, claimsFor(m, map[string]any{"aud": []string{"x", "y"}})),
			identity.ErrAudience, `token audience [x y] does not include "regate"`},
		{"wrong issuer", signMock(t, m, claimsFor(m, map[string]any{"iss": "https://evil.example"})),
			identity.ErrIssuer, fmt.Sprintf(`token issuer "https://evil.example" is not the configured issuer %q`, m.Issuer())},
		{"no issuer", signMock(t, m, claimsFor(m, map[string]any{"iss": nil})),
			identity.ErrIssuer, `token has no "iss" claim`},
		{"no subject", signMock(t, m, claimsFor(m, map[string]any{"sub": nil})),
			identity.ErrClaims, `token has no "sub" claim`},
		{"groups of the wrong type", signMock(t, m, claimsFor(m, map[string]any{"groups": 42})),
			identity.ErrClaims, `token claim "groups" is not a string or an array of strings`},
		{"other RSA key, same kid", signOther(t, m, kid),
			identity.ErrSignature, "token signature does not verify with the issuer's keys"},
		{"tampered payload", tamper(t, m, signMock(t, m, claimsFor(m, nil))),
			identity.ErrSignature, "token signature does not verify with the issuer's keys"},
		{"alg none", handmade(t, map[string]any{"alg": "none", "typ": "JWT"}, claimsFor(m, nil), nil),
			identity.ErrAlgorithm, `token uses signing algorithm "none", which is not allowed`},
		{"alg None (case)", handmade(t, map[string]any{"alg": "None"}, claimsFor(m, nil), nil),
			identity.ErrAlgorithm, `token uses signing algorithm "None", which is not allowed`},
		{"HS256 with the public key as secret", signHS256WithPublicKey(t, m, kid),
			identity.ErrAlgorithm, `token uses signing algorithm "HS256", which is not allowed`},
		{"ES256, not advertised by the issuer", signES256(t, m, kid),
			identity.ErrAlgorithm, `token uses signing algorithm "ES256", which is not allowed`},
		{"no alg", handmade(t, map[string]any{"typ": "JWT"}, claimsFor(m, nil), []byte("sig")),
			identity.ErrAlgorithm, "token header names no signing algorithm"},
		{"garbage", "definitely-not-a-token", identity.ErrMalformed, "token is not a JWT"},
		{"three garbage parts", "a.b.c", identity.ErrMalformed, "token is not a JWT (bad header)"},
		{"payload not an object", handmade(t, map[string]any{"alg": "RS256"}, nil, []byte("sig")),
			identity.ErrMalformed, "token is not a JWT (bad payload)"},
		{"JWE", "a.b.c.d.e", identity.ErrMalformed, "token is not a JWT (it looks like an encrypted JWE, which is not supported)"},
		{"huge", strings.Repeat("a", 70000), identity.ErrMalformed, "token is not a JWT (70000 bytes, more than the 65536 allowed)"},
		{"empty", "", identity.ErrEmptyToken, "empty token"},
		{"blank", " \t\n", identity.ErrEmptyToken, "empty token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			wantRefused(t, err, tc.reason, tc.msg, tc.token, logs)
		})
	}
}

// signOther signs valid claims with a fresh RSA key that claims mockoidc's kid.
func signOther(t *testing.T, m *mockoidc.MockOIDC, kid string) string {
	t.Helper()
	other, err := mockoidc.RandomKeypair(2048)
	if err != nil {
		t.Fatal(err)
	}
	other.Kid = kid
	tok, err := other.SignJWT(claimsFor(m, nil))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tamper swaps the payload of a validly signed token for one naming bob.
func tamper(t *testing.T, m *mockoidc.MockOIDC, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	forged := strings.Split(handmade(t, map[string]any{}, claimsFor(m, map[string]any{"sub": "bob"}), nil), ".")
	return parts[0] + "." + forged[1] + "." + parts[2]
}

// signHS256WithPublicKey is the classic algorithm-confusion attack: an HMAC
// keyed with the issuer's public key, which anyone can fetch.
func signHS256WithPublicKey(t *testing.T, m *mockoidc.MockOIDC, kid string) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(m.Keypair.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	unsigned := handmade(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, claimsFor(m, nil), nil)
	unsigned = strings.TrimSuffix(unsigned, ".")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(unsigned))
	parts := strings.Split(handmade(t, map[string]any{}, jwt.MapClaims{}, mac.Sum(nil)), ".")
	return unsigned + "." + parts[2]
}

// signES256 signs valid claims with a fresh P-256 key.
func signES256(t *testing.T, m *mockoidc.MockOIDC, kid string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claimsFor(m, nil))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerifyUsesConfiguredClock(t *testing.T) {
	m := startMock(t)
	later := time.Now().Add(2 * time.Hour)
	v, logs := newVerifier(t, identity.Config{Issuer: m.Issuer(), Now: func() time.Time { return later }})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok := signMock(t, m, claimsFor(m, map[string]any{"exp": exp.Unix()}))
	_, err := v.Verify(context.Background(), tok)
	wantRefused(t, err, identity.ErrExpired, "token expired at "+exp.UTC().Format(time.RFC3339), tok, logs)
}

func TestGroupsClaim(t *testing.T) {
	m := startMock(t)
	cases := []struct {
		name  string
		claim string
		edits map[string]any
		want  []string
	}{
		{"roles array", "roles", map[string]any{"roles": []string{"admin", "dev"}}, []string{"admin", "dev"}},
		{"single string", "roles", map[string]any{"roles": "admin"}, []string{"admin"}},
		{"missing", "roles", nil, []string{}},
		{"null", "", map[string]any{"groups": nil}, []string{}},
		{"nested path", "realm_access.roles",
			map[string]any{"realm_access": map[string]any{"roles": []string{"a", "b"}}}, []string{"a", "b"}},
		{"dotted top-level name wins", "realm_access.roles",
			map[string]any{"realm_access.roles": []string{"top"}, "realm_access": map[string]any{"roles": []string{"nested"}}},
			[]string{"top"}},
		{"nested path missing", "realm_access.roles", map[string]any{"realm_access": "x"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newVerifier(t, identity.Config{Issuer: m.Issuer(), GroupsClaim: tc.claim})
			id, err := v.Verify(context.Background(), signMock(t, m, claimsFor(m, tc.edits)))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Groups == nil || !reflect.DeepEqual(id.Groups, tc.want) {
				t.Errorf("groups = %#v, want %#v", id.Groups, tc.want)
			}
		})
	}
}

func TestConcurrentVerify(t *testing.T) {
	m := startMock(t)
	v, _ := newVerifier(t, identity.Config{Issuer: m.Issuer()})
	tok := signMock(t, m, claimsFor(m, nil))
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(context.Background(), tok)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  identity.Config
		want string
	}{
		{"no issuer", identity.Config{Audience: "regate"}, "Issuer is required"},
		{"no audience", identity.Config{Issuer: "https://idp.example"}, "Audience is required"},
		{"not a URL", identity.Config{Issuer: "idp.example", Audience: "regate"}, "is not an http(s) URL"},
		{"plain http off loopback", identity.Config{Issuer: "http://idp.example", Audience: "regate"}, "must use https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identity.New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
