package policies

// Tests of what the memo's keys leave out, and of the proof that a decision
// does not read it: the session (keys shared by sessions), a templated text's
// query and literals, and the parameters and time reached through a document
// holding them.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"reflect"
	"testing"
	"time"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/parse/sql"
)

// TestMemoAcrossSessions checks the key without the session: a statement
// executed in many sessions of one identity is learned once and served to
// all of them, unless the policy reads the session, whose decisions are then
// learned per session (and always equal evaluation).
func TestMemoAcrossSessions(t *testing.T) {
	sessionInputs := func(t *testing.T, n int) []*parse.Input {
		ins := preparedInputs(t, n)
		for i, in := range ins {
			in.Session.ID = fmt.Sprintf("s%d", i%5)
			in.Session.ClientAddr = fmt.Sprintf("%d.0.0.%d:5432", []int{10, 192}[i%2], i%5)
			in.Session.StartedAt = in.Session.StartedAt.Add(time.Duration(i%5) * time.Second)
		}
		return ins
	}
	tests := []struct {
		name, rules string
		hits        int64 // of the 100 executions
	}{
		{"default library", "", 100 - memoLearnAt},
		{"client address", `deny contains "only from 10/8" if not startswith(input.session.client_addr, "10.")`, 0},
		{"session ID", `deny contains "s3 is closed" if input.session.id == "s3"`, 0},
		{"the session as a whole", `deny contains "odd" if count([v | some v in input.session; contains(v, "192.")]) > 0`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := libraryEngine(t, tc.rules)
			defer e.Close()
			ins := sessionInputs(t, 100)
			for _, in := range ins {
				want := plainDecide(t, e, in)
				d := e.Decide(context.Background(), in)
				d.ID = want.ID
				if d = withoutRawResult(t, d); !reflect.DeepEqual(d, want) {
					t.Fatalf("session %+v: %+v, want %+v", in.Session, d, want)
				}
			}
			// A policy reading the session refuses the shared key; each
			// session's key is then learned at its own memoLearnAt-th
			// execution, which 20 executions per session reach.
			if hits := e.memo.hits.Load(); (tc.hits > 0 && hits != tc.hits) || (tc.hits == 0 && hits == 0) {
				t.Errorf("%d memo hits (%d learned, %d refused)", hits, e.memo.learned.Load(), e.memo.refused.Load())
			}
			if tc.hits == 0 && e.memo.refused.Load() < 1 {
				t.Error("the shared key was not refused")
			}
		})
	}
	// The memo's soundness over many sessions and policies reading them.
	for _, rules := range []string{
		`deny contains "only from 10/8" if not startswith(input.session.client_addr, "10.")`,
		`deny contains "late" if input.session.started_at > "2025-01-02T03:04:07Z"`,
	} {
		e := libraryEngine(t, rules)
		e.memo.verifyEvery = 3
		checkMemoMatches(t, e, sessionInputs(t, 40))
		if n := e.memo.mismatches.Load(); n != 0 {
			t.Errorf("%d memoized decisions differed from evaluation", n)
		}
		e.Close()
	}
}

// literalInputs returns inputs for the simple-protocol texts of shape (with
// one %d) for each literal, parsed by one parser as a session's are: all but
// the first are made from the shape's parse template.
func literalInputs(t *testing.T, shape string, lits ...int) []*parse.Input {
	t.Helper()
	parser := sql.NewParser(0)
	var ins []*parse.Input
	for i, lit := range lits {
		q := fmt.Sprintf(shape, lit)
		stmts, err := parser.Parse(q)
		if err != nil {
			t.Fatal(err)
		}
		if templated := len(stmts[0].Patches) > 0; templated != (i > 0) {
			t.Fatalf("%q: templated %v", q, templated)
		}
		in := pgInput(stmts...)
		in.Postgres.Query = q
		in.Time = time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)
		ins = append(ins, in)
	}
	return ins
}

// libraryEngine returns an engine on the default library with rules (package
// regate, after the package line) added.
func libraryEngine(t *testing.T, rules string) *Engine {
	t.Helper()
	files := map[string]string{"policy.rego": "package regate\n\n" + rules + "\n"}
	for _, f := range []string{"regate.rego", "postgres.rego", "regate/postgres/data.json"} {
		b, err := fs.ReadFile(Default(), f)
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	return newEngine(t, Config{Bundle: bundleDir(t, "custom", files)})
}

// someLiterals returns 3·memoLearnAt values of a three-digit literal (100…).
func someLiterals() []int {
	var lits []int
	for i := range 3 * memoLearnAt {
		lits = append(lits, 100+i)
	}
	return lits
}

// TestMemoHitsLiterals checks that the default library's decisions for
// simple-protocol texts that differ only in their integer literals are
// learned once and served from the memo (pgbench -S in simple mode, and
// DML it does not block), and that texts whose decision reads the tree are
// evaluated every time.
func TestMemoHitsLiterals(t *testing.T) {
	tests := []struct {
		shape string
		allow bool
		hits  bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = %d", true, true},
		{"UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = 42", true, true},
		{"DELETE FROM t WHERE id = %d", true, true},
		{"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%d, 2, 3, 4, now())", true, true},
		{"SELECT count(*) FROM t WHERE id > %d", true, true},
		// Blocked, or carrying statements of their own: the rules read the
		// tree for their reasons, so every text is evaluated.
		{"SELECT pg_read_file('x') WHERE %d = 1", false, false},
		{"WITH d AS (DELETE FROM t WHERE id = %d RETURNING *) SELECT * FROM d", true, false},
		{"SELECT 1 FROM t WHERE a = %d; DELETE FROM t", false, false},
	}
	var lits []int
	for i := range 100 {
		lits = append(lits, 1000+i*37)
	}
	for _, tc := range tests {
		e := newEngine(t, Config{})
		ins := literalInputs(t, tc.shape, lits...)
		for _, in := range ins {
			want := plainDecide(t, e, in)
			d := e.Decide(context.Background(), in)
			d.ID = want.ID
			if d = withoutRawResult(t, d); !reflect.DeepEqual(d, want) || d.Allow != tc.allow {
				t.Fatalf("%q: decision %+v, want %+v", in.Postgres.Query, d, want)
			}
		}
		// The first text made the template and has a key of its own; the
		// others share one, learned at its memoLearnAt-th sighting.
		want := int64(0)
		if tc.hits {
			want = int64(len(ins) - 1 - memoLearnAt)
		}
		if hits := e.memo.hits.Load(); hits != want {
			t.Errorf("%s: %d memo hits for %d texts, want %d (%d keys learned, %d refused)", tc.shape, hits, len(ins), want, e.memo.learned.Load(), e.memo.refused.Load())
		}
		e.Close()
	}
}

// TestMemoLiteralsOwnRules checks the README's advice on rules added to the
// default library: one that reads statements by index keeps the decisions of
// plain SELECTs shared across literals; one that binds whole statements
// reads their trees, so every text is evaluated (and decided the same).
func TestMemoLiteralsOwnRules(t *testing.T) {
	for _, tc := range []struct {
		rule string
		hits bool
	}{
		{`deny contains "writes to the billing schema need a ticket" if {
	input.protocol == "postgres"
	some i, j
	rel := input.postgres.statements[i].relations[j]
	rel.schema == "billing"
	rel.access != "read"
}`, true},
		{`deny contains "writes to the billing schema need a ticket" if {
	input.protocol == "postgres"
	some stmt in input.postgres.statements
	some rel in stmt.relations
	rel.schema == "billing"
	rel.access != "read"
}`, false},
	} {
		e := libraryEngine(t, tc.rule)
		for _, in := range literalInputs(t, "SELECT abalance FROM pgbench_accounts WHERE aid = %d", someLiterals()...) {
			if d := e.Decide(context.Background(), in); !d.Allow || len(d.Mask) != 4 {
				t.Fatalf("%q: %+v", in.Postgres.Query, d)
			}
		}
		if hits := e.memo.hits.Load(); (hits > 0) != tc.hits {
			t.Errorf("%s\n%d memo hits, want hits: %v", tc.rule, hits, tc.hits)
		}
		e.Close()
	}
}

// TestMemoLiteralSoundness checks that a text is never served the decision
// learned from a text with other literals when the policy reads a literal's
// value, the query text or the trees as a whole: the key is refused (or a
// key of other statements learned), and the text with the blocked value is
// blocked after many allowed ones.
func TestMemoLiteralSoundness(t *testing.T) {
	rules := map[string]string{
		"a literal by path": `deny contains "666" if input.postgres.statements[0].ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival == 666`,
		"the query text":    `deny contains "666" if contains(input.postgres.query, "666")`,
		"the query's hash":  `deny contains "666" if crypto.sha256(input.postgres.query) == crypto.sha256("SELECT abalance FROM pgbench_accounts WHERE aid = 666")`,
		"a walk":            `deny contains "666" if walk(input.postgres.statements, [_, 666])`,
		"a walk of the ast": `deny contains "666" if {
	some s in input.postgres.statements
	walk(s.ast, [p, v])
	v == 666
}`,
		"json of the trees": `deny contains "666" if contains(json.marshal(input.postgres.statements), ":666}")`,
		"a comparison":      `deny contains "big" if input.postgres.statements[_].ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival > 600`,
		"a set of numbers":  `deny contains "666" if 666 in {n | walk(input, [_, n]); is_number(n)}`,
		"a rule's value": `q := input.postgres.query

deny contains "666" if endswith(q, "666")`,
		"a function's argument": `f(s) if s.ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival == 666

deny contains "666" if f(input.postgres.statements[0])`,
		"the postgres object": `deny contains "666" if {
	pg := input.postgres
	endswith(pg.query, "666")
}`,
		"with": `t if endswith(input.postgres.query, "666")

deny contains "666" if t with input.postgres.params as []`,
		"an indexed rule": `deny contains "666" if input.postgres.query == "SELECT abalance FROM pgbench_accounts WHERE aid = 666"`,
	}
	for name, rule := range rules {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := libraryEngine(t, rule)
			defer e.Close()
			ins := literalInputs(t, "SELECT abalance FROM pgbench_accounts WHERE aid = %d", append(someLiterals(), 666, 101)...)
			for i, in := range ins {
				d := e.Decide(context.Background(), in)
				if blocked := i == len(ins)-2; d.Allow == blocked || d.Error != "" {
					t.Fatalf("%q: decision %+v", in.Postgres.Query, d)
				}
			}
			if hits := e.memo.hits.Load(); hits != 0 {
				t.Errorf("%d memo hits (%d learned, %d refused)", hits, e.memo.learned.Load(), e.memo.refused.Load())
			}
		})
	}
}

// TestMemoEnumeratedUnknowns checks policies that reach the parameters or
// the time through a document holding them: OPA 1.22.3's partial
// evaluation, which binds the variable to the known part of the document
// when it enumerates a collection, proved the first independent of the
// parameters, and the memo served "allow" for "42" once it had learned the
// statement from other values.
func TestMemoEnumeratedUnknowns(t *testing.T) {
	rules := []string{
		`deny contains "42" if {
	some k, v in input
	k == "postgres"
	v.params[0] == "42"
}`,
		`deny contains "42" if {
	some pg in [input.postgres]
	pg.params[0] == "42"
}`,
		`deny contains "42" if {
	some x in {"a": input.postgres}
	x.params[0] == "42"
}`,
		`deny contains "42" if walk(input, [_, "42"])`,
		// OPA's rule index selects the rules whose conditions on the
		// parameters hold; the traced evaluation runs without it.
		`deny contains "42" if input.postgres.params[0] == "42"`,
		`p := input.postgres.params[0]

deny contains "42" if p == "42"`,
		`deny contains "42" if {
	some k, v in input
	k == "time"
	v == "2026-01-01T00:00:00.000025Z"
}`,
	}
	for _, rule := range rules {
		e := newEngine(t, Config{Bundle: bundleDir(t, "custom", map[string]string{
			"policy.rego": "package regate\n\ndecision := {\"allow\": count(deny) == 0}\n" + rule + "\n",
		})})
		ins := preparedInputs(t, 30)
		s := "42"
		ins[25].Postgres.Params = []*string{&s}
		ins[25].Time = time.Date(2026, 1, 1, 0, 0, 0, 25000, time.UTC)
		for i, in := range ins {
			d := e.Decide(context.Background(), in)
			if d.Allow == (i == 25) {
				t.Errorf("%s\nexecution %d (params %v): allow %v", rule, i, paramStrings(in.Postgres.Params), d.Allow)
			}
		}
		if hits := e.memo.hits.Load(); hits != 0 {
			t.Errorf("%s\n%d memo hits", rule, hits)
		}
		e.Close()
	}
}

// TestMemoKeyTemplated checks what the key of a templated text leaves out
// (the query text and the literals' digits) and that it never equals the key
// of a text that was parsed rather than templated.
func TestMemoKeyTemplated(t *testing.T) {
	ins := literalInputs(t, "SELECT abalance FROM pgbench_accounts WHERE aid = %d", 111, 222, 333)
	keys := make([]memoKey, len(ins))
	for i, in := range ins {
		ks, ok := memoKeyOf(in, nil)
		if !ok {
			t.Fatal("no key")
		}
		k := ks.session
		if (ks.shared.lits != nil) != (i > 0) {
			t.Fatalf("text %d: shared key's literals %v", i, ks.shared.lits)
		}
		keys[i] = k
		if (k.lits != nil) != (i > 0) {
			t.Fatalf("text %d: literals %v", i, k.lits)
		}
		for _, p := range k.parts {
			if i > 0 && bytes.Contains(p, []byte("pgbench_accounts WHERE")) {
				t.Errorf("text %d: the key holds the query text: %q", i, p)
			}
		}
	}
	if !keys[1].equal(&keys[2]) || keys[1].hash != keys[2].hash {
		t.Error("texts differing only in a literal have different keys")
	}
	own := keys[1].own()
	if keys[0].equal(&keys[1]) || keys[0].equal(&own) {
		t.Error("a parsed text's key equals a templated one's")
	}
	if !own.equal(&keys[2]) || own.lits != nil {
		t.Error("own")
	}
	// A literal of another length is another template, but the same key
	// (the digits are cut out; the proof holds for any value).
	other := literalInputs(t, "SELECT abalance FROM pgbench_accounts WHERE aid = %d", 1, 2)
	ks, _ := memoKeyOf(other[1], nil)
	k := ks.session
	if !k.equal(&keys[1]) {
		t.Errorf("keys differ: %q %q", k.parts, keys[1].parts)
	}
	// Another table is another key.
	other = literalInputs(t, "SELECT abalance FROM pgbench_branches WHERE aid = %d", 111, 222)
	if ks, _ = memoKeyOf(other[1], nil); ks.session.equal(&keys[1]) {
		t.Error("another table, the same key")
	}
}
