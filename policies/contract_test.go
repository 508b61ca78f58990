package policies

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/policies/decision"
)

func TestDecideContract(t *testing.T) {
	tests := []struct {
		name     string
		expr     string // data.regate.decision
		allow    bool
		reasons  []string // exact, when not nil
		contains string   // in the last reason, when not ""
		isError  bool
		approval *decision.Approval
		mask     []decision.Mask
	}{
		{name: "allow", expr: `{"allow": true}`, allow: true},
		{name: "allow keeps reasons", expr: `{"allow": true, "reasons": ["b", "a"]}`, allow: true, reasons: []string{"b", "a"}},
		{name: "deny with reasons", expr: `{"allow": false, "reasons": ["no"]}`, reasons: []string{"no"}},
		{name: "reasons set sorted", expr: `{"allow": false, "reasons": {"b", "c", "a"}}`, reasons: []string{"a", "b", "c"}},
		{name: "allow string", expr: `{"allow": "yes"}`, isError: true, reasons: []string{`decision has no boolean "allow" (got string)`}},
		{name: "allow missing", expr: `{"reasons": ["x"]}`, isError: true, reasons: []string{"x", `decision has no boolean "allow" (got nothing)`}},
		{name: "not an object", expr: `[true]`, isError: true, reasons: []string{"decision is not an object (got array)"}},
		{name: "boolean decision", expr: `true`, isError: true, reasons: []string{"decision is not an object (got boolean)"}},
		{name: "non-string reason", expr: `{"allow": true, "reasons": ["ok", 42]}`, isError: true, reasons: []string{"ok", `decision "reasons"[1] is not a string (got number 42)`}},
		{name: "reasons not array", expr: `{"allow": true, "reasons": "oops"}`, isError: true, contains: `"reasons" is not an array of strings (got string)`},
		{
			name: "approval and mask", expr: `{"allow": true, "approval": {"groups": ["dba", "sre"], "reason": "prod"}, "mask": [{"column": "email"}, {"field": "ssn", "with": "***"}, {"detector": "iban"}]}`,
			allow: true, approval: &decision.Approval{Groups: []string{"dba", "sre"}, Reason: "prod"},
			mask: []decision.Mask{{Column: "email"}, {Field: "ssn", With: "***"}, {Detector: "iban"}},
		},
		{name: "mask as set", expr: `{"allow": true, "mask": {{"column": "b"}, {"column": "a"}}}`, allow: true, mask: []decision.Mask{{Column: "a"}, {Column: "b"}}},
		{name: "null obligations", expr: `{"allow": true, "approval": null, "mask": null}`, allow: true},
		{name: "mask not array", expr: `{"allow": true, "mask": {"column": "email"}}`, isError: true, contains: `decision "mask" is not an array (got object)`},
		{name: "mask two kinds", expr: `{"allow": true, "mask": [{"column": "a", "field": "b"}]}`, isError: true, contains: `needs exactly one of "column", "field" or "detector"`},
		{name: "mask no kind", expr: `{"allow": true, "mask": [{"with": "x"}]}`, isError: true, contains: "needs exactly one"},
		{name: "mask unknown field", expr: `{"allow": true, "mask": [{"column": "a", "hash": true}]}`, isError: true, contains: `has unknown field "hash"`},
		{name: "mask empty column", expr: `{"allow": true, "mask": [{"column": ""}]}`, isError: true, contains: `"column" must be a non-empty string`},
		{name: "mask bad with", expr: `{"allow": true, "mask": [{"column": "a", "with": 1}]}`, isError: true, contains: `"with" must be a string`},
		{name: "mask entry not object", expr: `{"allow": true, "mask": ["email"]}`, isError: true, contains: `decision "mask"[0] "email": is not an object (got string)`},
		{name: "approval no groups", expr: `{"allow": true, "approval": {"groups": [], "reason": "x"}}`, isError: true, contains: `needs "groups"`},
		{name: "approval groups string", expr: `{"allow": true, "approval": {"groups": "dba"}}`, isError: true, contains: `needs "groups"`},
		{name: "approval not object", expr: `{"allow": true, "approval": ["dba"]}`, isError: true, contains: `"approval" is not an object (got array)`},
		{name: "approval unknown field", expr: `{"allow": true, "approval": {"groups": ["dba"], "timeout": "1h"}}`, isError: true, contains: `unknown field "timeout"`},
		{name: "approval bad reason", expr: `{"allow": true, "approval": {"groups": ["dba"], "reason": 1}}`, isError: true, contains: `reason is not a string`},
		{name: "division by zero", expr: `{"allow": count(input.identity.groups) / count([]) > 0}`, isError: true, contains: "eval_builtin_error: div: divide by zero"},
		{name: "sprintf error", expr: `{"allow": true, "reasons": [sprintf(input.identity.subject, input.version)]}`, isError: true, contains: "policy evaluation failed:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, Config{Bundle: decisionBundle(t, tc.expr)})
			d := e.Decide(context.Background(), pgInput(selectStmt))
			if d.Allow != tc.allow {
				t.Errorf("allow = %v, want %v (reasons %q)", d.Allow, tc.allow, d.Reasons)
			}
			if tc.reasons != nil && !reflect.DeepEqual(d.Reasons, tc.reasons) {
				t.Errorf("reasons = %q, want %q", d.Reasons, tc.reasons)
			}
			if tc.contains != "" && (len(d.Reasons) == 0 || !strings.Contains(d.Reasons[len(d.Reasons)-1], tc.contains)) {
				t.Errorf("reasons = %q, want one containing %q", d.Reasons, tc.contains)
			}
			if (d.Error != "") != tc.isError {
				t.Errorf("error = %q, want error: %v", d.Error, tc.isError)
			}
			if !reflect.DeepEqual(d.Approval, tc.approval) && !tc.isError {
				t.Errorf("approval = %+v, want %+v", d.Approval, tc.approval)
			}
			if !reflect.DeepEqual(d.Mask, tc.mask) && !tc.isError {
				t.Errorf("mask = %+v, want %+v", d.Mask, tc.mask)
			}
		})
	}
}

func TestDecideUndefined(t *testing.T) {
	dir := bundleDir(t, "acme", map[string]string{"acme.rego": "package acme\n\nx := 1\n"})
	var logs strings.Builder
	e := newEngine(t, Config{Bundle: dir, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	if !strings.Contains(logs.String(), "no rule defines the decision") {
		t.Errorf("no warning about the missing decision rule:\n%s", logs.String())
	}
	d := e.Decide(context.Background(), pgInput(selectStmt))
	want := []string{"policy returned no decision at data.regate.decision"}
	if d.Allow || !reflect.DeepEqual(d.Reasons, want) || d.Error == "" || d.Result != nil {
		t.Errorf("decision = %+v, want deny with %q", d, want)
	}
}

func TestDecideConflict(t *testing.T) {
	dir := bundleDir(t, "conflict", map[string]string{"policy.rego": `package regate

x := 1 if input.version == 1

x := 2 if input.protocol == "postgres"

decision := {"allow": x == 1}
`})
	e := newEngine(t, Config{Bundle: dir})
	d := e.Decide(context.Background(), pgInput(selectStmt))
	if d.Allow || len(d.Reasons) != 1 || !strings.Contains(d.Reasons[0], "policy evaluation failed: ") ||
		!strings.Contains(d.Reasons[0], "eval_conflict_error") || d.Error == "" {
		t.Errorf("decision = %+v, want deny with an eval_conflict_error", d)
	}
}

func TestDecideCanceled(t *testing.T) {
	e := newEngine(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := e.Decide(ctx, pgInput(selectStmt))
	if d.Allow || d.Error == "" || !strings.HasPrefix(d.Reasons[0], "policy evaluation failed: ") {
		t.Errorf("decision with canceled ctx = %+v", d)
	}
}

// TestDecideCanceledDuringEvaluation: a context that ends while a (slow)
// policy is being evaluated stops the evaluation and denies.
func TestDecideCanceledDuringEvaluation(t *testing.T) {
	dir := bundleDir(t, "slow", map[string]string{"policy.rego": `package regate

# About 9 million steps (seconds) and little memory, if nothing stops it.
decision := {"allow": true} if {
	every x in numbers.range(1, 3000) {
		every y in numbers.range(1, 3000) {
			x * y > 0
		}
	}
}
`})
	e := newEngine(t, Config{Bundle: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	d := e.Decide(ctx, pgInput(selectStmt))
	if d.Allow || !strings.Contains(d.Error, "cancel") {
		t.Errorf("decision = %+v, want deny naming the cancellation", d)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the evaluation ran %v after its context ended", took)
	}
}

func TestDecideNilInput(t *testing.T) {
	e := newEngine(t, Config{})
	d := e.Decide(context.Background(), nil)
	if d.Allow || d.Error == "" || d.ID == "" {
		t.Errorf("decision for nil input = %+v", d)
	}
}
