# Allow-all bundle for the pgx test-suite harness (test/pgxsuite/run.sh).
# Every request is allowed, with no reasons, approval or mask obligations,
# so any difference between a direct run and a run through regate is the
# engine's, not the policy's. Never use this bundle in front of a real database.
package regate

decision := {"allow": true}
