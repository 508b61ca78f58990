package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// PsqlResult is what one psql run through regate printed.
type PsqlResult struct {
	Out  string
	Err  string
	Code int
}

// PsqlVia runs psql against addr ("127.0.0.1:port") with token as the
// password; each -c is one Query message. Extra environment may be given as
// "K=V" in env.
func PsqlVia(t testing.TB, addr, user, db, token string, sqls []string, env ...string) PsqlResult {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"-X", "-A", "-t", "-h", host, "-p", port, "-U", user, "-d", db, "-v", "VERBOSITY=verbose"}
	for _, s := range sqls {
		args = append(args, "-c", s)
	}
	cmd := exec.Command("psql", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+token, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	cmd.Env = append(cmd.Env, env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("psql: %v", err)
		}
		code = ee.ExitCode()
	}
	return PsqlResult{Out: strings.TrimSpace(o.String()), Err: e.String(), Code: code}
}
