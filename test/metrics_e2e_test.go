package test

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

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
