package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regate/regate/test/testenv"
)

// ---------------------------------------------------------------------------
// COPY

// TestPostgresCopy: COPY in both directions through psql and pgx, recorded
// with its row count; COPY … PROGRAM is blocked by the default library.
func TestPostgresCopy(t *testing.T) {
	t.Parallel()
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-copy", audience, "agents")
	psql := func(stdin string, sqls ...string) testenv.PsqlResult {
		return psqlStdin(t, gw.Listen, "agent-copy", tok, stdin, sqls)
	}

	t.Run("COPY TO STDOUT", func(t *testing.T) {
		r := psql("", "COPY customers (id, name) TO STDOUT")
		if r.Code != 0 || r.Out != "1\tAnn\n2\tBob\n3\tCy" {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		r = psql("", "COPY customers TO STDOUT WITH (FORMAT csv)")
		if lines := strings.Split(r.Out, "\n"); r.Code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[2], ",Cy") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
	})
	t.Run("COPY FROM STDIN", func(t *testing.T) {
		r := psql("10\tzed@example.com\tZed\n11\tyan@example.com\tYan\n\\.\n", "COPY customers FROM STDIN")
		if r.Code != 0 {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		if got := pg.Psql(t, "app", "SELECT name FROM customers WHERE id IN (10, 11) ORDER BY id"); got != "Zed\nYan" {
			t.Fatalf("inserted rows: %q", got)
		}
	})
	t.Run(`\copy FROM pstdin`, func(t *testing.T) {
		r := psql("12,xu@example.com,Xu\n", `\copy customers FROM pstdin WITH (FORMAT csv)`)
		if r.Code != 0 {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		if got := pg.Psql(t, "app", "SELECT name FROM customers WHERE id = 12"); got != "Xu" {
			t.Fatalf("inserted row: %q", got)
		}
	})
	t.Run("a failing COPY FROM STDIN inserts nothing", func(t *testing.T) {
		r := psql("13\tw@example.com\tW\nnot-a-number\tv@example.com\tV\n", "COPY customers FROM STDIN")
		if r.Code == 0 || !strings.Contains(r.Err, "22P02") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		if got := pg.Psql(t, "app", "SELECT count(*) FROM customers WHERE id = 13"); got != "0" {
			t.Fatalf("half a failed COPY is visible: %s", got)
		}
		if r := psql("", "SELECT count(*) FROM customers"); r.Code != 0 || r.Out != pg.Psql(t, "app", "SELECT count(*) FROM customers") {
			t.Fatalf("the session after a failed COPY: %q %q", r.Out, r.Err)
		}
	})
	t.Run("pgx CopyFrom and CopyTo", func(t *testing.T) {
		ctx, conn := connectPgxWithin(t, gw.Listen, tok, 20*time.Second)
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"customers"}, []string{"id", "email", "name"}, pgx.CopyFromRows([][]any{
			{20, "a20@example.com", "P20"}, {21, "a21@example.com", "P21"}, {22, "a22@example.com", "P22"},
		}))
		if err != nil || n != 3 {
			t.Fatalf("CopyFrom: %d %v", n, err)
		}
		if got := pg.Psql(t, "app", "SELECT string_agg(name, ',' ORDER BY id) FROM customers WHERE id >= 20"); got != "P20,P21,P22" {
			t.Fatalf("CopyFrom inserted %q", got)
		}
		var buf bytes.Buffer
		tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY customers (id, name) TO STDOUT")
		total, _ := strconv.ParseInt(pg.Psql(t, "app", "SELECT count(*) FROM customers"), 10, 64)
		if err != nil || tag.RowsAffected() != total || !strings.Contains(buf.String(), "22\tP22\n") {
			t.Fatalf("CopyTo: %v %v %q", tag, err, buf.String())
		}
	})
	t.Run("outcomes carry the row counts", func(t *testing.T) {
		norm := func(q string) string { return strings.ToLower(strings.Join(strings.Fields(q), " ")) }
		for _, c := range []struct {
			name  string
			match func(q string) bool
			want  int64
		}{
			{"COPY TO STDOUT", func(q string) bool { return q == "COPY customers (id, name) TO STDOUT" }, 3},
			{"COPY FROM STDIN", func(q string) bool { return q == "COPY customers FROM STDIN" }, 2},
			{`\copy`, func(q string) bool { // psql rewrites \copy's text
				return strings.HasPrefix(norm(q), "copy customers from stdin") && strings.Contains(norm(q), "csv")
			}, 1},
			{"pgx CopyFrom", func(q string) bool { return strings.HasSuffix(norm(q), "from stdin binary;") }, 3},
		} {
			cmd, out := findCommand(t, gw, c.match)
			if cmd == nil {
				t.Errorf("%s: no command recorded", c.name)
				continue
			}
			if cmd.Decision == nil || !cmd.Decision.Allow || len(cmd.Input.Postgres.Statements) != 1 ||
				cmd.Input.Postgres.Statements[0].Command != "COPY" {
				t.Errorf("%s: decision %+v statements %+v", c.name, cmd.Decision, cmd.Input.Postgres.Statements)
			}
			tag := fmt.Sprintf("COPY %d", c.want)
			if out == nil || out.Outcome.Status != "ok" || out.Outcome.Rows != c.want ||
				len(out.Outcome.Tags) != 1 || out.Outcome.Tags[0] != tag {
				t.Errorf("%s (%q): outcome %+v, want ok %s rows %d", c.name, cmd.Input.Postgres.Query, outcomeOf(out), tag, c.want)
			}
		}
	})
	t.Run("COPY PROGRAM is blocked", func(t *testing.T) {
		before := pg.Psql(t, "app", "SELECT count(*) FROM customers")
		for _, q := range []string{"COPY customers TO PROGRAM 'cat'", "COPY customers FROM PROGRAM 'echo 99'"} {
			r := psql("", q)
			if r.Code == 0 || !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "regate: blocked by policy") ||
				!strings.Contains(r.Err, "PROGRAM") {
				t.Errorf("%s: code %d out %q err %q", q, r.Code, r.Out, r.Err)
			}
		}
		if got := pg.Psql(t, "app", "SELECT count(*) FROM customers"); got != before {
			t.Fatalf("table changed: %s rows", got)
		}
	})
	t.Run("COPY to a server file reaches the policy, then Postgres refuses", func(t *testing.T) {
		file := filepath.Join(os.TempDir(), "regate-copy-"+strconv.Itoa(os.Getpid()))
		// Under the default library's column masks, a COPY to a file of a
		// table (any of whose columns may be masked) or of a masked column
		// is refused by regate: no mask follows the values there.
		for _, q := range []string{fmt.Sprintf("COPY customers TO '%s'", file),
			fmt.Sprintf("COPY (SELECT name, email FROM customers) TO '%s'", file)} {
			r := psql("", q)
			if r.Code == 0 || !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "regate: blocked") ||
				!strings.Contains(r.Err, "into a table, a view or a file, where no mask follows it") {
				t.Errorf("%s: code %d out %q err %q", q, r.Code, r.Out, r.Err)
			}
		}
		q := fmt.Sprintf("COPY (SELECT id, name FROM customers) TO '%s'", file)
		r := psql("", q)
		if r.Code == 0 || !strings.Contains(r.Err, "42501") || strings.Contains(r.Err, "regate: blocked") ||
			!strings.Contains(r.Err, "pg_write_server_files") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		if _, err := os.Stat(file); err == nil {
			os.Remove(file)
			t.Fatal("the server file was written")
		}
		cmd, out := findCommand(t, gw, func(got string) bool { return got == q })
		if cmd == nil || out == nil {
			t.Fatal("not recorded")
		}
		ast, _ := json.Marshal(cmd.Input.Postgres.Statements)
		if !strings.Contains(string(ast), `"filename":"`+file+`"`) || !strings.Contains(string(ast), `"CopyStmt"`) {
			t.Fatalf("the policy input does not show the server file: %s", ast)
		}
		if out.Outcome.Status != "error" || out.Outcome.Code != "42501" {
			t.Fatalf("outcome %+v", out.Outcome)
		}
	})
}

// psqlStdin is testenv.PsqlVia with data on psql's standard input.
func psqlStdin(t *testing.T, addr, user, token, stdin string, sqls []string) testenv.PsqlResult {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-X", "-A", "-t", "-q", "-h", host, "-p", port, "-U", user, "-d", "app", "-v", "VERBOSITY=verbose"}
	for _, s := range sqls {
		args = append(args, "-c", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+token, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("psql: %v", err)
		}
		code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("psql %q did not finish within 20s", sqls)
	}
	return testenv.PsqlResult{Out: strings.TrimSpace(o.String()), Err: e.String(), Code: code}
}
