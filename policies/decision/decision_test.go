package decision

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestRawResult: a decision with RawResult set encodes byte for byte as the
// same decision without it, whichever optional fields are present, even when
// strings contain the keys that follow "result".
func TestRawResult(t *testing.T) {
	results := []any{
		map[string]any{"allow": true, "reasons": []any{}, "mask": []any{map[string]any{"column": "email"}}},
		map[string]any{"allow": false, "reasons": []any{`x,"bundles":y`, `<&> ,"error":`}},
		[]any{1.5, "a", nil, true},
		"just a string",
	}
	decisions := []Decision{
		{ID: "d1", Path: "regate/decision", Allow: true},
		{ID: "d2", Path: "p", Reasons: []string{`,"bundles":{}`, `,"error":"`}, Error: `,"result":`},
		{ID: "d3", Path: "p", Allow: true, Mask: []Mask{{Column: "email"}, {Detector: "jwt", With: "*"}},
			Approval: &Approval{Groups: []string{"dba"}, Reason: `r,"bundles":`},
			Bundles:  map[string]Bundle{"b": {Revision: "r1"}, "a": {Revision: `,"error":`}}},
		{ID: "d4", Path: "p", Bundles: map[string]Bundle{"x": {Revision: "1"}}, Error: "e"},
		{ID: "d5", Path: "p", Error: "failed"},
	}
	for _, r := range results {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range decisions {
			d.Result = r
			want, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			d.RawResult = raw
			got, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("with RawResult:\n got %s\nwant %s", got, want)
			}
		}
	}
}
