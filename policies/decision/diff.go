package decision

import (
	"fmt"
	"slices"
	"strings"
)

// Effect is what a decision does with a request: "deny", "approval" (allowed
// once a human approves) or "allow".
func (d Decision) Effect() string {
	switch {
	case !d.Allow:
		return "deny"
	case d.Approval != nil:
		return "approval"
	default:
		return "allow"
	}
}

// Change kinds reported by Diff.
const (
	ChangeAllowToDeny     = "allow->deny"
	ChangeDenyToAllow     = "deny->allow"
	ChangeNewApproval     = "new approval"     // allow or deny before, approval now
	ChangeApprovalDropped = "approval dropped" // approval before, allow or deny now
	ChangeApprovalGroups  = "approval groups"  // approval both times, other groups
	ChangeNewMask         = "new mask"
	ChangeMaskDropped     = "mask dropped"
)

// Diff lists how after differs from before in what it does to the request:
// its effect (allow, deny, approval), the approver groups, and the masks
// (only compared when both let the request through). Reasons and decision
// IDs are not compared. Each change is a kind (the Change constants) with
// its details after a colon, e.g. "new mask: column email".
func Diff(before, after Decision) []string {
	var changes []string
	be, ae := before.Effect(), after.Effect()
	switch {
	case be == "allow" && ae == "deny":
		changes = append(changes, ChangeAllowToDeny)
	case be == "deny" && ae == "allow":
		changes = append(changes, ChangeDenyToAllow)
	case ae == "approval" && be != "approval":
		changes = append(changes, fmt.Sprintf("%s: %s before, groups %s now", ChangeNewApproval, be, strings.Join(after.Approval.Groups, ",")))
	case be == "approval" && ae != "approval":
		changes = append(changes, fmt.Sprintf("%s: %s now", ChangeApprovalDropped, ae))
	case be == "approval" && ae == "approval":
		b, a := slices.Sorted(slices.Values(before.Approval.Groups)), slices.Sorted(slices.Values(after.Approval.Groups))
		if !slices.Equal(b, a) {
			changes = append(changes, fmt.Sprintf("%s: %s before, %s now", ChangeApprovalGroups, strings.Join(b, ","), strings.Join(a, ",")))
		}
	}
	if be != "deny" && ae != "deny" {
		bm, am := maskSet(before.Mask), maskSet(after.Mask)
		for _, m := range am {
			if !slices.Contains(bm, m) {
				changes = append(changes, ChangeNewMask+": "+m)
			}
		}
		for _, m := range bm {
			if !slices.Contains(am, m) {
				changes = append(changes, ChangeMaskDropped+": "+m)
			}
		}
	}
	return changes
}

// maskSet describes each mask obligation as one sorted, distinct string.
func maskSet(masks []Mask) []string {
	var out []string
	for _, m := range masks {
		out = append(out, m.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// String describes the obligation: "column email", "detector credit_card
// with ****", ...
func (m Mask) String() string {
	var s string
	switch {
	case m.Column != "":
		s = "column " + m.Column
	case m.Field != "":
		s = "field " + m.Field
	default:
		s = "detector " + m.Detector
	}
	if m.With != "" {
		s += " with " + m.With
	}
	return s
}
