package policies

import (
	"regexp"
	"slices"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestVolatileSafe checks the memo's proof expression by expression, on the
// compiled form the tracer sees: which expressions may read a part of the
// input that a key leaves out (untemplated: time and params; templated:
// also the query text and the statements' trees).
func TestVolatileSafe(t *testing.T) {
	tests := []struct {
		body                   string // one expression
		untemplated, templated bool   // safe for each kind of key
	}{
		{`input.postgres.database == "app"`, true, true},
		{`input.identity.claims.email == "a@example.com"`, true, true},
		{`input.postgres.statements[i].command == "SELECT"`, true, true},
		{`count(input.postgres.statements[i].functions) == 0`, true, true},
		{`x := input.postgres.statements[i].relations[j]`, true, true},
		// Testing whether a document holding a volatile part (or, for the
		// query and the trees, the part itself) is defined.
		{`input.postgres.statements[i]`, true, true},
		{`not input.postgres.statements[i].ast.SelectStmt.withClause`, true, true},
		{`input.postgres.query`, true, true},
		{`input.postgres`, true, true},
		{`input`, true, true},
		// ... but not for the parameters and the time, whose shape changes.
		{`input.postgres.params[1]`, false, false},
		{`not input.postgres.params`, false, false},
		{`input.time`, false, false},
		// Reading them, or a document holding them.
		{`input.postgres.params[0] == "42"`, false, false},
		{`x := input.postgres`, false, false},
		{`x := input`, false, false},
		{`some k2, v in input`, false, false},
		{`x := input[k]`, false, false},
		{`x := input.postgres[k]`, false, false},
		{`startswith(input.time, "2027")`, false, false},
		{`walk(input, [p, v])`, false, false},
		{`x := [s | some s in input.postgres.params]`, false, false},
		{`x := data.regate.t with input.postgres.params as []`, false, false},
		{`input.postgres.statements[i] with input.postgres.statements as input.postgres.params`, false, false},
		// The statements as a whole, their trees and the query text: safe
		// only when the key keeps them.
		{`some s in input.postgres.statements`, true, false},
		{`x := input.postgres.statements[i]`, true, false},
		{`x := input.postgres.statements[i][k]`, true, false},
		{`x := input.postgres.statements[i].ast`, true, false},
		{`input.postgres.statements[0].ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival == 666`, true, false},
		{`contains(input.postgres.query, "666")`, true, false},
		{`json.marshal(input.postgres.statements)`, true, false},
		{`x := {"q": input.postgres.query}`, true, false},
		{`x := input.identity.claims[input.postgres.query]`, true, false},
	}
	for _, tc := range tests {
		decl := ""
		for _, v := range []string{"i", "j", "k"} {
			if regexp.MustCompile(`\b` + v + `\b`).MatchString(tc.body) {
				decl += "\t" + v + " := input.version\n" // a variable, as a rule's would be
			}
		}
		mod := "package regate\n\nt if true\n\nr if {\n" + decl + "\t" + tc.body + "\n}\n"
		c := ast.MustCompileModules(map[string]string{"m.rego": mod})
		rules := c.GetRules(ast.MustParseRef("data.regate.r"))
		if len(rules) != 1 {
			t.Fatalf("%s: %d rules", tc.body, len(rules))
		}
		body := rules[0].Body
		ast.WalkRefs(body, func(r ast.Ref) bool {
			for _, k := range r[1:] {
				if _, nested := k.Value.(ast.Ref); nested {
					t.Errorf("%s: a reference as a key after compilation: %v", tc.body, r)
				}
			}
			return false
		})
		for _, e := range body {
			for _, w := range e.With {
				if _, ok := w.Value.Value.(ast.Ref); ok {
					t.Errorf("%s: a reference as a with value after compilation: %v", tc.body, e)
				}
			}
		}
		check := func(paths []volatilePath) bool {
			for _, e := range body {
				if !volatileSafe(e, paths) {
					return false
				}
			}
			return true
		}
		if got := check(volatileAlways); got != tc.untemplated {
			t.Errorf("%s (compiled: %v): safe for a prepared statement's key %v, want %v", tc.body, body, got, tc.untemplated)
		}
		if got := check(volatileTemplated); got != tc.templated {
			t.Errorf("%s (compiled: %v): safe for a templated text's key %v, want %v", tc.body, body, got, tc.templated)
		}
	}
	// A shared key leaves the session out too.
	shared := append(slices.Clip(volatileAlways), volatileSession)
	for body, safe := range map[string]bool{
		`input.session.client_addr == "x"`: false,
		`x := input.session`:               false,
		`input.session.id`:                 false,
		`x := input[k]`:                    false,
		`input.identity.subject == "x"`:    true,
		`input.postgres.database == "x"`:   true,
	} {
		mod := "package regate\n\nr if {\n\tk := input.version\n\t" + body + "\n}\n"
		c := ast.MustCompileModules(map[string]string{"m.rego": mod})
		got := true
		for _, e := range c.GetRules(ast.MustParseRef("data.regate.r"))[0].Body[1:] {
			got = got && volatileSafe(e, shared)
		}
		if got != safe {
			t.Errorf("%s: safe for a shared key %v, want %v", body, got, safe)
		}
	}
	// Rule heads: the compiler moves whatever they read into the body,
	// where the tracer sees it; and input as a variable (the compiler makes
	// it a reference).
	c := ast.MustCompileModules(map[string]string{"m.rego": `package regate

q := input.postgres.query

r contains input.postgres.params[0] if true

o[input.postgres.query] := input.time

f(x) := [x, input.time]
`})
	for _, name := range []string{"q", "r", "o", "f"} {
		for _, rule := range c.GetRules(ast.MustParseRef("data.regate." + name)) {
			found := false
			ast.WalkRefs(rule.Head, func(r ast.Ref) bool {
				found = found || r.HasPrefix(ast.InputRootRef)
				return found
			})
			if found {
				t.Errorf("the head of %s reads the input after compilation: %v", name, rule.Head)
			}
		}
	}
	if volatileSafe(ast.NewExpr([]*ast.Term{ast.RefTerm(ast.VarTerm("eq")), ast.VarTerm("x"), ast.VarTerm("input")}), volatileAlways) {
		t.Error("input as a variable is safe")
	}
}
