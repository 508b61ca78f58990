package policies

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/regate/regate/policies/decision"
)

// apply fills d from the policy's result and checks it against the decision
// contract; any problem denies.
func apply(d decision.Decision, result any) decision.Decision {
	obj, ok := result.(map[string]any)
	if !ok {
		return deny(d, fmt.Sprintf("decision is not an object (got %s)", jsonType(result)))
	}
	var problems []string
	allow, ok := obj["allow"].(bool)
	if !ok {
		problems = append(problems, fmt.Sprintf("decision has no boolean \"allow\" (got %s)", jsonTypeOf(obj, "allow")))
	}
	reasons, bad := decodeReasons(obj["reasons"])
	d.Reasons = reasons
	problems = append(problems, bad...)
	approval, err := decodeApproval(obj["approval"])
	if err != nil {
		problems = append(problems, err.Error())
	}
	d.Approval = approval
	mask, err := decodeMask(obj["mask"])
	if err != nil {
		problems = append(problems, err.Error())
	}
	d.Mask = mask
	if len(problems) > 0 {
		return deny(d, problems...)
	}
	d.Allow = allow
	return d
}

// decodeReasons returns the string reasons, in order, and a problem for the
// field or each element that is not a string. Non-strings are never
// converted: they deny.
func decodeReasons(v any) ([]string, []string) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, []string{fmt.Sprintf("decision \"reasons\" is not an array of strings (got %s)", jsonType(v))}
	}
	var reasons, problems []string
	for i, r := range list {
		s, ok := r.(string)
		if !ok {
			problems = append(problems, fmt.Sprintf("decision \"reasons\"[%d] is not a string (got %s %s)", i, jsonType(r), compact(r)))
			continue
		}
		reasons = append(reasons, s)
	}
	return reasons, problems
}

// decodeApproval decodes {"groups": [...], "reason": "..."}; null or missing
// means no approval.
func decodeApproval(v any) (*decision.Approval, error) {
	if v == nil {
		return nil, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decision \"approval\" is not an object (got %s)", jsonType(v))
	}
	if k := unknownKey(obj, "groups", "reason"); k != "" {
		return nil, fmt.Errorf("decision \"approval\" has unknown field %q", k)
	}
	groups, ok := stringList(obj["groups"])
	if !ok || len(groups) == 0 {
		return nil, fmt.Errorf("decision \"approval\" needs \"groups\", a non-empty array of group names (got %s)", compact(obj["groups"]))
	}
	a := &decision.Approval{Groups: groups}
	if r, found := obj["reason"]; found && r != nil {
		s, ok := r.(string)
		if !ok {
			return nil, fmt.Errorf("decision \"approval\" reason is not a string (got %s)", jsonType(r))
		}
		a.Reason = s
	}
	return a, nil
}

// decodeMask decodes the list of masking obligations; null or missing means
// none.
func decodeMask(v any) ([]decision.Mask, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("decision \"mask\" is not an array (got %s)", jsonType(v))
	}
	var masks []decision.Mask
	for i, item := range list {
		m, err := decodeMaskEntry(item)
		if err != nil {
			return nil, fmt.Errorf("decision \"mask\"[%d] %s: %w", i, compact(item), err)
		}
		masks = append(masks, m)
	}
	return masks, nil
}

var maskKinds = []string{"column", "field", "detector"}

func decodeMaskEntry(item any) (decision.Mask, error) {
	var m decision.Mask
	obj, ok := item.(map[string]any)
	if !ok {
		return m, fmt.Errorf("is not an object (got %s)", jsonType(item))
	}
	if k := unknownKey(obj, "column", "field", "detector", "with"); k != "" {
		return m, fmt.Errorf("has unknown field %q", k)
	}
	set := 0
	for _, kind := range maskKinds {
		v, found := obj[kind]
		if !found {
			continue
		}
		s, ok := v.(string)
		if !ok || s == "" {
			return m, fmt.Errorf("%q must be a non-empty string", kind)
		}
		set++
		switch kind {
		case "column":
			m.Column = s
		case "field":
			m.Field = s
		default:
			m.Detector = s
		}
	}
	if set != 1 {
		return m, fmt.Errorf("needs exactly one of \"column\", \"field\" or \"detector\"")
	}
	if w, found := obj["with"]; found {
		s, ok := w.(string)
		if !ok {
			return m, fmt.Errorf("\"with\" must be a string (got %s)", jsonType(w))
		}
		m.With = s
	}
	return m, nil
}

// stringList returns v as a list of non-empty strings.
func stringList(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		s, ok := item.(string)
		if !ok || s == "" {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// unknownKey returns the first key of obj (in sorted order) that is not in
// known, or "".
func unknownKey(obj map[string]any, known ...string) string {
	var unknown []string
	for k := range obj {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return ""
	}
	sort.Strings(unknown)
	return unknown[0]
}

// jsonTypeOf names the JSON type of obj[key], or "nothing" when it is missing.
func jsonTypeOf(obj map[string]any, key string) string {
	v, found := obj[key]
	if !found {
		return "nothing"
	}
	return jsonType(v)
}

// jsonType names the JSON type of a value decoded from a Rego result.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number, float64, int, int64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// compact renders v as JSON for messages, shortened to 80 bytes.
func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}
