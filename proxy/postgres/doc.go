// Package postgres is regate's PostgreSQL engine: a wire-protocol proxy that
// authenticates clients with an OIDC token sent as their password, holds the
// target's credentials itself, and decides every statement before forwarding.
//
//	client                     regate                              target
//	  │ SSLRequest / GSSENC ──▶  'S' + TLS (if configured) or 'N'
//	  │ StartupMessage ───────▶  AuthenticationCleartextPassword
//	  │ PasswordMessage(token)▶  proxy.Pipeline.Open (verify token)
//	  │                          pgconn.Connect(target credentials) ──▶ startup, auth
//	  │ ◀── AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery
//	  │ Query ────────────────▶  parse/sql ─▶ Session.Authorize (decide + record)
//	  │                            allowed ─────────────────────────▶ Query
//	  │                            blocked ─▶ marker query ─────────▶ (fails, as Postgres would)
//	  │ ◀───────────────────────── responses (marker error replaced by ours) ◀──
//	  │                          ReadyForQuery ─▶ Command.Done (record outcome)
//
// A blocked statement is answered through the target with a statement that is
// guaranteed to fail, whose error regate replaces by its own: responses stay
// in order even for pipelining clients, and an explicit transaction is left
// failed exactly as Postgres would leave it.
package postgres
