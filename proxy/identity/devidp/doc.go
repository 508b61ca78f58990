// Package devidp is a tiny OIDC issuer for `regate dev` and for tests.
//
// ╔══════════════════════════════════════════════════════════════════════╗
// ║  DEVELOPMENT ONLY. NEVER USE IT IN PRODUCTION (`regate serve`).      ║
// ║  It hands a signed token for ANY subject and ANY groups to anyone    ║
// ║  who asks from this machine: there is no login, no password, no      ║
// ║  client authentication. Whoever can reach it can be anyone.          ║
// ╚══════════════════════════════════════════════════════════════════════╝
//
// The guard rails are few and deliberate:
//
//   - it listens on a loopback address only (Start refuses anything else);
//   - POST /token answers only requests whose remote address is loopback and
//     whose Host header names a loopback host (which defeats DNS rebinding
//     from a web page the developer happens to visit);
//   - its signing key (RSA-2048, RS256) lives in memory only and is new on
//     every Start, so tokens never outlive the process;
//   - tokens live 1 h by default and 24 h at most.
//
// It serves:
//
//	GET  /.well-known/openid-configuration  discovery document
//	GET  /jwks                              the public key, with its kid
//	POST /token                             form or JSON: sub (required),
//	                                        groups (comma-separated or array),
//	                                        email, aud (default "regate"),
//	                                        ttl (Go duration, default 1h, max 24h)
//
// and answers /token with {"access_token", "id_token", "token_type": "Bearer",
// "expires_in"}. Tokens carry iss, sub, aud, exp, iat, nbf, jti, groups and,
// when given, email. RequestToken is the matching client, used by
// `regate token`.
package devidp
