// Package identity verifies the OIDC tokens clients present to regate and
// turns them into a parse.Identity.
//
// A client (psql, kubectl, …) sends an OIDC ID token or a JWT access token as
// its password or Bearer token. Verifier checks it against one configured
// issuer using go-oidc: the issuer's discovery document and JWKS (cached, and
// re-fetched when a token names an unknown key), the signature, iss, aud, exp
// and nbf, plus a few checks of its own made before and after go-oidc's:
//
//   - only asymmetric signing algorithms the issuer advertises are accepted;
//     "none" and the HMAC algorithms (HS256, …) are always refused, which
//     closes the classic public-key-as-HMAC-secret confusion attack;
//   - a token whose nbf or iat lies more than a minute in the future is
//     refused, as is one without sub or exp.
//
// Every refusal is an *Error whose message says why in a few words and never
// contains the token; errors.Is matches it against the Err* sentinels.
//
// If the issuer cannot be reached when the Verifier is created, New still
// succeeds: it logs a warning and Verify retries discovery on demand, at most
// once per backoff period (2 s, doubling up to 15 s). Until discovery
// succeeds every Verify fails closed with ErrUnreachable.
//
// The raw token is never logged.
package identity
