package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies/decision"
)

// plainDecide is Decide without the memo: the reference the memo must match.
func plainDecide(t *testing.T, e *Engine, in *parse.Input) decision.Decision {
	t.Helper()
	v, err := e.fastInputValue(in)
	if err != nil {
		t.Fatal(err)
	}
	return e.eval(context.Background(), decision.Decision{ID: "plain", Path: e.path}, nil,
		func() (ast.Value, error) { return v, nil })
}

// memoInputs are inputs of a few sessions executing a few statements
// (prepared ones with parameters, plain ones without), each with several
// parameter values (including none, NULL and the values the test policies
// look for) and times.
func memoInputs(t *testing.T) []*parse.Input {
	t.Helper()
	parser := sql.NewParser(0)
	queries := []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
		"DELETE FROM t",
		"DROP TABLE public.t",
		"SELECT now(), $1::int",
		"SELECT 1; SELECT pg_read_file($1)",
	}
	str := func(s string) *string { return &s }
	paramSets := [][]*string{nil, {}, {str("42")}, {str("7")}, {nil}, {str("abc"), str("42")}, {str("1"), str("2")}}
	times := []time.Time{
		time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 6, 7, 8, 9, 10, 123456789, time.UTC),
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	var ins []*parse.Input
	for s, session := range []string{"s1", "s2"} {
		for _, q := range queries {
			stmts, err := parser.Parse(q)
			if err != nil {
				t.Fatal(err)
			}
			for i, params := range paramSets {
				ins = append(ins, memoInput(stmts, q, params, times[(i+s)%len(times)], session))
			}
		}
		// Texts that differ only in integer literals: all but the first
		// of each shape are made from its parse template, and share a key.
		for _, shape := range templatedShapes {
			for i, lit := range []int{111, 222, 666, 999, 333} {
				q := fmt.Sprintf(shape, lit)
				stmts, err := parser.Parse(q)
				if err != nil {
					t.Fatal(err)
				}
				for j, params := range paramSets[:3] {
					ins = append(ins, memoInput(stmts, q, params, times[(i+j+s)%len(times)], session))
				}
			}
		}
	}
	return ins
}

// templatedShapes are texts with an integer literal (%d) for memoInputs.
var templatedShapes = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = %d",
	"DELETE FROM t WHERE id = %d",
	"SELECT pg_read_file('x') WHERE %d = 1",
	"UPDATE t SET a = %d WHERE id = $1 /* a comment */",
	"SELECT 1 FROM t WHERE a = %[1]d; DELETE FROM t WHERE b = %[1]d",
}

func memoInput(stmts []parse.Statement, q string, params []*string, at time.Time, session string) *parse.Input {
	in := pgInput(stmts...)
	in.Session.ID = session
	in.Postgres.Query = q
	in.Postgres.Params = params
	in.Time = at
	if session == "s2" {
		in.Identity.Claims = map[string]any{"email": "bob@example.com"}
	}
	return in
}

// checkMemoMatches decides every input several times, in an order that lets
// the memo learn and hit, and fails on any decision that differs from plain
// evaluation (apart from its ID).
func checkMemoMatches(t *testing.T, e *Engine, ins []*parse.Input) {
	t.Helper()
	ctx := context.Background()
	wants := make([]decision.Decision, len(ins))
	for i, in := range ins {
		wants[i] = plainDecide(t, e, in)
	}
	for round := range memoLearnAt + 3 {
		for i := range ins {
			// Rounds go forwards and backwards so that a key's executions
			// are interleaved with other keys'.
			if round%2 == 1 {
				i = len(ins) - 1 - i
			}
			in := ins[i]
			got := e.Decide(ctx, in)
			if got.ID == "" || got.ID == "plain" {
				t.Fatalf("decision ID %q", got.ID)
			}
			want := wants[i]
			got.ID = want.ID
			got = withoutRawResult(t, got)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d, query %q, params %v, time %v:\n got %+v\nwant %+v",
					round, in.Postgres.Query, paramStrings(in.Postgres.Params), in.Time, got, want)
			}
		}
	}
}

func paramStrings(ps []*string) []string {
	var out []string
	for _, p := range ps {
		if p == nil {
			out = append(out, "NULL")
		} else {
			out = append(out, *p)
		}
	}
	return out
}

// TestMemoMatchesEvaluation is the memo's soundness property: for policies
// whose decisions do and do not depend on the parameters, the time, the
// whole input or non-deterministic built-ins, and for policies that fail on
// some parameters, every decision equals plain evaluation.
func TestMemoMatchesEvaluation(t *testing.T) {
	tests := []struct {
		name   string
		policy string // package regate, after the package line
		// memo: whether the memo must (true) or must not (false) hit at all.
		memo bool
		// library: the policy is added to the default library's files.
		library bool
	}{
		{"default library", "", true, false},
		// A rule of one's own that reads the parameters of some statements:
		// the decisions of the other statements are memoized.
		{"default library and a parameter rule", `deny contains "42" if {
	some s in input.postgres.statements
	s.command == "DELETE"
	some p in input.postgres.params
	p == "42"
}`, true, true},
		// Rules that read a literal's value, the query text or the whole
		// tree: a text must never be served another literal's decision.
		{"default library and a literal rule", `deny contains "aid 666" if {
	input.postgres.statements[0].ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival == 666
}`, true, true},
		{"default library and a query rule", `deny contains "666 in the text" if contains(input.postgres.query, "666")`, true, true},
		{"default library and a walk for a number", `deny contains "666 in a tree" if walk(input.postgres.statements, [_, 666])`, true, true},
		{"a literal in a reason", `decision := {"allow": true, "reasons": [sprintf("%v", [n]) | walk(input.postgres.statements[_].ast, [p, n]); is_number(n); p[count(p) - 1] == "ival"]}`, true, false},
		{"a literal's location", `decision := {"allow": true, "reasons": [sprintf("%v", [n]) | walk(input.postgres.statements[_].ast, [p, n]); p[count(p) - 1] == "location"]}`, true, false},
		{"the query's length", `decision := {"allow": count(input.postgres.query) < 40}`, true, false},
		{"a literal compared", `decision := {"allow": allow}
default allow := true
allow := false if {
	some s in input.postgres.statements
	s.ast.DeleteStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival > 500
}`, true, false},
		{"default library and a statement rule", `deny contains "no DELETE on t" if {
	some s in input.postgres.statements
	s.command == "DELETE"
	some r in s.relations
	r.name == "t"
}`, true, true},
		{"blocks a parameter", `decision := {"allow": allow, "reasons": []}
allow := false if input.postgres.params[0] == "42"
else := true`, false, false},
		{"blocks a parameter, among statements", `decision := {"allow": count(deny) == 0, "reasons": sort(deny)}
deny contains "delete" if input.postgres.statements[_].command == "DELETE"
deny contains "42" if {
	some s in input.postgres.statements
	some r in s.relations
	r.name == "t"
	some p in input.postgres.params
	p == "42"
}`, true, false}, // statements not naming t: count(set()) == 0, evaluated once
		// Enumerating a document that holds an unknown: OPA 1.22.3's partial
		// evaluation binds the variable to the known part and proved these
		// independent of the parameters (the memo then served "allow" for
		// "42"); the traced evaluation refuses them.
		{"parameters through enumerating input", `decision := {"allow": count(deny) == 0}
deny contains "42" if {
	some k, v in input
	k == "postgres"
	v.params[0] == "42"
}`, false, false},
		{"time through enumerating input", `decision := {"allow": count(deny) == 0}
deny contains "new year" if {
	some k, v in input
	k == "time"
	startswith(v, "2027-01-01")
}`, false, false},
		{"parameters through an array", `decision := {"allow": count(deny) == 0}
deny contains "42" if {
	some pg in [input.postgres]
	pg.params[0] == "42"
}`, false, false},
		{"parameters through a function", `decision := {"allow": f(input)}
f(x) := false if x.postgres.params[0] == "42"
else := true`, false, false},
		{"time", `decision := {"allow": input.time < "2026"}`, false, false},
		{"time in a reason", `decision := {"allow": true, "reasons": [input.time]}`, false, false},
		{"time with a default", `decision := {"allow": allow}
default allow := true
allow := false if input.time >= "2026"`, false, false},
		{"time through object.get", `decision := {"allow": object.get(input, "time", "none") != "2027-01-01T00:00:00Z"}`, false, false},
		{"time negated", `decision := {"allow": true, "reasons": ["new year"]} if not startswith(input.time, "2027-01-01")
else := {"allow": false}`, false, false},
		{"time.now_ns", `decision := {"allow": time.now_ns() > 0}`, false, false},
		{"time.now_ns in a test rule", `decision := {"allow": true}
test_now if time.now_ns() > 0`, false, false},
		{"print", `decision := {"allow": true} if print("deciding")`, false, false},
		{"http.send mocked", `decision := {"allow": true} if {
	r := http.send({"method": "GET", "url": "http://127.0.0.1:1"}) with http.send as {"status_code": 200}
	r.status_code == 200
}`, false, false},
		{"some k, v in input.postgres", `decision := {"allow": true, "reasons": [sprintf("%s=%v", [k, v]) | some k, v in input.postgres]}`, false, false},
		{"some k in input.postgres", `decision := {"allow": true, "reasons": [k | some k, _ in input.postgres]}`, false, false},
		{"some k in input", `decision := {"allow": true, "reasons": [k | some k, _ in input]}`, false, false},
		{"count(input.postgres)", `decision := {"allow": count(input.postgres) == 6}`, false, false},
		{"walk(input)", `decision := {"allow": true, "n": count([p | walk(input, [p, _])])}`, false, false},
		{"walk(input.postgres) to params", `decision := {"allow": true, "reasons": [v | walk(input.postgres, [p, v]); is_string(v); count(p) == 2; p[0] == "params"]}`, false, false},
		{"json.marshal(input)", `decision := {"allow": true, "reasons": [json.marshal(input)]}`, false, false},
		{"json.marshal(input.postgres.statements)", `decision := {"allow": true, "reasons": [json.marshal(input.postgres.statements)]}`, true, false},
		{"object.get with a dynamic key", `decision := {"allow": true, "reasons": [json.marshal(object.get(input.postgres, k, "none")) | some k in ["query", concat("", ["par", "ams"]), "x"]]}`, false, false},
		{"object.keys", `decision := {"allow": count(object.keys(input.postgres)) == 6, "reasons": sort(object.keys(input.postgres))}`, false, false},
		{"object.remove", `decision := {"allow": true, "x": object.remove(input.postgres, ["statements", "query"])}`, false, false},
		{"input.postgres as a whole", `decision := {"allow": true, "x": input.postgres}`, false, false},
		{"errors on some parameters", `decision := {"allow": to_number(input.postgres.params[0]) > 0}`, false, false},
		{"errors on every request", `decision := {"allow": to_number(input.postgres.query) > 0}`, false, false},
		{"conflict on some parameters", `decision := {"allow": true} if input.postgres.params[0] == "42"
decision := {"allow": false} if input.postgres.database == "app"`, false, false},
		{"every parameter", `decision := {"allow": ok}
default ok := false
ok if every p in input.postgres.params { p != "42" }`, false, false},
		{"negated parameter", `decision := {"allow": ok}
default ok := false
ok if not input.postgres.params`, false, false},
		{"with on the parameters", `decision := {"allow": true, "x": x} if x := input.postgres.params with input.postgres.params as ["1"]`, false, false},
		{"with keeps the parameters", `decision := {"allow": true, "x": x} if x := count(input.postgres.params) with input.postgres.query as ""`, false, false},
		{"function of the parameters", `decision := {"allow": f(input.postgres.params)}
f(ps) := false if ps[0] == "42"
else := true`, false, false},
		{"function of the statements", `decision := {"allow": f(input.postgres.statements)}
f(ss) := false if ss[0].command == "DROP"
else := true`, true, false},
		{"undefined decision", `decision := {"allow": true} if input.postgres.database == "other"`, false, false},
		{"undefined for some parameters", `decision := {"allow": true} if input.postgres.params[0] != "42"`, false, false},
		{"broken contract", `decision := {"allow": "yes", "mask": [{"column": "x", "colour": "red"}]}`, true, false},
		{"set of reasons", `decision := {"allow": false, "reasons": {s.command | some s in input.postgres.statements}}`, true, false},
		{"claims", `decision := {"allow": input.identity.claims.email == "alice@example.com"}`, true, false},
		{"session", `decision := {"allow": input.session.id == "s1"}`, true, false},
	}
	ins := memoInputs(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{}
			if tc.policy != "" {
				files := map[string]string{"policy.rego": "package regate\n\n" + tc.policy + "\n"}
				if tc.library {
					for _, name := range []string{"regate.rego", "postgres.rego", "regate/postgres/data.json"} {
						b, err := fs.ReadFile(Default(), name)
						if err != nil {
							t.Fatal(err)
						}
						files[name] = string(b)
					}
				}
				cfg.Bundle = bundleDir(t, "custom", files)
			}
			e := newEngine(t, cfg)
			defer e.Close()
			// One hit in three is evaluated and compared as well.
			e.memo.verifyEvery = 3
			checkMemoMatches(t, e, ins)
			if n := e.memo.mismatches.Load(); n != 0 {
				t.Errorf("%d memoized decisions differed from evaluation", n)
			}
			if hits := e.memo.hits.Load(); (hits > 0) != tc.memo {
				t.Errorf("%d memo hits (%d keys learned, %d refused)", hits, e.memo.learned.Load(), e.memo.refused.Load())
			}
			// Generations calling non-deterministic built-ins or print never
			// use the memo at all.
			off := strings.Contains(tc.policy, "time.now_ns") || strings.Contains(tc.policy, "print(") || strings.Contains(tc.policy, "http.send")
			if e.gen.Load().memoizable == off {
				t.Errorf("memo enabled: %v", e.gen.Load().memoizable)
			}
		})
	}
}

// TestMemoHitsPreparedSelect checks that the memo serves the default
// library's decisions of a prepared SELECT executed with other parameters,
// once learned (at its memoLearnAt-th execution).
func TestMemoHitsPreparedSelect(t *testing.T) {
	e := newEngine(t, Config{})
	defer e.Close()
	ins := preparedInputs(t, 100)
	for _, in := range ins {
		d := e.Decide(context.Background(), in)
		if !d.Allow || d.Error != "" || len(d.Mask) != 4 {
			t.Fatalf("decision %+v", d)
		}
	}
	if hits := e.memo.hits.Load(); hits != int64(len(ins)-memoLearnAt) {
		t.Errorf("%d memo hits for %d executions, want %d", hits, len(ins), len(ins)-memoLearnAt)
	}
	if e.memo.learned.Load() != 1 || e.memo.refused.Load() != 0 {
		t.Errorf("%d keys learned, %d refused; want 1, 0", e.memo.learned.Load(), e.memo.refused.Load())
	}
}

// TestMemoDecisionIsFresh checks that a memoized decision has its own ID
// and that nothing a caller may change (its ID, reasons, bundles, appending
// to its mask) reaches another decision; Result and Mask are read-only.
func TestMemoDecisionIsFresh(t *testing.T) {
	e := newEngine(t, Config{})
	defer e.Close()
	ins := preparedInputs(t, memoLearnAt+2)
	var ds []decision.Decision
	for _, in := range ins {
		ds = append(ds, e.Decide(context.Background(), in))
	}
	if e.memo.hits.Load() != 2 {
		t.Fatalf("%d memo hits", e.memo.hits.Load())
	}
	a, b := ds[len(ds)-2], ds[len(ds)-1]
	if a.ID == b.ID {
		t.Errorf("two decisions with ID %s", a.ID)
	}
	// Result and Mask are shared read-only (decision.Decision says so);
	// what a caller may change must not reach another decision.
	a.Mask = append(a.Mask, decision.Mask{Column: "changed"})
	a.Reasons = append(a.Reasons, "changed")
	a.Bundles["x"] = decision.Bundle{}
	want := plainDecide(t, e, ins[len(ins)-1])
	b.ID = want.ID
	if b = withoutRawResult(t, b); !reflect.DeepEqual(b, want) {
		t.Errorf("changing a decision changed another:\n got %+v\nwant %+v", b, want)
	}
}

// TestMemoFollowsData checks that a memoized decision is never served once
// the data it was made on changes without a new policy (a write to the
// store, as a data-only bundle makes), nor after a new bundle is activated.
func TestMemoFollowsData(t *testing.T) {
	dir := bundleDir(t, "custom", map[string]string{
		"policy.rego": `package regate

decision := {"allow": count(deny) == 0, "reasons": sort(deny)}

deny contains sprintf("%s is blocked", [r.name]) if {
	some s in input.postgres.statements
	some r in s.relations
	r.name in data.regate.blocked
}
`,
		"regate/data.json": `{"blocked": ["t"]}`,
	})
	e := newEngine(t, Config{Bundle: dir})
	defer e.Close()
	ctx := context.Background()
	ins := memoInputs(t)
	write := func(blocked ...string) {
		t.Helper()
		var v []any
		for _, b := range blocked {
			v = append(v, b)
		}
		if err := storage.WriteOne(ctx, e.store, storage.ReplaceOp, storage.MustParsePath("/regate/blocked"), v); err != nil {
			t.Fatal(err)
		}
	}
	gen := e.gen.Load()
	for i, blocked := range [][]string{{"pgbench_accounts"}, {}, {"t", "pgbench_accounts"}, {"t"}} {
		checkMemoMatches(t, e, ins)
		if e.memo.hits.Load() == 0 {
			t.Fatalf("step %d: no memo hits", i)
		}
		write(blocked...)
		if e.gen.Load() != gen {
			t.Fatal("a data write made a new generation")
		}
	}
	checkMemoMatches(t, e, ins)

	// A new bundle (other data, same policy) is a new generation.
	writeFile(t, dir+"/regate/data.json", `{"blocked": ["pgbench_accounts", "t"]}`)
	if _, _, err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if e.gen.Load() == gen {
		t.Fatal("no new generation")
	}
	checkMemoMatches(t, e, ins)
	if d := e.Decide(ctx, ins[0]); d.Allow || !strings.Contains(strings.Join(d.Reasons, ";"), "pgbench_accounts is blocked") {
		t.Errorf("after the reload: %+v", d)
	}
}

// TestMemoHitsAreLogged checks that decisions the memo serves reach OPA's
// decision-log plugin like evaluated ones, each under its own ID.
func TestMemoHitsAreLogged(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := hclog.New(&hclog.LoggerOptions{Output: &lockedWriter{w: &logs, mu: &mu}, Level: hclog.Info})
	e := startEngine(t, Config{OPA: []byte(`{"decision_logs": {"console": true}}`), Logger: logger})
	var ids []string
	ins := preparedInputs(t, memoLearnAt+4)
	for _, in := range ins {
		ids = append(ids, e.Decide(context.Background(), in).ID)
	}
	if e.memo.hits.Load() != 4 {
		t.Fatalf("%d memo hits", e.memo.hits.Load())
	}
	for _, id := range ids {
		waitFor(t, "decision "+id+" in the console decision log", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(logs.String(), id)
		})
	}
	// The logged input is the request's own, parameters included.
	mu.Lock()
	defer mu.Unlock()
	if last := *ins[len(ins)-1].Postgres.Params[0]; !strings.Contains(logs.String(), "params:["+last+"]") {
		t.Errorf("parameter %s of the last decision not logged:\n%s", last, logs.String())
	}
}

// TestMemoDataOnlyBundle checks that a memoized decision is not served once
// a data-only bundle downloaded from a bundle service changes the data it
// was made on.
func TestMemoDataOnlyBundle(t *testing.T) {
	lists := func(dbs string) map[string]string {
		return map[string]string{".manifest": `{"roots": ["lists"]}`, "data.json": `{"lists": {"allowed_dbs": ` + dbs + `}}`}
	}
	files := &bundleFiles{files: map[string][]byte{
		"main.tar.gz": buildBundle(t, "m1", map[string]string{
			".manifest":   `{"roots": ["gate"]}`,
			"policy.rego": "package gate\n\ndecision := {\"allow\": input.postgres.database in data.lists.allowed_dbs}\n",
		}),
		"lists.tar.gz": buildBundle(t, "l1", lists(`["app"]`)),
	}}
	srv := httptest.NewServer(files)
	defer srv.Close()
	e := startEngine(t, Config{
		OPA:      opaConfig(srv.URL, map[string]string{"main": "main.tar.gz", "lists": "lists.tar.gz"}),
		Decision: "gate/decision",
	})
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := e.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	ins := preparedInputs(t, memoLearnAt+8)
	decideAll := func(allow bool, rev string) {
		t.Helper()
		for _, in := range ins {
			d := e.Decide(ctx, in)
			if d.Allow != allow || d.Bundles["lists"].Revision != rev {
				t.Fatalf("want allow %v under lists %s: %+v", allow, rev, d)
			}
		}
	}
	decideAll(true, "l1")
	hits := e.memo.hits.Load()
	if hits == 0 {
		t.Fatal("no memo hits")
	}
	for _, step := range []struct {
		rev, dbs string
		allow    bool
	}{{"l2", `["other"]`, false}, {"l3", `["other", "app"]`, true}} {
		files.Set("lists.tar.gz", buildBundle(t, step.rev, lists(step.dbs)))
		waitFor(t, "lists "+step.rev, func() bool { return e.Bundles()["lists"].Revision == step.rev })
		decideAll(step.allow, step.rev)
		// Twice: the memo learns the new decisions and serves them.
		decideAll(step.allow, step.rev)
		if e.memo.hits.Load() == hits {
			t.Errorf("no memo hits under lists %s", step.rev)
		}
		hits = e.memo.hits.Load()
	}
}

// TestMemoVerifyCatchesWrongEntry checks that a sampled hit that differs
// from evaluation (here a corrupted entry) is answered by evaluation and
// turns the memo off for the generation.
func TestMemoVerifyCatchesWrongEntry(t *testing.T) {
	e := newEngine(t, Config{})
	defer e.Close()
	ctx := context.Background()
	ins := preparedInputs(t, memoLearnAt+10)
	for _, in := range ins[:memoLearnAt+1] {
		if d := e.Decide(ctx, in); !d.Allow {
			t.Fatalf("decision %+v", d)
		}
	}
	if e.memo.hits.Load() != 1 {
		t.Fatalf("%d memo hits", e.memo.hits.Load())
	}
	e.memo.mu.Lock()
	for _, bucket := range e.memo.entries {
		for _, en := range bucket {
			en.decision.Allow = false
			en.decision.Result = map[string]any{"allow": false}
		}
	}
	e.memo.mu.Unlock()
	e.memo.verifyEvery = 1
	for _, in := range ins[memoLearnAt+1:] {
		got := e.Decide(ctx, in)
		want := plainDecide(t, e, in)
		got.ID = want.ID
		if got = withoutRawResult(t, got); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v\nwant %+v", got, want)
		}
	}
	if e.memo.mismatches.Load() != 1 || e.memo.hits.Load() != 1 {
		t.Errorf("%d mismatches, %d hits; want 1, 1", e.memo.mismatches.Load(), e.memo.hits.Load())
	}
	if e.memo.learned.Load() != 1 {
		t.Errorf("%d keys learned after the memo was turned off", e.memo.learned.Load())
	}
}

// withoutRawResult checks that a decision's RawResult, when set (memo hits
// carry it for the recorder), is its Result's encoding, and returns the
// decision without it.
func withoutRawResult(t *testing.T, d decision.Decision) decision.Decision {
	t.Helper()
	if d.RawResult == nil {
		return d
	}
	if raw, err := json.Marshal(d.Result); err != nil || !bytes.Equal(raw, d.RawResult) {
		t.Fatalf("RawResult %s is not the encoding of Result %s (%v)", d.RawResult, raw, err)
	}
	d.RawResult = nil
	return d
}
