package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// States of a request.
const (
	Pending  = "pending"
	Approved = "approved"
	Denied   = "denied"
	Expired  = "expired"
)

// Person is a requester or an approver, from their verified token.
type Person struct {
	Subject string   `json:"subject"`
	Issuer  string   `json:"issuer"`
	Email   string   `json:"email,omitempty"`
	Groups  []string `json:"groups"`
}

// Same tells whether two people are the same identity.
func (p Person) Same(o Person) bool { return p.Subject == o.Subject && p.Issuer == o.Issuer }

// Request is one approval request.
type Request struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	SessionID string `json:"session_id"`
	// CommandEventID is the recorded command event that asked for approval.
	CommandEventID string `json:"command_event_id"`
	DecisionID     string `json:"decision_id"`
	Target         string `json:"target"`
	Protocol       string `json:"protocol"`
	Requester      Person `json:"requester"`
	// Command is the command text; Summary says what it touches.
	Command string `json:"command"`
	Summary string `json:"summary"`
	// Reasons are the decision's reasons; Reason is the approval's.
	Reasons     []string  `json:"reasons,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Groups      []string  `json:"groups"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	// ExpiresAt ends a pending request (created + TTL); once approved it is
	// when the approval can no longer be used.
	ExpiresAt time.Time  `json:"expires_at"`
	DecidedBy *Person    `json:"decided_by,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	// Comment is the approver's reason for the decision.
	Comment string `json:"comment,omitempty"`
	// Used is set once an approval let its command through.
	Used bool `json:"used"`
}

// Fingerprint identifies "the same request": the same identity, target and
// command text (whitespace-normalised) with the same parameters.
func Fingerprint(requester Person, target, command string, params []string) string {
	h := sha256.New()
	for _, s := range []string{requester.Issuer, requester.Subject, target, strings.Join(strings.Fields(command), " ")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	for _, p := range params {
		h.Write([]byte(p))
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// newID returns a short random id that is easy to type: 10 characters of
// Crockford-style base32.
func newID() string {
	const alphabet = "abcdefghjkmnpqrstvwxyz0123456789"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

func inGroups(p Person, groups []string) bool {
	for _, g := range groups {
		for _, pg := range p.Groups {
			if g == pg {
				return true
			}
		}
	}
	return false
}
