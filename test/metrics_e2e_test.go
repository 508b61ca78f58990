package test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/regate/regate/policies"
	"github.com/regate/regate/test/testenv"
)

// TestMemoizedDecisionsAreRecorded runs one prepared SELECT 30 times with
// other parameters through pgx (extended protocol) under the default
// library: after its 8th execution the decision is served from the memo
// (/metrics counts the hits), and still every execution is recorded as a
// command of its own, with its own decision ID and its own parameter. The
// recorder's metrics report the events appended and no failed copy.
func TestMemoizedDecisionsAreRecorded(t *testing.T) {
	pg := testenv.StartPostgres(t)
	iss := testenv.StartIssuer(t)
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience,
		Global: "admin: {listen: " + admin + "}"})
	ctx, conn := connectPgx(t, gw.Listen, iss.Token(t, "agent-memo", audience, "agents"))
	const runs = 30
	for i := range runs {
		var got int
		if err := conn.QueryRow(ctx, "SELECT $1::int + 1", pgx.QueryExecModeCacheStatement, i).Scan(&got); err != nil || got != i+1 {
			t.Fatalf("execution %d: %d, %v", i, got, err)
		}
	}
	metrics := httpGet(t, "http://"+admin+"/metrics")
	counter := func(re string) int {
		m := regexp.MustCompile(re + ` (\d+)`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("/metrics lacks %s:\n%s", re, metrics)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if hits := counter(`regate_policy_memo_total\{result="hit"\}`); hits < runs-10 {
		t.Errorf("%d memo hits for %d executions, want at least %d", hits, runs, runs-10)
	}
	if learned := counter(`regate_policy_memo_total\{result="learned"\}`); learned < 1 {
		t.Errorf("no decision was memoized")
	}
	if counter(`regate_policy_memo_total\{result="mismatch"\}`) != 0 || counter(`regate_recorder_copy_failures_total`) != 0 {
		t.Errorf("memo mismatches or failed copies:\n%s", metrics)
	}
	if n := counter(`regate_recorder_events_appended_total`); n < 2*runs {
		t.Errorf("%d events appended, want at least %d", n, 2*runs)
	}
	counter(`regate_recorder_backlog_events`)

	const ofQuery = `type = 'command' AND json_extract(body, '$.input.postgres.query') = 'SELECT $1::int + 1'`
	countWhere(t, gw, runs, ofQuery) // the copy into the database runs a little behind
	params := map[string]bool{}
	ids := map[string]bool{}
	rows, err := openStore(t, gw).Query(`SELECT json_extract(body, '$.input.postgres.params[0]'), json_extract(body, '$.decision.decision_id')
		FROM events WHERE ` + ofQuery)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p, id string
		if err := rows.Scan(&p, &id); err != nil {
			t.Fatal(err)
		}
		params[p], ids[id] = true, true
	}
	rows.Close()
	if len(params) != runs || len(ids) != runs {
		t.Errorf("%d distinct parameters and %d distinct decision IDs recorded, want %d each", len(params), len(ids), runs)
	}
}

// TestMemoizedSimpleTexts runs simple-protocol texts that differ only in an
// integer literal (pgbench -S's in simple mode) through pgx. Under the
// default library their decisions are served from the memo (/metrics counts
// the hits) and each text is still recorded as itself. Under the default
// library with a rule that reads the literal, nothing is memoized and the
// text with the blocked value is refused after 24 allowed ones.
func TestMemoizedSimpleTexts(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE accounts (aid int PRIMARY KEY, abalance int);
		INSERT INTO accounts SELECT g, g * 10 FROM generate_series(100, 999) g;
		ALTER TABLE accounts OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	library := t.TempDir()
	for _, name := range []string{"regate.rego", "postgres.rego", "regate/postgres/data.json"} {
		b, err := fs.ReadFile(policies.Default(), name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(library, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, library, name, string(b))
	}
	writeFile(t, library, "frozen.rego", `package regate

deny contains "account 666 is frozen" if {
	input.postgres.statements[0].ast.SelectStmt.whereClause.A_Expr.rexpr.A_Const.ival.ival == 666
}
`)
	for _, tc := range []struct {
		name, bundle string
		hits         bool
	}{{"default library", "", true}, {"a rule reading the literal", library, false}} {
		t.Run(tc.name, func(t *testing.T) {
			admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: tc.bundle,
				Global: "admin: {listen: " + admin + "}"})
			ctx, conn := connectPgx(t, gw.Listen, iss.Token(t, "agent-simple", audience, "agents"))
			aids := []int{}
			for i := range 24 {
				aids = append(aids, 100+i*37)
			}
			aids = append(aids, 666, 101)
			for _, aid := range aids {
				var got int
				err := conn.QueryRow(ctx, fmt.Sprintf("SELECT abalance FROM accounts WHERE aid = %d", aid), pgx.QueryExecModeSimpleProtocol).Scan(&got)
				if blocked := aid == 666 && !tc.hits; blocked {
					if err == nil || !strings.Contains(err.Error(), "account 666 is frozen") {
						t.Fatalf("aid %d: %d, %v; want blocked", aid, got, err)
					}
					continue
				}
				if err != nil || got != aid*10 {
					t.Fatalf("aid %d: %d, %v", aid, got, err)
				}
			}
			metrics := httpGet(t, "http://"+admin+"/metrics")
			m := regexp.MustCompile(`regate_policy_memo_total\{result="hit"\} (\d+)`).FindStringSubmatch(metrics)
			if m == nil {
				t.Fatalf("no memo hits in /metrics:\n%s", metrics)
			}
			// The first text makes the parse template; the others share one
			// key, learned at its 8th execution.
			want := 0
			if tc.hits {
				want = len(aids) - 1 - 8
			}
			if hits, _ := strconv.Atoi(m[1]); hits != want {
				t.Errorf("%d memo hits for %d texts, want %d", hits, len(aids), want)
			}
			// Every text is recorded as itself, with its decision.
			if n := countWhere(t, gw, len(aids), `type = 'command' AND json_extract(body, '$.input.postgres.query') LIKE 'SELECT abalance FROM accounts WHERE aid = %'`); n != len(aids) {
				t.Errorf("%d commands recorded, want %d", n, len(aids))
			}
			allowed := "1"
			if !tc.hits {
				allowed = "0"
			}
			if n := countWhere(t, gw, 1, `type = 'command' AND json_extract(body, '$.input.postgres.query') = 'SELECT abalance FROM accounts WHERE aid = 666' AND json_extract(body, '$.decision.allow') = `+allowed); n != 1 {
				t.Errorf("the text with 666 is not recorded with allow = %s", allowed)
			}
		})
	}
}
