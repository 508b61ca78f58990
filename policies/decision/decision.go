package decision

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"

	"github.com/google/uuid"
)

// Decision is the outcome of evaluating the policy for one input document.
//
// The zero value denies. Allow is true only when the policy returned an
// object whose "allow" is the boolean true and evaluation succeeded.
type Decision struct {
	// ID identifies this decision in records, exports and client error messages.
	ID string `json:"decision_id"`
	// Path is the data path that was evaluated, e.g. "regate/decision".
	Path string `json:"path"`

	Allow    bool      `json:"allow"`
	Reasons  []string  `json:"reasons,omitempty"`
	Approval *Approval `json:"approval,omitempty"`
	// Mask is read-only: decisions served from the policy engine's memo
	// share it (append copies; never assign to its elements).
	Mask []Mask `json:"mask,omitempty"`

	// Result is the document the policy returned, as returned (nil when
	// undefined). It is read-only: decisions served from the policy engine's
	// memo share it, its maps and its slices.
	Result any `json:"result,omitempty"`
	// Bundles names every active bundle and its revision, as in OPA decision logs.
	Bundles map[string]Bundle `json:"bundles,omitempty"`
	// Error is set when evaluation failed or the result broke the contract; the
	// decision then denies and Reasons says why.
	Error string `json:"error,omitempty"`

	// RawResult, when set, is Result's JSON encoding, exactly as json.Marshal
	// writes Result: the recorder copies it into a record instead of encoding
	// Result again (the policy engine sets it on decisions it serves from
	// its memo). Whoever sets it keeps the two in step, and never modifies it.
	RawResult json.RawMessage `json:"-"`
}

// Approval asks for a human approval before the request is forwarded.
type Approval struct {
	Groups []string `json:"groups"`
	Reason string   `json:"reason,omitempty"`
}

// Mask is one masking obligation on what comes back from the target. Exactly
// one of Column, Field and Detector is set.
type Mask struct {
	Column   string `json:"column,omitempty"`
	Field    string `json:"field,omitempty"`
	Detector string `json:"detector,omitempty"`
	With     string `json:"with,omitempty"`
}

// Bundle is the revision of one active bundle.
type Bundle struct {
	Revision string `json:"revision"`
}

// NewID returns a new decision ID: a random (version 4) UUID, the form both
// the policy engine's decisions and the refusals made before asking it carry.
func NewID() string {
	id, err := uuid.NewRandom()
	if err != nil {
		// crypto/rand does not fail on supported platforms; should it ever,
		// the runtime's random source still gives a 128-bit unique ID.
		return fmt.Sprintf("%016x%016x", mrand.Uint64(), mrand.Uint64())
	}
	return id.String()
}
