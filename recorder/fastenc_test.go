package recorder

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/regate/regate/policies/decision"
)

// slowTemplate is the template as Encode's reference path makes it:
// json.Marshal of the event with Seq 0 and PrevHash "".
func slowTemplate(t testing.TB, ev *Event) []byte {
	t.Helper()
	tmp := *ev
	tmp.Seq, tmp.PrevHash, tmp.Hash = 0, "", ""
	if tmp.Decision != nil {
		d := *tmp.Decision
		d.RawResult = nil
		tmp.Decision = &d
	}
	b, err := json.Marshal(&tmp)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	return b
}

var trickyStrings = []string{
	"", "plain", "agent-7@example.com", `quote " and \ backslash`, "<&>", "tab\tnew\nline\r", "\b\f\x00\x1f\x7f",
	"ünïcødé", "\u2028\u2029", "bad utf8 \xff\xfe", `,"result":0`, `,"input":0`, "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
}

func randomEvent(r *rand.Rand) *Event {
	str := func() string { return trickyStrings[r.IntN(len(trickyStrings))] }
	strs := func() []string {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+r.IntN(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	ev := &Event{ID: str(), Type: str(), SessionID: str(), Protocol: str(), Target: str(), Subject: str(), Ref: str(),
		Time: time.Date(2026, 11, 26, 4, 5, 6, r.IntN(1e9), time.UTC).Add(time.Duration(r.IntN(1e6)) * time.Hour)}
	if r.IntN(2) == 0 {
		in, _ := json.Marshal(map[string]any{"q": str(), "n": r.Float64()})
		ev.SetCanonicalInput(in)
	}
	if r.IntN(3) > 0 {
		d := &decision.Decision{ID: str(), Path: str(), Allow: r.IntN(2) == 0, Reasons: strs(), Error: str()}
		if r.IntN(3) == 0 {
			d.Approval = &decision.Approval{Groups: strs(), Reason: str()}
		}
		if r.IntN(2) == 0 {
			d.Mask = []decision.Mask{{Column: str()}, {Field: str(), With: str()}, {}, {Detector: str()}}
		}
		switch r.IntN(4) {
		case 0:
			d.Result = map[string]any{"allow": true, "reasons": []any{str()}, "x": map[string]any{str(): 1.5e21}}
		case 1:
			d.Result = map[string]any(nil)
		case 2:
			d.Result = []any{str(), nil, false, 12.0}
		}
		if d.Result != nil && r.IntN(2) == 0 {
			d.RawResult, _ = json.Marshal(d.Result)
		}
		if r.IntN(2) == 0 {
			d.Bundles = map[string]decision.Bundle{str(): {Revision: str()}, "regate-default": {Revision: str()}}
		}
		ev.Decision = d
	}
	if r.IntN(2) == 0 {
		o := &Outcome{Status: str(), Tags: strs(), Rows: int64(r.IntN(3)), Error: str(), Code: str()}
		if r.IntN(2) == 0 {
			o.Masked = map[string]int64{str(): 3, "public.t.email": int64(r.IntN(2))}
		}
		ev.Outcome = o
	}
	return ev
}

// TestFastTemplate: the fast template is json.Marshal's, byte for byte, for
// thousands of random command and outcome events with tricky strings, empty
// and nil slices and maps, and results with and without their encoding.
func TestFastTemplate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for range 5000 {
		ev := randomEvent(r)
		got, ok := appendTemplate(nil, ev)
		if !ok {
			continue
		}
		fast++
		if want := slowTemplate(t, ev); string(got) != string(want) {
			t.Fatalf("fast template differs:\n got %s\nwant %s", got, want)
		}
	}
	if fast < 4000 {
		t.Errorf("only %d of 5000 events took the fast path", fast)
	}
	for _, ev := range []*Event{
		{ID: "s", Type: TypeSessionStart, Session: &SessionInfo{ClientAddr: "x"}},
		{ID: "a", Type: TypeApproval, Approval: &ApprovalInfo{ID: "x"}},
		{ID: "i", Type: TypeCommand, Input: json.RawMessage(` {"not": "compact"} `)},
		{ID: "y", Type: TypeCommand, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if _, ok := appendTemplate(nil, ev); ok {
			t.Errorf("event %s took the fast path", ev.ID)
		}
	}
}

// FuzzFastTemplate compares the fast template with json.Marshal's on
// events built from fuzzed strings.
func FuzzFastTemplate(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s, s, int64(1))
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64) {
		ev := &Event{ID: a, Type: TypeCommand, SessionID: b, Subject: a, Time: time.Unix(0, n).UTC(),
			Decision: &decision.Decision{ID: b, Path: a, Reasons: []string{a, b}, Mask: []decision.Mask{{Column: a}},
				Result: map[string]any{a: b}, Bundles: map[string]decision.Bundle{a: {Revision: b}}, Error: a},
			Outcome: &Outcome{Status: a, Tags: []string{b}, Rows: n, Masked: map[string]int64{b: n}}}
		got, ok := appendTemplate(nil, ev)
		if !ok {
			return
		}
		if want := slowTemplate(t, ev); string(got) != string(want) {
			t.Fatalf("fast template differs:\n got %s\nwant %s", got, want)
		}
	})
}

// TestSealTwice: Seal writes the body into the draft's buffer the first
// time; sealing the same draft again must neither change the first body nor
// give a wrong second one.
func TestSealTwice(t *testing.T) {
	ev := &Event{ID: "e1", Time: t0, Type: TypeOutcome, SessionID: "s", Ref: "c1",
		Outcome: &Outcome{Status: StatusOK, Tags: []string{"SELECT 1"}, Rows: 1}}
	d, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if d.buf == nil {
		t.Fatal("an outcome's draft has no buffer to seal in place")
	}
	want := func(seq int64, prev string) string {
		e := *ev
		e.Seq, e.PrevHash = seq, prev
		b, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	h1, h2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	r1, err := d.Seal(7, h1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := d.Seal(1234567890123, h2)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := d.Seal(8, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r    Record
		want string
	}{{r1, want(7, h1)}, {r2, want(1234567890123, h2)}, {r3, want(8, "")}} {
		if string(c.r.Body) != c.want {
			t.Errorf("body\n got %s\nwant %s", c.r.Body, c.want)
		}
		if c.r.Hash != hashBody([]byte(c.want)) {
			t.Errorf("seq %d: hash %s is not the body's", c.r.Seq, c.r.Hash)
		}
	}
}
