package policies

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultDecision is the data path evaluated when Config.Decision is empty.
const DefaultDecision = "regate/decision"

// decisionRef parses a decision path given as "regate/decision",
// "/regate/decision" or "data.regate.decision" into the ref to evaluate and
// its slash form (no "data." prefix), used in Decision.Path.
func decisionRef(p string) (ast.Ref, string, error) {
	p = strings.TrimSpace(p)
	if p == "" {
		p = DefaultDecision
	}
	var segments []string
	if p == "data" || strings.HasPrefix(p, "data.") || strings.HasPrefix(p, "data[") {
		ref, err := ast.ParseRef(p)
		if err != nil {
			return nil, "", fmt.Errorf("decision path %q: %w", p, err)
		}
		for _, t := range ref[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				return nil, "", fmt.Errorf("decision path %q: %v is not a name", p, t)
			}
			segments = append(segments, string(s))
		}
	} else {
		segments = strings.Split(strings.Trim(p, "/"), "/")
	}
	if len(segments) == 0 {
		return nil, "", fmt.Errorf("decision path %q: names no document below data", p)
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, s := range segments {
		if s == "" {
			return nil, "", fmt.Errorf("decision path %q: empty segment", p)
		}
		ref = append(ref, ast.StringTerm(s))
	}
	return ref, strings.Join(segments, "/"), nil
}
