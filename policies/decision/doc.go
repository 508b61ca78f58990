// Package decision holds the Decision type, v1: what data.regate.decision
// returns, plus the metadata regate records with it. It imports no OPA, so the
// recorder and the protocol engines can use it without the evaluator.
package decision
