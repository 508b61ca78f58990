package sql

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/regate/regate/parse"
)

// TestInputEncoderMatchesJSON checks that parse.InputEncoder writes exactly
// what json.Marshal writes, for every parse case and for text that needs
// escaping, with the static part cached and changed between calls.
func TestInputEncoderMatchesJSON(t *testing.T) {
	p := NewParser(0)
	queries := []string{
		"SELECT '<b>&amp;</b>' AS x, E'\\n\\t\\u0001' FROM \"we<i>rd\"",
		"SELECT 'caf\u00e9 \u2028 \u2029 \U0001F600' -- comment\n",
		"SELECT $1::text, 1.5e300, -0.0, 12345678901234567890",
	}
	for _, c := range parseCases {
		queries = append(queries, c.query)
	}
	p1, p2 := "a<b>&\"c\\", "\x00\x7f\xff"
	base := parse.Input{
		Version: parse.SchemaVersion, Protocol: "postgres", Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
		Identity: parse.Identity{Subject: "alice<>", Issuer: "https://idp", Groups: []string{"dba", "a&b"},
			Claims: map[string]any{"z": 1.5, "a": []any{"x", nil, true}, "html": "<&>"}},
		Target:  parse.Target{Name: "db", Protocol: "postgres", Labels: map[string]string{"env": "prod"}},
		Session: parse.Session{ID: "s1", ClientAddr: "127.0.0.1:1", StartedAt: time.Date(2026, 1, 2, 3, 4, 0, 0, time.FixedZone("x", 3600))},
	}
	var enc parse.InputEncoder
	for i, q := range queries {
		stmts, err := p.Parse(q)
		if err != nil {
			continue
		}
		in := base
		in.Postgres = &parse.Postgres{Database: "d", User: "u", ClientUser: "c\u2028", Query: q,
			Params: []*string{&p1, nil, &p2}, Statements: stmts}
		switch i % 4 {
		case 1:
			in.Identity.Groups = nil
			in.Identity.Email = "a@b"
		case 2:
			in.Postgres.Params = nil
			in.Target.Labels = nil
		case 3:
			in.Identity.Groups = []string{}
			in.Postgres.Statements = append([]parse.Statement{{Command: "X", AST: map[string]any{"n": 1.0}}}, stmts...)
		}
		want, err := json.Marshal(&in)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			got, err := enc.Encode(&in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("query %q:\n got %s\nwant %s", q, got, want)
			}
		}
		parts, err := enc.EncodeParts(&in)
		if err != nil {
			t.Fatal(err)
		}
		checkParts(t, parts, want, &in)
	}
	in := base
	want, _ := json.Marshal(&in)
	if got, _ := enc.Encode(&in); !bytes.Equal(got, want) {
		t.Fatalf("without postgres:\n got %s\nwant %s", got, want)
	}
	parts, err := enc.EncodeParts(&in)
	if err != nil {
		t.Fatal(err)
	}
	checkParts(t, parts, want, &in)
}

// checkParts checks that an Encoding is want and that its parts are the
// values of input.time and input.postgres.params, at their members.
func checkParts(t *testing.T, parts parse.Encoding, want []byte, in *parse.Input) {
	t.Helper()
	if !bytes.Equal(parts.JSON, want) {
		t.Fatalf("EncodeParts:\n got %s\nwant %s", parts.JSON, want)
	}
	at := func(span [2]int) string { return string(parts.JSON[span[0]:span[1]]) }
	wantTime, _ := json.Marshal(in.Time)
	if got := at(parts.Time); got != string(wantTime) || !bytes.HasSuffix(parts.JSON[:parts.Time[0]], []byte(`,"time":`)) {
		t.Errorf("Time %v: %s, want %s after \"time\":", parts.Time, got, wantTime)
	}
	wantSession, _ := json.Marshal(in.Session)
	if got := at(parts.Session); got != string(wantSession) || !bytes.HasSuffix(parts.JSON[:parts.Session[0]], []byte(`,"session":`)) {
		t.Errorf("Session %v: %s, want %s after \"session\":", parts.Session, got, wantSession)
	}
	if in.Postgres == nil {
		if parts.Params != [2]int{} {
			t.Errorf("Params %v without postgres, want [0 0]", parts.Params)
		}
		return
	}
	wantParams, _ := json.Marshal(in.Postgres.Params)
	if got := at(parts.Params); got != string(wantParams) || !bytes.HasSuffix(parts.JSON[:parts.Params[0]], []byte(`,"params":`)) {
		t.Errorf("Params %v: %s, want %s after \"params\":", parts.Params, got, wantParams)
	}
}

func BenchmarkInputEncoder(b *testing.B) {
	p := NewParser(0)
	stmts, err := p.Parse("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
	if err != nil {
		b.Fatal(err)
	}
	in := &parse.Input{Version: 1, Protocol: "postgres", Time: time.Now(),
		Identity: parse.Identity{Subject: "bench", Groups: []string{"bench"}, Claims: map[string]any{"sub": "bench"}},
		Target:   parse.Target{Name: "db", Protocol: "postgres", Labels: map[string]string{"env": "dev"}},
		Postgres: &parse.Postgres{Query: "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", Params: []*string{}, Statements: stmts}}
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("InputEncoder", func(b *testing.B) {
		var enc parse.InputEncoder
		for b.Loop() {
			if _, err := enc.Encode(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestEncodingParts checks where the encoding says the query text and a
// templated text's literals are: at the query's JSON string and at each
// literal's digits, in order, for texts of one or more statements.
func TestEncodingParts(t *testing.T) {
	p := NewParser(0)
	shapes := []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = %d",
		"SELECT 1 FROM t WHERE a = %[1]d AND b = %[1]d; DELETE FROM t WHERE c = %[1]d /* 0 */",
	}
	var enc parse.InputEncoder
	for _, shape := range shapes {
		for i, lit := range []int{111, 222, 333} {
			q := fmt.Sprintf(shape, lit)
			stmts, err := p.Parse(q)
			if err != nil {
				t.Fatal(err)
			}
			in := parse.Input{Version: 1, Protocol: "postgres", Session: parse.Session{ID: "s"}, Postgres: &parse.Postgres{Query: q, Statements: stmts}}
			e, err := enc.EncodeParts(&in)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(e.JSON[e.Query[0]:e.Query[1]]); got != `"`+q+`"` {
				t.Errorf("query at %v: %s", e.Query, got)
			}
			if got, want := string(e.JSON[e.Session[0]:e.Session[1]]), `{"id":"s","client_addr":"","started_at":"0001-01-01T00:00:00Z"}`; got != want {
				t.Errorf("session at %v: %s", e.Session, got)
			}
			lits, _ := scanLiterals(q)
			if i == 0 {
				lits = nil // the text that made the template is not patched
			}
			if len(e.Literals) != len(lits) {
				t.Fatalf("%q: %d literals, want %d", q, len(e.Literals), len(lits))
			}
			for j, l := range e.Literals {
				if got := string(e.JSON[l[0]:l[1]]); got != q[lits[j].off:lits[j].end] || !bytes.HasSuffix(e.JSON[:l[0]], []byte(`{"A_Const":{"ival":{"ival":`)) {
					t.Errorf("%q: literal %d at %v: %q", q, j, l, e.JSON[l[0]-30:l[1]+5])
				}
			}
		}
	}
	// A patch without its digits' place gives no literals at all.
	stmts, _ := p.Parse(fmt.Sprintf(shapes[0], 444))
	stmts[0].Patches[0].Raw = [2]int{}
	e, _ := enc.EncodeParts(&parse.Input{Version: 1, Protocol: "postgres", Postgres: &parse.Postgres{Statements: stmts}})
	if e.Literals != nil {
		t.Errorf("literals %v", e.Literals)
	}
}
