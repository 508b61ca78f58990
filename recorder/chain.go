package recorder

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/regate/regate/parse"
)

// GenesisPrevHash is the PrevHash of the first event of a chain.
const GenesisPrevHash = ""

// TimeFormat is the layout of the stored time column: UTC, RFC 3339 with all
// nine fractional digits, so that the column sorts as text. (The body holds the
// same instant in encoding/json's RFC 3339 Nano form.)
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Record is an event as stored: the indexed columns, the canonical body, and
// the chain hashes. Body is the canonical encoding of the event (see the
// package documentation) and Hash is hex(sha256(Body)).
type Record struct {
	Seq       int64
	ID        string
	Time      string // TimeFormat, UTC
	Type      string
	SessionID string
	Target    string
	Subject   string
	Ref       string
	Body      []byte
	PrevHash  string
	Hash      string
}

// Event decodes the record's body; Hash is taken from the record.
func (r Record) Event() (Event, error) {
	var ev Event
	if err := json.Unmarshal(r.Body, &ev); err != nil {
		return Event{}, fmt.Errorf("recorder: decode body of event seq %d: %w", r.Seq, err)
	}
	ev.Hash = r.Hash
	return ev, nil
}

// Draft is an event encoded for the chain but not yet placed in it: Seal gives
// it its sequence number and previous hash.
type Draft struct {
	cols Record // the columns; Seq, Body, PrevHash and Hash unset
	tpl  []byte // json.Marshal of the event with Seq 0 and PrevHash ""
	// buf, when not nil, is the buffer tpl ends: sealHead bytes of room,
	// then tpl, with capacity for a hash after it. The first Seal writes
	// the body into it, and marks it used in its first byte (which no body
	// covers).
	buf []byte
}

// sealHead is the room left before a template for Seal to write `{"seq":N`
// in place (at most 7+20 bytes, plus the used mark).
const sealHead = 32

// A template (the event encoded with Seq 0 and PrevHash "") starts with
// tplHead and ends with tplTail; Seal replaces the 0 and the "".
var (
	tplHead = []byte(`{"seq":0,`)
	tplTail = []byte(`"prev_hash":""}`)
	seqKey  = []byte(`{"seq":`)

	inputKey         = []byte(`,"input":`)
	resultKey        = []byte(`,"result":0`)
	inputPlaceholder = json.RawMessage(`0`)
)

// Encode validates ev and encodes it for the chain. It sets a zero ev.Time to
// the current time and converts ev.Time to UTC (so that the stored body and the
// caller's event agree). Seq, PrevHash and Hash of ev are ignored.
func Encode(ev *Event) (Draft, error) {
	if ev == nil {
		return Draft{}, errors.New("recorder: encode event: nil event")
	}
	if ev.ID == "" {
		return Draft{}, fmt.Errorf("recorder: encode %s event: empty ID", ev.Type)
	}
	if ev.Type == "" {
		return Draft{}, fmt.Errorf("recorder: encode event %q: empty type", ev.ID)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	cols := Record{
		ID: ev.ID, Time: ev.Time.Format(TimeFormat), Type: ev.Type, SessionID: ev.SessionID,
		Target: ev.Target, Subject: ev.Subject, Ref: ev.Ref,
	}
	est := sealHead + 768 + len(ev.Input) + 2*sha256.Size
	if d := ev.Decision; d != nil {
		est += len(d.RawResult) + 64*len(d.Mask)
	}
	if buf, ok := appendTemplate(make([]byte, sealHead, est), ev); ok {
		return Draft{cols: cols, tpl: buf[sealHead:], buf: buf}, nil
	}
	tmp := *ev
	tmp.Seq, tmp.PrevHash, tmp.Hash = 0, GenesisPrevHash, ""
	splice := ev.canonicalInput()
	if splice {
		tmp.Input = inputPlaceholder
	}
	var rawResult json.RawMessage
	if d := ev.Decision; d != nil && d.RawResult != nil && d.Result != nil {
		// The decision's result is encoded already (a memoized decision):
		// encode a placeholder and copy the encoding in its place.
		dc := *d
		dc.Result = inputPlaceholder
		tmp.Decision, rawResult = &dc, d.RawResult
	}
	tpl, err := json.Marshal(&tmp)
	if err != nil {
		return Draft{}, fmt.Errorf("recorder: encode event %q: %w", ev.ID, err)
	}
	if rawResult != nil {
		// The last `,"result":0` is the key: after the decision's result
		// come only strings (in which a quote is always escaped) and
		// objects without a "result" key. (An input not spliced comes
		// before it and may hold anything.)
		i := bytes.LastIndex(tpl, resultKey)
		at := i + len(resultKey)
		if i < 0 || at >= len(tpl) || (tpl[at] != ',' && tpl[at] != '}') {
			return Draft{}, fmt.Errorf("recorder: encode event %q: no decision result in %.60q", ev.ID, tpl)
		}
		tpl = slices.Concat(tpl[:at-len(inputPlaceholder)], rawResult, tpl[at:])
	}
	if splice {
		// The first `,"input":` is the key: the fields before it are strings,
		// in which a quote is always escaped.
		i := bytes.Index(tpl, inputKey)
		if i < 0 {
			return Draft{}, fmt.Errorf("recorder: encode event %q: no input in %.40q", ev.ID, tpl)
		}
		at := i + len(inputKey)
		tpl = slices.Concat(tpl[:at], ev.Input, tpl[at+len(inputPlaceholder):])
	}
	if !bytes.HasPrefix(tpl, tplHead) || !bytes.HasSuffix(tpl, tplTail) {
		return Draft{}, fmt.Errorf("recorder: encode event %q: unexpected canonical form %.40q", ev.ID, tpl)
	}
	return Draft{cols: cols, tpl: tpl}, nil
}

// ID is the ID of the drafted event.
func (d Draft) ID() string { return d.cols.ID }

// Seal places the draft in the chain at seq after the event whose hash is
// prevHash (GenesisPrevHash for seq 1). The body is byte for byte what
// json.Marshal gives for the event with Seq and PrevHash set. The draft must
// come from Encode. The first Seal of a draft writes the body into the
// draft's own buffer (later ones copy), so a draft must not be sealed by two
// goroutines at once.
func (d Draft) Seal(seq int64, prevHash string) (Record, error) {
	if len(d.tpl) < len(tplHead)+len(tplTail) {
		return Record{}, errors.New("recorder: seal: draft was not made by Encode")
	}
	if b := d.buf; b != nil && b[0] == 0 && len(b) == sealHead+len(d.tpl) {
		// In place: `{"seq":N` ends where `{"seq":0` ends, the hash
		// replaces the closing `""}`.
		b[0] = 1
		var num [20]byte
		digits := strconv.AppendInt(num[:0], seq, 10)
		end := sealHead + len(seqKey) + 1
		start := end - len(seqKey) - len(digits)
		copy(b[start:], seqKey)
		copy(b[start+len(seqKey):], digits)
		body := parse.AppendJSONString(b[start:len(b)-len(`""}`)], prevHash)
		body = append(body, '}')
		r := d.cols
		r.Seq, r.Body, r.PrevHash, r.Hash = seq, body, prevHash, hashBody(body)
		return r, nil
	}
	// From the template, keep what follows the 0 of seq and precedes the ""
	// of prev_hash. (A draft sealed in place still has these bytes.)
	mid := d.tpl[len(seqKey)+1 : len(d.tpl)-len(`""}`)]
	body := make([]byte, 0, len(d.tpl)+len(prevHash)+24)
	body = append(body, seqKey...)
	body = strconv.AppendInt(body, seq, 10)
	body = append(body, mid...)
	body = parse.AppendJSONString(body, prevHash)
	body = append(body, '}')
	r := d.cols
	r.Seq, r.Body, r.PrevHash, r.Hash = seq, body, prevHash, hashBody(body)
	return r, nil
}

// hashBody is an event's hash: lowercase hex of the sha256 of its body.
func hashBody(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// chainFields are the parts of a body that the indexed columns repeat.
type chainFields struct {
	Seq       int64     `json:"seq"`
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Type      string    `json:"type"`
	SessionID string    `json:"session_id"`
	Target    string    `json:"target"`
	Subject   string    `json:"subject"`
	Ref       string    `json:"ref"`
	PrevHash  string    `json:"prev_hash"`
}

// record is the record whose columns are c's, with body (no hash).
func (c *chainFields) record(body []byte) Record {
	return Record{Seq: c.Seq, ID: c.ID, Time: c.Time.UTC().Format(TimeFormat), Type: c.Type,
		SessionID: c.SessionID, Target: c.Target, Subject: c.Subject, Ref: c.Ref,
		Body: body, PrevHash: c.PrevHash}
}

// ChainVerifier checks records fed to it in chain order (by Seq). The zero
// value is not usable; use NewChainVerifier.
type ChainVerifier struct {
	res      VerifyResult
	next     int64
	prevHash string
}

// NewChainVerifier returns a verifier expecting the chain's first record.
func NewChainVerifier() *ChainVerifier {
	return &ChainVerifier{next: 1, prevHash: GenesisPrevHash, res: VerifyResult{OK: true}}
}

// Add checks the next record and reports whether to go on: after the first
// bad record the verdict is final and further records are ignored.
func (v *ChainVerifier) Add(r Record) bool {
	if v.res.FirstBad != nil {
		return false
	}
	return v.settle(r, v.check(r))
}

// addDecoded is Add for a record whose body is decoded into c already (or
// failed to decode with err).
func (v *ChainVerifier) addDecoded(r Record, c *chainFields, err error) bool {
	if v.res.FirstBad != nil {
		return false
	}
	return v.settle(r, v.checkDecoded(r, c, err))
}

// settle records the verdict reason ("" for good) on r.
func (v *ChainVerifier) settle(r Record, reason string) bool {
	if reason != "" {
		v.res.OK = false
		v.res.FirstBad = &BadEvent{Seq: r.Seq, ID: r.ID, Reason: reason}
		return false
	}
	v.res.Events++
	v.res.Head = r.Hash
	v.next, v.prevHash = r.Seq+1, r.Hash
	return true
}

// Result is the verification result for the records added so far.
func (v *ChainVerifier) Result() VerifyResult {
	res := v.res
	if res.FirstBad != nil {
		bad := *res.FirstBad
		res.FirstBad = &bad
	}
	return res
}

func (v *ChainVerifier) check(r Record) string {
	var c chainFields
	if err := json.Unmarshal(r.Body, &c); err != nil {
		return v.checkDecoded(r, nil, err)
	}
	return v.checkDecoded(r, &c, nil)
}

// checkDecoded is check with the body decoded into c already (or failing
// to decode with err).
func (v *ChainVerifier) checkDecoded(r Record, c *chainFields, err error) string {
	switch {
	case r.Seq > v.next:
		return fmt.Sprintf("sequence gap: expected %d, found %d", v.next, r.Seq)
	case r.Seq < v.next:
		return fmt.Sprintf("sequence out of order: expected %d, found %d", v.next, r.Seq)
	}
	sum := sha256.Sum256(r.Body)
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], sum[:])
	if string(hexSum[:]) != r.Hash {
		return "hash does not match its content"
	}
	if err != nil {
		return fmt.Sprintf("body is not valid JSON: %v", err)
	}
	if col := differingColumn(r, c); col != "" {
		return fmt.Sprintf("column %s differs from the hashed content", col)
	}
	if r.PrevHash != v.prevHash {
		if r.Seq == 1 {
			return "prev_hash of the first event is not the genesis value (empty)"
		}
		return fmt.Sprintf("prev_hash does not match the hash of event %d", r.Seq-1)
	}
	return ""
}

// differingColumn names the first indexed column of r that disagrees with the
// body's value, or returns "".
func differingColumn(r Record, c *chainFields) string {
	cols := []struct {
		name      string
		col, body string
	}{
		{"id", r.ID, c.ID},
		{"type", r.Type, c.Type},
		{"session_id", r.SessionID, c.SessionID},
		{"target", r.Target, c.Target},
		{"subject", r.Subject, c.Subject},
		{"ref", r.Ref, c.Ref},
		{"prev_hash", r.PrevHash, c.PrevHash},
	}
	if r.Seq != c.Seq {
		return "seq"
	}
	for _, x := range cols {
		if x.col != x.body {
			return x.name
		}
	}
	if r.Time != c.Time.UTC().Format(TimeFormat) {
		return "time"
	}
	return ""
}
