// Package testenv starts the real components regate's end-to-end tests talk
// to: a throwaway PostgreSQL server on a loopback port, an OIDC issuer that is
// not regate's own (github.com/oauth2-proxy/mockoidc, with real discovery and
// JWKS over HTTP), and the regate binary itself, built from this checkout and
// run as a user would run it.
package testenv
