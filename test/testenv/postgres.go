package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PGBin is where the machine's PostgreSQL binaries live.
var PGBin = envOr("REGATE_PG_BIN", newestPGBin())

func newestPGBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestV := "/usr/lib/postgresql/15/bin", 0
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err == nil && v > bestV {
			best, bestV = d, v
		}
	}
	return best
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Postgres is a running throwaway server. Superuser "postgres" may connect
// over the unix socket in Dir without a password; TCP needs a password.
type Postgres struct {
	Dir  string
	Port int
	// AppUser/AppPassword is a non-superuser role owning database "app".
	AppUser, AppPassword string
}

// Addr is the server's TCP address.
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)) }

// StartPostgres initdb's a cluster in a temp dir and starts it on a free
// loopback port; it is stopped when the test ends. As root it runs the server
// as the "postgres" user, since postgres refuses to run as root.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	if _, err := os.Stat(filepath.Join(PGBin, "initdb")); err != nil {
		t.Fatalf("PostgreSQL binaries not found in %s (set REGATE_PG_BIN): %v", PGBin, err)
	}
	base, err := os.MkdirTemp("", "regate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	p := &Postgres{Dir: filepath.Join(base, "data"), Port: FreePort(t), AppUser: "app", AppPassword: "app-secret-" + strconv.Itoa(os.Getpid())}
	pwfile := filepath.Join(base, "pw")
	if err := os.WriteFile(pwfile, []byte("postgres-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	asPG := os.Geteuid() == 0
	if asPG {
		chown(t, base)
		chown(t, pwfile)
	}
	run(t, asPG, filepath.Join(PGBin, "initdb"), "-D", p.Dir, "-U", "postgres", "--auth-local=trust",
		"--auth-host=scram-sha-256", "--pwfile="+pwfile, "--no-sync", "-E", "UTF8", "--locale=C")
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c max_connections=200", p.Port, p.Dir)
	run(t, asPG, filepath.Join(PGBin, "pg_ctl"), "-D", p.Dir, "-w", "-l", filepath.Join(base, "log"), "-o", opts, "start")
	t.Cleanup(func() {
		cmd := command(asPG, filepath.Join(PGBin, "pg_ctl"), "-D", p.Dir, "-m", "immediate", "stop")
		_ = cmd.Run()
	})
	p.Psql(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", p.AppUser, p.AppPassword))
	p.Psql(t, "postgres", "CREATE DATABASE app OWNER "+p.AppUser)
	return p
}

// Psql runs SQL as the superuser over the unix socket (bypassing regate) and
// returns psql's unaligned, tuples-only output.
func (p *Postgres) Psql(t testing.TB, db, sql string) string {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", p.Dir, "-p", strconv.Itoa(p.Port), "-U", "postgres", "-d", db, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql (direct) %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

func chown(t testing.TB, path string) {
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs a 'postgres' user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func command(asPG bool, name string, args ...string) *exec.Cmd {
	if asPG {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func run(t testing.TB, asPG bool, name string, args ...string) {
	t.Helper()
	cmd := command(asPG, name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(name), err, out)
	}
}

// FreePort returns a currently free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until addr accepts TCP connections.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within %s", addr, timeout)
}
