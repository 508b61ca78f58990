package test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/regate/regate/test/testenv"
)

// ---------------------------------------------------------------------------
// Cancel

// TestPostgresCancel: CancelRequests from psql and pgx reach the running
// statement through regate; a wrong key cancels nothing.
func TestPostgresCancel(t *testing.T) {
	t.Parallel()
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-cancel", audience, "agents")
	host, port, _ := net.SplitHostPort(gw.Listen)

	t.Run("psql SIGINT", func(t *testing.T) {
		cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-h", host, "-p", port,
			"-U", "agent-cancel", "-d", "app", "-c", "SELECT pg_sleep(30)")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+tok, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
			}
		}()
		waitActive(t, pg, "SELECT pg_sleep(30)")
		start := time.Now()
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("psql succeeded: %s", stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("psql did not return within 10s of SIGINT")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("cancel took %s", d)
		}
		if e := stderr.String(); !strings.Contains(e, "57014") || !strings.Contains(e, "canceling statement due to user request") {
			t.Fatalf("psql: %s", e)
		}
		// regate logs the cancel once it is recorded, which may be just
		// after psql has its answer.
		waitFor(t, func() bool { return strings.Contains(gw.Logs(), "forwarded a cancel request") })
		// The outcome is recorded as the target's error.
		_, out := findCommand(t, gw, func(q string) bool { return q == "SELECT pg_sleep(30)" })
		if out == nil || out.Outcome.Status != "error" || out.Outcome.Code != "57014" {
			t.Fatalf("outcome of the cancelled statement: %+v", out)
		}
	})

	t.Run("pgx context timeout closes the connection", func(t *testing.T) {
		ctx, conn := connectPgxWithin(t, gw.Listen, tok, 20*time.Second)
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer qcancel()
		start := time.Now()
		_, err := conn.Exec(qctx, "SELECT pg_sleep(30)")
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("Exec returned %v after %s", err, time.Since(start))
		}
		conn2, err := pgx.Connect(ctx, connString(gw.Listen, tok))
		if err != nil {
			t.Fatalf("a new connection after the timeout: %v", err)
		}
		defer conn2.Close(ctx)
		var n int
		if err := conn2.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
			t.Fatalf("new connection: %d %v", n, err)
		}
	})

	t.Run("pgx cancel request keeps the connection", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		cancelViaRequest(cfg)
		assertPgxCancel(t, cfg)
	})

	t.Run("the client sees the upstream backend pid", func(t *testing.T) {
		ctx, conn := connectPgxWithin(t, gw.Listen, tok, 20*time.Second)
		var pid uint32
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if pid != conn.PgConn().PID() || pid == 0 {
			t.Fatalf("pg_backend_pid() = %d, BackendKeyData pid = %d", pid, conn.PgConn().PID())
		}
		if got := pg.Psql(t, "postgres", fmt.Sprintf("SELECT usename FROM pg_stat_activity WHERE pid = %d", pid)); got != pg.AppUser {
			t.Fatalf("pid %d belongs to %q on the upstream", pid, got)
		}
	})

	t.Run("a wrong key cancels nothing", func(t *testing.T) {
		ctx, conn := connectPgx(t, gw.Listen, tok)
		pid, key := conn.PgConn().PID(), conn.PgConn().SecretKey()
		if len(key) != 4 {
			t.Fatalf("secret key of %d bytes", len(key))
		}
		res := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(3)")
			res <- err
		}()
		waitActive(t, pg, "SELECT pg_sleep(3)")
		wrong := binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(key)^0xdeadbeef)
		sendCancel(t, gw.Listen, pid, wrong)                   // wrong key
		sendCancel(t, gw.Listen, pid+1, key)                   // right key, wrong pid
		sendCancel(t, gw.Listen, pid, nil)                     // no key at all
		sendCancel(t, gw.Listen, pid, append(key, 0, 0, 0, 0)) // key too long
		sendCancel(t, pg.Addr(), pid, key)                     // regate's key is not the upstream's
		select {
		case err := <-res:
			if err != nil {
				t.Fatalf("the statement was disturbed: %v", err)
			}
			if d := time.Since(start); d < 2500*time.Millisecond {
				t.Fatalf("pg_sleep(3) returned after %s", d)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("pg_sleep(3) did not finish")
		}
		if !strings.Contains(gw.Logs(), "dropped a cancel request with an unknown key") {
			t.Fatal("regate did not log the dropped cancel")
		}
		if dropped := countWhere(t, gw, 2, `type = 'cancel' AND body LIKE '%wrong key: dropped%'`); dropped < 2 {
			t.Fatalf("%d dropped cancels recorded, want >= 2", dropped)
		}

		// A late cancel with the right key of a session that has ended (pgx
		// sends one when it closes a connection whose query it gave up on)
		// is not a wrong key: recorded in that session, logged at INFO.
		ended := strings.Count(gw.Logs(), "session ended")
		conn.Close(ctx)
		waitFor(t, func() bool { return strings.Count(gw.Logs(), "session ended") > ended })
		sendCancel(t, gw.Listen, pid, key)
		waitFor(t, func() bool {
			return strings.Contains(gw.Logs(), "dropped a cancel request for a session that has ended")
		})
		if late := countWhere(t, gw, 1, `type = 'cancel' AND body LIKE '%session that has ended%'`); late != 1 {
			t.Fatalf("%d late cancels recorded, want 1", late)
		}
	})
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// cancelViaRequest makes pgx send a CancelRequest when a context ends
// (instead of closing the connection).
func cancelViaRequest(cfg *pgx.ConnConfig) {
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 5 * time.Second}
	}
}

// assertPgxCancel runs pg_sleep(30) with a 500 ms timeout and expects the
// server's 57014 quickly, with the connection still usable.
func assertPgxCancel(t *testing.T, cfg *pgx.ConnConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer qcancel()
	start := time.Now()
	_, err = conn.Exec(qctx, "SELECT pg_sleep(30)")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("want the server's 57014, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %s", d)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
		t.Fatalf("connection after the cancel: %d %v", n, err)
	}
}

// sendCancel sends a raw CancelRequest to addr and waits for the server to
// close the connection.
func sendCancel(t *testing.T, addr string, pid uint32, key []byte) {
	t.Helper()
	c := dialRaw(t, addr)
	msg := binary.BigEndian.AppendUint32(nil, uint32(12+len(key)))
	msg = binary.BigEndian.AppendUint32(msg, 80877102)
	msg = binary.BigEndian.AppendUint32(msg, pid)
	msg = append(msg, key...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := waitClosed(c, 5*time.Second); err != nil {
		t.Fatalf("cancel request to %s: %v", addr, err)
	}
}

// waitActive waits until the upstream runs query.
func waitActive(t *testing.T, pg *testenv.Postgres, query string) {
	t.Helper()
	sql := fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '%s'", query)
	deadline := time.Now().Add(10 * time.Second)
	for pg.Psql(t, "postgres", sql) == "0" {
		if time.Now().After(deadline) {
			t.Fatalf("%q is not running upstream", query)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
