package test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestPgbenchModes runs pgbench's TPC-B-like script (BEGIN, UPDATE, SELECT,
// UPDATE, UPDATE, INSERT, END per transaction) through regate in each query
// mode, simple, extended and prepared (named statements), and the same run
// directly, each on freshly initialized tables with the same random seed and
// one client: no transaction may fail, and the tables must end up identical.
func TestPgbenchModes(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Fatal("pgbench not found (apt-get install postgresql-client)")
	}
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "bench-agent", audience, "agents")
	host, port, _ := strings.Cut(gw.Listen, ":")
	pgbench := func(direct bool, args ...string) string {
		t.Helper()
		h, p, pw := host, port, tok
		if direct {
			h, p, pw = "127.0.0.1", strconv.Itoa(pg.Port), pg.AppPassword
		}
		cmd := exec.Command("pgbench", append([]string{"-h", h, "-p", p, "-U", pg.AppUser}, append(args, "app")...)...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pw, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v (direct %v): %v\n%s", args, direct, err, out)
		}
		return string(out)
	}
	// state is the tables' contents (history without its timestamps).
	state := func() string {
		t.Helper()
		return pg.Psql(t, "app", `SELECT md5(string_agg(x, ';' ORDER BY x)) FROM (
			SELECT 'a' || aid || ',' || bid || ',' || abalance AS x FROM pgbench_accounts
			UNION ALL SELECT 't' || tid || ',' || bid || ',' || tbalance FROM pgbench_tellers
			UNION ALL SELECT 'b' || bid || ',' || bbalance FROM pgbench_branches
			UNION ALL SELECT 'h' || tid || ',' || bid || ',' || aid || ',' || delta FROM pgbench_history) s`)
	}
	const txs = 60
	run := func(direct bool, mode string) string {
		t.Helper()
		pgbench(true, "-i", "-q", "-s", "1")
		out := pgbench(direct, "-n", "-M", mode, "-c", "1", "-j", "1", "-t", strconv.Itoa(txs), "--random-seed=7")
		want := "number of transactions actually processed: " + strconv.Itoa(txs) + "/" + strconv.Itoa(txs)
		if !strings.Contains(out, want) || !strings.Contains(out, "number of failed transactions: 0 ") {
			t.Fatalf("pgbench -M %s (direct %v) did not complete every transaction:\n%s", mode, direct, out)
		}
		return state()
	}
	want := run(true, "simple")
	if len(want) != 32 {
		t.Fatalf("table state %q is not an md5", want)
	}
	if again := run(true, "extended"); again != want {
		t.Fatalf("two direct runs with the same seed differ (%s, %s): the comparison would prove nothing", want, again)
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		if got := run(false, mode); got != want {
			t.Errorf("pgbench -M %s through regate left other table contents than the direct run (%s, want %s)", mode, got, want)
		}
	}
	// Every statement was decided and recorded: 7 per transaction, per mode.
	if n := countWhere(t, gw, 3*7*txs, `type = 'command' AND session_id IN (
		SELECT session_id FROM events WHERE type = 'session_start' AND subject = 'bench-agent')`); n < 3*7*txs {
		t.Errorf("%d commands recorded for pgbench, want at least %d", n, 3*7*txs)
	}
}
