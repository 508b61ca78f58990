package policies

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"strings"

	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// Decide evaluates the decision for input. It never fails: every problem
// (no input, an evaluation error, an undefined or malformed result) is a
// denying decision whose Error and Reasons say what went wrong. ctx cancels
// the evaluation.
func (e *Engine) Decide(ctx context.Context, input *parse.Input) decision.Decision {
	d := decision.Decision{
		ID:      newDecisionID(),
		Path:    e.path,
		Bundles: e.Bundles(),
	}
	if input == nil {
		return deny(d, "policy evaluation failed: no input document")
	}
	if err := ctx.Err(); err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	value, err := e.fastInputValue(input)
	if err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	ctx = context.WithValue(ctx, decisionIDKey{}, d.ID)
	rs, err := e.query.Eval(ctx,
		rego.EvalParsedInput(value),
		rego.EvalSortSets(true),
		rego.EvalCopyMaps(true),
	)
	if err != nil {
		e.logger.Warn("policy evaluation failed", "decision_id", d.ID, "error", err)
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return deny(d, "policy returned no decision at "+e.ref.String())
	}
	d.Result = rs[0].Expressions[0].Value
	return apply(d, d.Result)
}

// newDecisionID returns a random (version 4) UUID.
func newDecisionID() string {
	id, err := uuid.NewRandom()
	if err != nil {
		// crypto/rand does not fail on supported platforms; should it ever,
		// the runtime's random source still gives a 128-bit unique ID.
		return fmt.Sprintf("%016x%016x", mrand.Uint64(), mrand.Uint64())
	}
	return id.String()
}

// deny turns d into a denying decision for a broken contract or a failed
// evaluation: the problems are appended to its reasons and, joined by "; ",
// become its error.
func deny(d decision.Decision, problems ...string) decision.Decision {
	d.Allow = false
	d.Reasons = append(d.Reasons, problems...)
	d.Error = strings.Join(problems, "; ")
	return d
}
