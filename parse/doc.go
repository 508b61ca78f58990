// Package parse holds the input document, schema v1: the one structured value
// every protocol engine builds for a request and every Rego policy reads as
// `input`. Field names are snake_case and stable; adding a field is fine,
// renaming one is a breaking change.
package parse
