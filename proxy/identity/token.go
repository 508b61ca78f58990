package identity

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// maxTokenBytes bounds the size of a token regate is willing to look at.
const maxTokenBytes = 64 << 10

// asymmetricAlgs are the only JWS algorithms regate ever accepts, whatever
// the issuer advertises: "none" and the HMAC algorithms are not among them.
var asymmetricAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

func isAsymmetric(alg string) bool {
	for _, a := range asymmetricAlgs {
		if a == alg {
			return true
		}
	}
	return false
}

// unverified is what can be read from a token before its signature is
// checked. It decides early refusals (structure, algorithm, issuer) and
// makes error messages precise; nothing in it is trusted for the identity.
type unverified struct {
	alg    string
	claims map[string]any
}

// parseUnverified splits a compact JWS and decodes its header and payload.
func parseUnverified(token string) (*unverified, error) {
	if len(token) > maxTokenBytes {
		return nil, newError(ErrMalformed, nil, "token is not a JWT (%d bytes, more than the %d allowed)",
			len(token), maxTokenBytes)
	}
	parts := strings.Split(token, ".")
	switch len(parts) {
	case 3:
	case 5:
		return nil, newError(ErrMalformed, nil, "token is not a JWT (it looks like an encrypted JWE, which is not supported)")
	default:
		return nil, newError(ErrMalformed, nil, "token is not a JWT")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return nil, newError(ErrMalformed, err, "token is not a JWT (bad header)")
	}
	var claims map[string]any
	if err := decodeSegment(parts[1], &claims); err != nil || claims == nil {
		return nil, newError(ErrMalformed, err, "token is not a JWT (bad payload)")
	}
	return &unverified{alg: header.Alg, claims: claims}, nil
}

// decodeSegment base64url-decodes one JWS segment and unmarshals its JSON.
func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// checkAlg refuses any algorithm that is not asymmetric or, when allowed is
// not nil, not among the issuer's advertised algorithms.
func checkAlg(alg string, allowed []string) error {
	if alg == "" {
		return newError(ErrAlgorithm, nil, "token header names no signing algorithm")
	}
	ok := isAsymmetric(alg)
	if ok && allowed != nil {
		ok = false
		for _, a := range allowed {
			ok = ok || a == alg
		}
	}
	if !ok {
		return newError(ErrAlgorithm, nil, "token uses signing algorithm %q, which is not allowed", clip(alg))
	}
	return nil
}

// stringClaim returns claims[name] if it is a string.
func stringClaim(claims map[string]any, name string) string {
	s, _ := claims[name].(string)
	return s
}

// timeClaim returns a NumericDate claim. ok is false when it is absent or
// not a number.
func timeClaim(claims map[string]any, name string) (t time.Time, ok bool) {
	f, ok := claims[name].(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// audiences returns the aud claim as a list, whether it is one string or an
// array.
func audiences(claims map[string]any) []string {
	switch a := claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		out := make([]string, 0, len(a))
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return []string{}
}

// groups reads the groups claim: a JSON array of strings or a single string.
// A name with dots ("realm_access.roles") is a path through nested objects,
// unless a top-level claim has exactly that name. A missing or null claim is
// no groups; any other shape refuses the token rather than guess.
func groups(claims map[string]any, name string) ([]string, error) {
	v, found := lookupClaim(claims, name)
	if !found || v == nil {
		return []string{}, nil
	}
	bad := newError(ErrClaims, nil, "token claim %q is not a string or an array of strings", clip(name))
	switch g := v.(type) {
	case string:
		if g == "" {
			return []string{}, nil
		}
		return []string{g}, nil
	case []any:
		out := make([]string, 0, len(g))
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return nil, bad
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, bad
}

func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok || !strings.Contains(name, ".") {
		return v, ok
	}
	var cur any = claims
	for _, key := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[key]; !ok {
			return nil, false
		}
	}
	return cur, true
}
