package decision

import (
	"reflect"
	"testing"
)

func TestDiff(t *testing.T) {
	allow := Decision{Allow: true}
	deny := Decision{Allow: false, Reasons: []string{"no"}}
	approval := Decision{Allow: true, Approval: &Approval{Groups: []string{"dba"}}}
	approvalSec := Decision{Allow: true, Approval: &Approval{Groups: []string{"sec", "dba"}}}
	masked := Decision{Allow: true, Mask: []Mask{{Column: "email"}, {Detector: "credit_card", With: "#"}}}
	for _, tc := range []struct {
		name          string
		before, after Decision
		want          []string
	}{
		{"same", allow, Decision{Allow: true, Reasons: []string{"other reason"}}, nil},
		{"allow to deny", allow, deny, []string{"allow->deny"}},
		{"deny to allow", deny, allow, []string{"deny->allow"}},
		{"new approval", allow, approval, []string{"new approval: allow before, groups dba now"}},
		{"approval dropped", approval, deny, []string{"approval dropped: deny now"}},
		{"approval groups", approval, approvalSec, []string{"approval groups: dba before, dba,sec now"}},
		{"new masks", allow, masked, []string{"new mask: column email", "new mask: detector credit_card with #"}},
		{"mask dropped", masked, Decision{Allow: true, Mask: []Mask{{Column: "email"}}}, []string{"mask dropped: detector credit_card with #"}},
		{"masks ignored when denied", masked, deny, []string{"allow->deny"}},
	} {
		if got := Diff(tc.before, tc.after); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Diff = %q, want %q", tc.name, got, tc.want)
		}
	}
}
