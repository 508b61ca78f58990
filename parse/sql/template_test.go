package sql

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/regate/regate/parse"
)

var templateQueries = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
	"UPDATE pgbench_accounts SET abalance = abalance + 4711 WHERE aid = 42",
	"SELECT -5, 5 - 3, - 7, +8, 9",
	"SELECT 1::float(24), 2::float(50), 3::numeric(10,2), 4::varchar(12), 5::bit(3)",
	"SELECT x[1:2], y[3] FROM t LIMIT 10 OFFSET 20",
	"SELECT '5', E'\\'5', E'5\\\\', $1, $$ 5 $$, $a$ 5 $a$, \"5\", U&'5', B'101', X'1F'",
	"SELECT 1e5, 1.5, .5, 5., 0x1F, 0o17, 0b101, 1_000, 0, 007, 1 .5",
	"CREATE SEQUENCE s INCREMENT 5 START 10 CACHE 20",
	"ALTER TABLE t ALTER c SET STATISTICS 100",
	"SELECT interval '1' second(3), interval(2) '3 s', timestamp(3) '2020-01-01', time(4) with time zone '1:00'",
	"SELECT 2147483647, 2147483648, 9999999999, 1234567890",
	"FETCH 5 FROM c",
	"SELECT * FROM t WHERE a IN (1,2,3) AND b BETWEEN 10 AND 20 ORDER BY 1, 2 DESC",
	"SELECT 1; SELECT 22; SELECT 333 FROM t WHERE x = 4444",
	"INSERT INTO t VALUES (1, 'a'), (2, 'b') ON CONFLICT (id) DO UPDATE SET n = 3",
	"SELECT char(5) 'x', CAST(6 AS char(7))",
	"CREATE TABLE t (a varchar(10), b numeric(5,2), c float(20), d int DEFAULT 9)",
	"SELECT /* 5 /* 6 */ 7 */ 8 -- 9\n, 10",
	"SELECT substring('abc' FROM 2 FOR 1), generate_series(1, 10), round(3.5, 1)",
	"SET statement_timeout = 5000",
	"SELECT a1, b_2, c$3, \"d\"\"4\" FROM t5 WHERE e6 = 7",
	"WITH x AS (SELECT 1 AS n) SELECT n + 2 FROM x WHERE n > 3 GROUP BY n HAVING count(*) > 4",
	"SELECT * FROM t FETCH FIRST 5 ROWS ONLY",
	"SELECT 5 OPERATOR(pg_catalog.+) 6, 7!, ~8, @9",
	"PREPARE p(int) AS SELECT $1 + 10; EXECUTE p(11)",
	"DELETE FROM t WHERE id = 12 RETURNING id * 13",
	"SELECT ARRAY[1,2,3], '{4,5}'::int[], 6 = ANY(ARRAY[7])",
	"SELECT count(*) FILTER (WHERE a > 1) OVER (ROWS BETWEEN 2 PRECEDING AND 3 FOLLOWING) FROM t",
	"VALUES (1), (22), (333)",
	"SELECT 1 AS \"2\", 3 AS four",
	"LOCK TABLE t IN SHARE MODE NOWAIT; SELECT pg_sleep(1)",
}

// variant replaces every digit run of q by random digits of the same length
// (a leading digit stays non-zero when it was).
func variant(q string, r *rand.Rand) string {
	b := []byte(q)
	for i := 0; i < len(b); i++ {
		if b[i] >= '0' && b[i] <= '9' {
			if b[i] == '0' || i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
				b[i] = byte('0' + r.IntN(10))
			} else {
				b[i] = byte('1' + r.IntN(9))
			}
		}
	}
	return string(b)
}

// TestTemplatesExact checks that texts parsed through a template give
// exactly what parsing them gives.
func TestTemplatesExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	queries := append([]string(nil), templateQueries...)
	for _, c := range parseCases {
		queries = append(queries, c.query)
	}
	templated := 0
	for _, q := range queries {
		p := NewParser(0)
		for i := range 30 {
			v := q
			if i > 0 {
				v = variant(q, r)
			}
			want, werr := parseSQL(v)
			got, gerr := p.Parse(v)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("%q: parse error %v, through the parser %v", v, werr, gerr)
			}
			for i := range got {
				checkPatches(t, got[i])
				got[i].Base, got[i].Patches = nil, nil
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q (variant %d of %q):\n got %+v\nwant %+v", v, i, q, got, want)
			}
		}
		if p.templates.len() > 0 {
			if _, ok := p.templates.get(shapeOf(q, mustLits(t, q))); ok {
				templated++
			}
		}
	}
	t.Logf("%d of %d texts templated", templated, len(queries))
	if templated < 10 {
		t.Errorf("only %d of %d texts templated", templated, len(queries))
	}
}

// checkPatches checks that a templated statement's AST is its Base's with
// its Patches applied.
func checkPatches(t *testing.T, st parse.Statement) {
	t.Helper()
	if st.Base == nil {
		if st.Patches != nil {
			t.Fatalf("patches without a base")
		}
		return
	}
	ast := st.Base.AST
	for _, p := range st.Patches {
		ast = withPath(ast, p.Path, p.Value).(map[string]any)
		// Raw is where the value's digits are in RawAST, as the A_Const's
		// ival (the memo's key cuts exactly those bytes out).
		n := int64(p.Value.(map[string]any)["ival"].(map[string]any)["ival"].(float64))
		if p.Raw[0] <= 0 || p.Raw[1] > len(st.RawAST) || string(st.RawAST[p.Raw[0]:p.Raw[1]]) != strconv.FormatInt(n, 10) ||
			!bytes.HasSuffix(st.RawAST[:p.Raw[0]], []byte(`{"A_Const":{"ival":{"ival":`)) || st.RawAST[p.Raw[1]] != '}' {
			t.Fatalf("patch %v: digits at %v in %s", p.Value, p.Raw, st.RawAST)
		}
	}
	if !reflect.DeepEqual(ast, st.AST) {
		t.Fatalf("base with patches:\n got %v\nwant %v", ast, st.AST)
	}
}

func mustLits(t *testing.T, q string) []literal {
	lits, ok := scanLiterals(q)
	if !ok {
		t.Fatalf("scanLiterals(%q) failed", q)
	}
	return lits
}

func TestScanLiterals(t *testing.T) {
	cases := map[string]string{
		"SELECT 1, 22 FROM t WHERE a = 333":                "1 22 333",
		"SELECT '4', \"5\", $6, $$7$$, $x$8$x$, E'\\'9'":   "",
		"SELECT 1.5, .5, 5., 1e5, 0x1F, 1_0, 0, 01, a1, 2": "2",
		"SELECT 10 -- 11\n, /* 12 /* 13 */ 14 */ 15":       "10 15",
		"SELECT 2147483647, 2147483648":                    "2147483647",
	}
	for q, want := range cases {
		var got []string
		for _, l := range mustLits(t, q) {
			got = append(got, q[l.off:l.end])
		}
		if strings.Join(got, " ") != want {
			t.Errorf("scanLiterals(%q) = %q, want %q", q, got, want)
		}
	}
}

func BenchmarkParseTemplate(b *testing.B) {
	p := NewParser(0)
	r := rand.New(rand.NewPCG(1, 2))
	queries := make([]string, 1024)
	for i := range queries {
		queries[i] = variant("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;", r)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := p.Parse(queries[i%len(queries)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
