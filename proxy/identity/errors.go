package identity

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Sentinel reasons. Every error returned by Verify is an *Error that matches
// exactly one of them with errors.Is.
var (
	// ErrEmptyToken: no token at all was presented.
	ErrEmptyToken = errors.New("empty token")
	// ErrMalformed: the token is not a compact JWS JWT.
	ErrMalformed = errors.New("token is not a JWT")
	// ErrAlgorithm: the token's "alg" is not an allowed asymmetric algorithm.
	ErrAlgorithm = errors.New("token signing algorithm is not allowed")
	// ErrSignature: the signature does not verify with any of the issuer's keys.
	ErrSignature = errors.New("token signature does not verify with the issuer's keys")
	// ErrIssuer: the token's iss is not the configured issuer.
	ErrIssuer = errors.New("token issuer is not the configured issuer")
	// ErrAudience: the token's aud does not contain the configured audience.
	ErrAudience = errors.New("token audience does not include the configured audience")
	// ErrExpired: the token's exp has passed.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: the token's nbf or iat lies in the future.
	ErrNotYetValid = errors.New("token is not valid yet")
	// ErrClaims: a required claim is missing or a claim has the wrong type.
	ErrClaims = errors.New("token claims are invalid")
	// ErrUnreachable: the issuer's discovery document or keys could not be
	// fetched, so no token can be verified (fail closed).
	ErrUnreachable = errors.New("identity provider unreachable")
)

// Error is a refused token. Its message is short, human-readable and never
// contains the token. Reason is one of the Err* sentinels; the underlying
// cause, if any (e.g. go-oidc's error), is reachable with errors.Unwrap/As.
type Error struct {
	Reason error
	msg    string
	cause  error
}

// Error returns the human-readable reason.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the reason sentinel and the underlying cause.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.cause}
}

func newError(reason error, cause error, format string, args ...any) *Error {
	return &Error{Reason: reason, msg: fmt.Sprintf(format, args...), cause: cause}
}

// maxShown bounds how much of an attacker-controlled value (an iss, an aud,
// an upstream error body) ends up in an error message or a log line.
const maxShown = 120

// clip makes s safe to show: control characters are replaced and long values
// are cut.
func clip(s string) string { return clipN(s, maxShown) }

func clipN(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func clipAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clip(s)
	}
	return out
}

func fmtTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

func unreachable(cause error) *Error {
	return newError(ErrUnreachable, cause, "identity provider unreachable: %s", clipN(cause.Error(), 3*maxShown))
}
