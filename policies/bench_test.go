package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/parse/sql"
)

// benchSelectAST is the pg_query JSON of
//
//	SELECT u.id, u.email, o.total FROM public.users u JOIN public.orders o
//	ON o.user_id = u.id WHERE u.created_at > now() - interval '7 days'
//	AND o.status = 'paid' ORDER BY o.total DESC LIMIT 50
const benchSelectAST = `{"SelectStmt": {"targetList": [{"ResTarget": {"val": {"ColumnRef": {"fields": [{"String": {"sval": "u"}}, {"String": {"sval": "id"}}], "location": 7}}, "location": 7}}, {"ResTarget": {"val": {"ColumnRef": {"fields": [{"String": {"sval": "u"}}, {"String": {"sval": "email"}}], "location": 13}}, "location": 13}}, {"ResTarget": {"val": {"ColumnRef": {"fields": [{"String": {"sval": "o"}}, {"String": {"sval": "total"}}], "location": 22}}, "location": 22}}], "fromClause": [{"JoinExpr": {"jointype": "JOIN_INNER", "larg": {"RangeVar": {"schemaname": "public", "relname": "users", "inh": true, "relpersistence": "p", "alias": {"aliasname": "u"}, "location": 35}}, "rarg": {"RangeVar": {"schemaname": "public", "relname": "orders", "inh": true, "relpersistence": "p", "alias": {"aliasname": "o"}, "location": 55}}, "quals": {"A_Expr": {"kind": "AEXPR_OP", "name": [{"String": {"sval": "="}}], "lexpr": {"ColumnRef": {"fields": [{"String": {"sval": "o"}}, {"String": {"sval": "user_id"}}], "location": 74}}, "rexpr": {"ColumnRef": {"fields": [{"String": {"sval": "u"}}, {"String": {"sval": "id"}}], "location": 86}}, "location": 84}}}}], "whereClause": {"BoolExpr": {"boolop": "AND_EXPR", "args": [{"A_Expr": {"kind": "AEXPR_OP", "name": [{"String": {"sval": ">"}}], "lexpr": {"ColumnRef": {"fields": [{"String": {"sval": "u"}}, {"String": {"sval": "created_at"}}], "location": 97}}, "rexpr": {"A_Expr": {"kind": "AEXPR_OP", "name": [{"String": {"sval": "-"}}], "lexpr": {"FuncCall": {"funcname": [{"String": {"sval": "now"}}], "funcformat": "COERCE_EXPLICIT_CALL", "location": 112}}, "rexpr": {"TypeCast": {"arg": {"A_Const": {"sval": {"sval": "7 days"}, "location": 129}}, "typeName": {"names": [{"String": {"sval": "pg_catalog"}}, {"String": {"sval": "interval"}}], "typemod": -1, "location": 120}, "location": -1}}, "location": 118}}, "location": 110}}, {"A_Expr": {"kind": "AEXPR_OP", "name": [{"String": {"sval": "="}}], "lexpr": {"ColumnRef": {"fields": [{"String": {"sval": "o"}}, {"String": {"sval": "status"}}], "location": 142}}, "rexpr": {"A_Const": {"sval": {"sval": "paid"}, "location": 153}}, "location": 151}}], "location": 138}}, "sortClause": [{"SortBy": {"node": {"ColumnRef": {"fields": [{"String": {"sval": "o"}}, {"String": {"sval": "total"}}], "location": 169}}, "sortby_dir": "SORTBY_DESC", "sortby_nulls": "SORTBY_NULLS_DEFAULT", "location": -1}}], "limitCount": {"A_Const": {"ival": {"ival": 50}, "location": 188}}, "limitOption": "LIMIT_OPTION_COUNT", "op": "SETOP_NONE"}}`

func benchInput(b *testing.B) *parse.Input {
	b.Helper()
	var tree map[string]any
	if err := json.Unmarshal([]byte(benchSelectAST), &tree); err != nil {
		b.Fatal(err)
	}
	return pgInput(parse.Statement{
		Command: "SELECT", Node: "SelectStmt", HasWhere: true, Functions: []string{"now"},
		Relations: []parse.Relation{
			{Schema: "public", Name: "users", Access: parse.AccessRead},
			{Schema: "public", Name: "orders", Access: parse.AccessRead},
		},
		AST: tree,
	})
}

// BenchmarkDecide measures one decision of the default library for a
// realistic single-statement SELECT, input conversion included, evaluated
// every time (the memo, which would serve this repeated input, is off).
func BenchmarkDecide(b *testing.B) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	e.memo = nil
	in := benchInput(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, in); !d.Allow {
			b.Fatalf("denied: %v", d.Reasons)
		}
	}
}

// BenchmarkDecideParallel is BenchmarkDecide from GOMAXPROCS goroutines.
func BenchmarkDecideParallel(b *testing.B) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	e.memo = nil
	in := benchInput(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := e.Decide(context.Background(), in); !d.Allow {
				b.Errorf("denied: %v", d.Reasons)
				return
			}
		}
	})
}

// BenchmarkInputConversion compares inputValue with plain ways of turning the
// input into an AST value.
func BenchmarkInputConversion(b *testing.B) {
	in := benchInput(b)
	b.Run("inputValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := inputValue(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal+UnmarshalJSON+InterfaceToValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			raw, err := json.Marshal(in)
			if err != nil {
				b.Fatal(err)
			}
			var doc any
			if err := util.UnmarshalJSON(raw, &doc); err != nil {
				b.Fatal(err)
			}
			if _, err := ast.InterfaceToValue(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal+ValueFromReader", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			raw, err := json.Marshal(in)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ast.ValueFromReader(bytes.NewReader(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("InterfaceToValue(struct)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ast.InterfaceToValue(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEvalInput is Decide's evaluation with rego.EvalInput (OPA converts
// the Go value itself) instead of a pre-converted rego.EvalParsedInput.
func BenchmarkEvalInput(b *testing.B) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.gen.Load().query.Eval(ctx, rego.EvalInput(in), rego.EvalSortSets(true)); err != nil {
			b.Fatal(err)
		}
	}
}

// preparedInputs returns n inputs of one session executing the pgbench -S
// prepared statement (parsed by parse/sql, so its tree is shared as in the
// proxy) with n different bound parameters and execution times.
func preparedInputs(tb testing.TB, n int) []*parse.Input {
	tb.Helper()
	stmts, err := sql.NewParser(0).Parse("SELECT abalance FROM pgbench_accounts WHERE aid = $1;")
	if err != nil {
		tb.Fatal(err)
	}
	base := pgInput(stmts...)
	base.Postgres.Query = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
	ins := make([]*parse.Input, n)
	for i := range ins {
		in := *base
		pg := *base.Postgres
		p := strconv.Itoa(1 + i*7919%100000)
		pg.Params = []*string{&p}
		in.Postgres = &pg
		in.Time = base.Time.Add(time.Duration(i) * time.Microsecond)
		ins[i] = &in
	}
	return ins
}

// BenchmarkDecidePrepared measures the decision of the default library for
// pgbench -S's prepared SELECT executed again and again with other
// parameters, as the extended protocol does (the memo serves it).
func BenchmarkDecidePrepared(b *testing.B) {
	benchmarkDecidePrepared(b, true)
}

// BenchmarkDecidePreparedNoMemo is BenchmarkDecidePrepared evaluating every
// decision.
func BenchmarkDecidePreparedNoMemo(b *testing.B) {
	benchmarkDecidePrepared(b, false)
}

func benchmarkDecidePrepared(b *testing.B, memo bool) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	if !memo {
		e.memo = nil
	}
	ins := preparedInputs(b, 1024)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d := e.Decide(ctx, ins[i%len(ins)]); !d.Allow {
			b.Fatalf("denied: %v", d.Reasons)
		}
		i++
	}
}

// BenchmarkDecidePreparedEncoded is BenchmarkDecidePrepared as the pipeline
// decides: with the input's encoding, made by the session's encoder for the
// record (its cost included).
func BenchmarkDecidePreparedEncoded(b *testing.B) {
	benchmarkDecideEncoded(b, preparedInputs(b, 1024), nil)
}

// benchmarkDecideEncoded decides ins in turn as the pipeline does, with each
// input's encoding (made by one session's encoder, its cost included), and
// calls lap, when not nil, before every pass over ins.
func benchmarkDecideEncoded(b *testing.B, ins []*parse.Input, lap func(n int)) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var enc parse.InputEncoder
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if lap != nil && i%len(ins) == 0 {
			lap(i / len(ins))
		}
		in := ins[i%len(ins)]
		parts, err := enc.EncodeParts(in)
		if err != nil {
			b.Fatal(err)
		}
		if d := e.DecideEncoded(ctx, in, &parts); !d.Allow {
			b.Fatalf("denied: %v", d.Reasons)
		}
		i++
	}
}

// BenchmarkDecidePreparedParallel is BenchmarkDecidePrepared from GOMAXPROCS
// goroutines, each its own session.
func BenchmarkDecidePreparedParallel(b *testing.B) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	var sessions atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ins := preparedInputs(b, 256)
		id := fmt.Sprintf("s%d", sessions.Add(1))
		for _, in := range ins {
			in.Session.ID = id
		}
		i := 0
		for pb.Next() {
			if d := e.Decide(context.Background(), ins[i%len(ins)]); !d.Allow {
				b.Errorf("denied: %v", d.Reasons)
				return
			}
			i++
		}
	})
}

// BenchmarkDecideSimple measures the decision of the default library for
// pgbench -S's SELECT sent with the simple protocol: the value is in the
// text, so every execution is a new text (parsed from its template by
// parse/sql) and the memo cannot serve it. The inputs share one target, as a
// gateway's do, and every pass over them is another session's, so that no
// text is seen often enough for the memo to try to learn it.
func BenchmarkDecideSimple(b *testing.B) {
	p := sql.NewParser(0)
	ins := make([]*parse.Input, 4096)
	for i := range ins {
		q := "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(10000+i) + ";"
		stmts, err := p.Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		in := pgInput(stmts...)
		in.Postgres.Query = q
		ins[i] = in
	}
	for _, in := range ins {
		in.Target = ins[0].Target
	}
	benchmarkDecideEncoded(b, ins, func(n int) {
		for _, in := range ins {
			in.Session.ID = "s" + strconv.Itoa(n)
		}
	})
}

// BenchmarkMemoLearn measures learning one key of the default library's
// decision for a simple-protocol SELECT made from a parse template: the
// traced evaluation and the evaluation with other values (learn), in the
// transaction of a request, after its ordinary evaluation.
func BenchmarkMemoLearn(b *testing.B) {
	e, err := New(context.Background(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	p := sql.NewParser(0)
	var in *parse.Input
	for _, q := range []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 10000", "SELECT abalance FROM pgbench_accounts WHERE aid = 10001"} {
		stmts, err := p.Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		in = pgInput(stmts...)
		in.Postgres.Query = q
	}
	keys, ok := memoKeyOf(in, nil)
	key := keys.shared
	if !ok || key.lits == nil {
		b.Fatal("not a templated key")
	}
	v, err := e.fastInputValue(in)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	gen := e.gen.Load()
	rs, err := gen.query.Eval(ctx, rego.EvalParsedInput(v), rego.EvalSortSets(true), rego.EvalCopyMaps(true))
	if err != nil || len(rs) == 0 {
		b.Fatal(err)
	}
	want := rs[0].Expressions[0].Value
	b.ReportAllocs()
	for b.Loop() {
		txn, err := e.store.NewTransaction(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, verdict := e.learn(ctx, gen, txn, v.(ast.Object), &key, want); verdict != learnOK {
			b.Fatalf("verdict %v", verdict)
		}
		e.store.Abort(ctx, txn)
	}
}
