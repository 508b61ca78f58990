package policies

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// decisionIDKey is the context key under which Decide passes the decision ID
// to the print hook.
type decisionIDKey struct{}

// printHook sends the output of Rego print() calls to the engine's logger at
// debug level, with the location of the call and the decision ID.
type printHook struct {
	logger hclog.Logger
}

// Print implements print.Hook.
func (h printHook) Print(pctx print.Context, msg string) error {
	args := []any{"message", msg}
	if pctx.Location != nil {
		args = append(args, "location", pctx.Location.String())
	}
	if id := decisionIDFrom(pctx.Context); id != "" {
		args = append(args, "decision_id", id)
	}
	h.logger.Debug("rego print", args...)
	return nil
}

func decisionIDFrom(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(decisionIDKey{}).(string)
	return id
}
