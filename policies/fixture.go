package policies

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"

	"github.com/regate/regate/policies/decision"
)

// FixtureCommand is one recorded command of a fixture.
type FixtureCommand struct {
	DecisionID string
	Time       string
	Input      json.RawMessage
	Decision   decision.Decision
}

// FixtureOptions configures WriteFixture.
type FixtureOptions struct {
	// Package is the Rego package of the fixture, e.g. "fixtures.session_1a2b3c4d".
	Package string
	// Decision is the decision path the generated tests query; "regate/decision" when empty.
	Decision string
	// Comment is written at the top of the file, one "# " line per line.
	Comment  string
	Commands []FixtureCommand
}

// WriteFixture writes a Rego test file (Rego v1, formatted as opa fmt does)
// holding the commands' recorded inputs and decisions as data, and one test
// per command asserting that the policy still decides as recorded (allow,
// approval, masks). Turning an incident into a regression test is then a
// matter of editing the expected values of the tests that matter.
func WriteFixture(w io.Writer, opts FixtureOptions) error {
	ref, _, err := decisionRef(opts.Decision)
	if err != nil {
		return err
	}
	if _, err := ast.ParseRef("data." + opts.Package); err != nil || opts.Package == "" {
		return fmt.Errorf("fixture: %q is not a Rego package name", opts.Package)
	}
	var b bytes.Buffer
	for _, line := range strings.Split(strings.TrimSpace(opts.Comment), "\n") {
		fmt.Fprintf(&b, "# %s\n", line)
	}
	fmt.Fprintf(&b, "package %s\n\n", opts.Package)
	b.WriteString("# commands are the recorded inputs, in order, with the decision recorded for each.\ncommands := [\n")
	for _, c := range opts.Commands {
		expected := map[string]any{"allow": c.Decision.Allow, "approval": c.Decision.Approval != nil}
		var masks []string
		for _, m := range c.Decision.Mask {
			masks = append(masks, m.String())
		}
		slices.Sort(masks)
		expected["mask"] = orEmpty(masks)
		exp, err := json.Marshal(expected)
		if err != nil {
			return err
		}
		reasons, err := json.Marshal(orEmpty(c.Decision.Reasons))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "\t{\n\t\t\"decision_id\": %q,\n\t\t\"time\": %q,\n\t\t\"recorded\": %s,\n\t\t\"recorded_reasons\": %s,\n\t\t\"input\": %s,\n\t},\n",
			c.DecisionID, c.Time, exp, reasons, c.Input)
	}
	b.WriteString("]\n\n")
	fmt.Fprintf(&b, "# outcome is what the policy under test decides for a command, in the shape of \"recorded\".\n")
	fmt.Fprintf(&b, "outcome(cmd) := {\n\t\"allow\": object.get(d, \"allow\", false) == true,\n\t\"approval\": object.get(d, \"approval\", null) != null,\n\t\"mask\": sort([m | some x in object.get(d, \"mask\", []); m := mask_string(x)]),\n} if {\n\td := %s with input as cmd.input\n}\n\n", ref)
	b.WriteString("mask_string(m) := s if {\n\tkind := [k | some k in [\"column\", \"field\", \"detector\"]; m[k]][0]\n\tbase := sprintf(\"%s %s\", [kind, m[kind]])\n\ts := with_suffix(base, object.get(m, \"with\", \"\"))\n}\n\n")
	b.WriteString("with_suffix(base, \"\") := base\n\nwith_suffix(base, w) := sprintf(\"%s with %s\", [base, w]) if w != \"\"\n\n")
	for i := range opts.Commands {
		fmt.Fprintf(&b, "test_command_%d_decides_as_recorded if {\n\toutcome(commands[%d]) == commands[%d].recorded\n}\n\n", i+1, i, i)
	}
	out, err := format.SourceWithOpts("fixture.rego", b.Bytes(), format.Opts{RegoVersion: ast.RegoV1})
	if err != nil {
		return fmt.Errorf("fixture: format: %w", err)
	}
	_, err = w.Write(out)
	return err
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
