// Package test holds regate's end-to-end tests: a real PostgreSQL server, a
// real OIDC issuer (not regate's own), the regate binary built from this
// checkout and configured from a YAML file as the README documents, and real
// clients (psql and pgx).
package test
