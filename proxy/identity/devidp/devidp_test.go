package devidp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/proxy/identity"
	"github.com/regate/regate/proxy/identity/devidp"
)

func start(t *testing.T) *devidp.Server {
	t.Helper()
	s, err := devidp.Start(context.Background(), "127.0.0.1:0", hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func verifier(t *testing.T, s *devidp.Server, aud string) *identity.Verifier {
	t.Helper()
	v, err := identity.New(context.Background(), identity.Config{Issuer: s.Issuer(), Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:0", ":0", "[::]:0", "example.com:0", "127.0.0.1"} {
		s, err := devidp.Start(context.Background(), addr, nil)
		if err == nil {
			_ = s.Close()
			t.Errorf("Start(%q) succeeded, want a refusal", addr)
		}
	}
}

func TestStartLocalhost(t *testing.T) {
	s, err := devidp.Start(context.Background(), "localhost:0", nil)
	if err != nil {
		t.Fatalf("Start(localhost:0): %v", err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.Issuer(), "http://127.0.0.1:") && !strings.HasPrefix(s.Issuer(), "http://[::1]:") {
		t.Errorf("Issuer() = %q", s.Issuer())
	}
}

func TestDiscoveryDocument(t *testing.T) {
	s := start(t)
	resp, err := http.Get(s.Issuer() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != s.Issuer() || doc["jwks_uri"] != s.Issuer()+"/jwks" || doc["token_endpoint"] != s.Issuer()+"/token" {
		t.Errorf("discovery document = %v", doc)
	}
	for _, k := range []string{"id_token_signing_alg_values_supported", "response_types_supported", "subject_types_supported"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("discovery document lacks %s", k)
		}
	}

	resp, err = http.Get(s.Issuer() + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	if len(jwks.Keys) != 1 || jwks.Keys[0]["kid"] == "" || jwks.Keys[0]["kty"] != "RSA" || jwks.Keys[0]["d"] != nil {
		t.Errorf("jwks = %v", jwks)
	}
}

func TestTokenEndpointForm(t *testing.T) {
	s := start(t)
	form := url.Values{"sub": {"alice"}, "groups": {"dba, oncall", "sre"}, "email": {"a@example.com"},
		"aud": {"psql"}, "ttl": {"10m"}}
	resp, err := http.PostForm(s.Issuer()+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	var out struct {
		Access    string `json:"access_token"`
		ID        string `json:"id_token"`
		Type      string `json:"token_type"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Type != "Bearer" || out.ExpiresIn != 600 || out.Access == "" || out.ID == "" || out.Access == out.ID {
		t.Errorf("response = %+v", out)
	}
	v := verifier(t, s, "psql")
	for _, tok := range []string{out.Access, out.ID} {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if id.Subject != "alice" || id.Email != "a@example.com" || !reflect.DeepEqual(id.Groups, []string{"dba", "oncall", "sre"}) {
			t.Errorf("identity = %+v", id)
		}
		exp, _ := id.Claims["exp"].(float64)
		iat, _ := id.Claims["iat"].(float64)
		if exp-iat != 600 || id.Claims["nbf"] == nil || id.Claims["jti"] == nil {
			t.Errorf("claims = %v", id.Claims)
		}
	}
}

func TestRequestToken(t *testing.T) {
	s := start(t)
	tok, err := devidp.RequestToken(context.Background(), s.Issuer(), "bob", []string{"dev"}, "", "", 0)
	if err != nil {
		t.Fatalf("RequestToken: %v", err)
	}
	id, err := verifier(t, s, "regate").Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Subject != "bob" || !reflect.DeepEqual(id.Groups, []string{"dev"}) {
		t.Errorf("identity = %+v", id)
	}
	exp, _ := id.Claims["exp"].(float64)
	iat, _ := id.Claims["iat"].(float64)
	if exp-iat != 3600 {
		t.Errorf("default ttl: exp-iat = %v, want 3600", exp-iat)
	}
}

func TestTokenEndpointRefusals(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	cases := []struct {
		name string
		sub  string
		ttl  time.Duration
		want string
	}{
		{"no sub", "", 0, "sub is required"},
		{"ttl over 24h", "alice", 25 * time.Hour, "must be a Go duration between 1s and 24h0m0s"},
		{"negative ttl", "alice", -time.Minute, "must be a Go duration"},
	}
	for _, tc := range cases {
		_, err := devidp.RequestToken(ctx, s.Issuer(), tc.sub, nil, "", "", tc.ttl)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "invalid_request") {
			t.Errorf("%s: %v, want an invalid_request error containing %q", tc.name, err, tc.want)
		}
	}

	resp, err := http.Get(s.Issuer() + "/token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /token: %s, want 405", resp.Status)
	}

	// A DNS-rebound page reaches 127.0.0.1 but names its own host.
	req, err := http.NewRequest(http.MethodPost, s.Issuer()+"/token", strings.NewReader("sub=mallory"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "evil.example"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /token with Host evil.example: %s, want 403", resp.Status)
	}
}

func TestJSONGroupsString(t *testing.T) {
	s := start(t)
	body := `{"sub":"dan","groups":"a,b","ttl":"1m"}`
	resp, err := http.Post(s.Issuer()+"/token", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Access string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	id, err := verifier(t, s, "regate").Verify(context.Background(), out.Access)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !reflect.DeepEqual(id.Groups, []string{"a", "b"}) {
		t.Errorf("groups = %#v", id.Groups)
	}
}

func TestMintRefusals(t *testing.T) {
	s := start(t)
	if _, err := s.Mint("", nil, "", "", 0); err == nil {
		t.Error("Mint without sub succeeded")
	}
	if _, err := s.Mint("a", nil, "", "", 25*time.Hour); err == nil {
		t.Error("Mint with a 25h ttl succeeded")
	}
}

func TestCloseAndContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := devidp.Start(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(s.Issuer() + "/jwks")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("issuer still serving after its context was cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after cancel: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
