package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/test/testenv"
)

// ---------------------------------------------------------------------------
// TLS

// TestPostgresListenerTLS: a target with `tls:` speaks TLS to psql (require
// and verify-full) and pgx; a target without it answers SSLRequest with 'N'.
func TestPostgresListenerTLS(t *testing.T) {
	t.Parallel()
	pg, iss, plain := setup(t)
	certs := testenv.NewTLS(t, "127.0.0.1", "localhost")
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience,
		Extra: fmt.Sprintf("    tls: {cert: %q, key: %q}\n", certs.Cert, certs.Key)})
	tok := iss.Token(t, "agent-tls", audience, "agents")
	_, port, _ := net.SplitHostPort(gw.Listen)

	t.Run("psql sslmode=require", func(t *testing.T) {
		r := testenv.PsqlVia(t, gw.Listen, "agent-tls", "app", tok,
			[]string{`\conninfo`, "SELECT count(*) FROM customers"}, "PGSSLMODE=require")
		if r.Code != 0 || !strings.Contains(r.Out, "SSL connection (protocol: TLS") || !strings.HasSuffix(r.Out, "\n3") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
	})
	t.Run("psql sslmode=verify-full against the CA, host=localhost", func(t *testing.T) {
		r := testenv.PsqlVia(t, "localhost:"+port, "agent-tls", "app", tok,
			[]string{`\conninfo`, "SELECT 40 + 2"}, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+certs.CA)
		if r.Code != 0 || !strings.Contains(r.Out, "SSL connection") || !strings.HasSuffix(r.Out, "\n42") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
	})
	t.Run("psql sslmode=verify-full against another CA fails", func(t *testing.T) {
		other := testenv.NewTLS(t, "localhost")
		r := testenv.PsqlVia(t, "localhost:"+port, "agent-tls", "app", tok,
			[]string{"SELECT 1"}, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+other.CA)
		if r.Code == 0 || !strings.Contains(r.Err, "certificate verify failed") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
	})
	t.Run("pgx trusting the CA", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cfg, err := pgx.ParseConfig(connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = certs.ClientConfig("127.0.0.1")
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("pgx's connection is a %T, not TLS", conn.PgConn().Conn())
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM customers WHERE id > $1", 1).Scan(&n); err != nil || n != 2 {
			t.Fatalf("count = %d, %v", n, err)
		}
	})
	t.Run("pgx cancel over TLS", func(t *testing.T) {
		// pgx sends its CancelRequest over TLS when the session is TLS.
		cfg, err := pgx.ParseConfig(connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = certs.ClientConfig("127.0.0.1")
		cancelViaRequest(cfg)
		assertPgxCancel(t, cfg)
	})
	t.Run("without tls, sslmode=require fails cleanly", func(t *testing.T) {
		r := testenv.PsqlVia(t, plain.Listen, "agent-tls", "app", tok, []string{"SELECT 1"}, "PGSSLMODE=require")
		if r.Code == 0 || !strings.Contains(r.Err, "server does not support SSL") {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		r = testenv.PsqlVia(t, plain.Listen, "agent-tls", "app", tok, []string{`\conninfo`, "SELECT 7"}, "PGSSLMODE=prefer")
		if r.Code != 0 || strings.Contains(r.Out, "SSL connection") || !strings.HasSuffix(r.Out, "\n7") {
			t.Fatalf("sslmode=prefer: code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		// On the wire: 'N', then the same connection carries a normal startup.
		c := dialRaw(t, plain.Listen)
		if _, err := c.Write(startupCode(80877103)); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
			t.Fatalf("SSLRequest answered %q, %v", b[0], err)
		}
		w := loginOn(t, c, tok)
		w.simpleQuery(t, "SELECT 1")
	})
}

// TestPostgresProtocolNegotiation: a client asking for protocol 3.2 (or
// sending "_pq_." options) is answered NegotiateProtocolVersion and carries
// on with 3.0, as Postgres does; cancel keeps working with the 3.0 key.
func TestPostgresProtocolNegotiation(t *testing.T) {
	t.Parallel()
	_, iss, gw := setup(t)
	tok := iss.Token(t, "agent-proto", audience, "agents")

	t.Run("raw 3.2 startup with a _pq_ option", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		w := &wire{c: c, fe: pgproto3.NewFrontend(c, c)}
		w.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32,
			Parameters: map[string]string{"user": "raw", "database": "app", "_pq_.regate_test": "on"}})
		m, ok := w.receive(t).(*pgproto3.NegotiateProtocolVersion)
		if !ok || m.NewestMinorProtocol != 0 || len(m.UnrecognizedOptions) != 1 || m.UnrecognizedOptions[0] != "_pq_.regate_test" {
			t.Fatalf("want NegotiateProtocolVersion 3.0 naming _pq_.regate_test, got %#v", m)
		}
		if m := w.receive(t); fmt.Sprintf("%T", m) != "*pgproto3.AuthenticationCleartextPassword" {
			t.Fatalf("want AuthenticationCleartextPassword, got %#v", m)
		}
		w.send(t, &pgproto3.PasswordMessage{Password: tok})
		for {
			m := w.receive(t)
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("login: %s %s", e.Code, e.Message)
			}
			if k, ok := m.(*pgproto3.BackendKeyData); ok && len(k.SecretKey) != 4 {
				t.Fatalf("a 3.0 session got a %d-byte cancel key", len(k.SecretKey))
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		w.simpleQuery(t, "SELECT 1")
	})
	t.Run("pgx max_protocol_version=latest", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(connString(gw.Listen, tok) + " max_protocol_version=latest")
		if err != nil {
			t.Fatal(err)
		}
		cancelViaRequest(cfg)
		assertPgxCancel(t, cfg)
	})
}

// TestPostgresClientGoneDuringLogin: a client that resets its connection
// right after sending its token must not leave an upstream connection, an
// open session or a cancel key behind.
func TestPostgresClientGoneDuringLogin(t *testing.T) {
	t.Parallel()
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-gone", audience)
	for i := 0; i < 5; i++ {
		c := dialRaw(t, gw.Listen)
		w := startup(t, c)
		w.send(t, &pgproto3.PasswordMessage{Password: tok})
		_ = c.(*net.TCPConn).SetLinger(0) // close with a reset
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := pg.Psql(t, "postgres", fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'", pg.AppUser))
		if n == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s upstream connections are still open 5 s after their clients left", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, errOut, code := testenv.Run(t, "sessions", "--json", "--store", gw.Store)
	if code != 0 {
		t.Fatalf("sessions: %d %s", code, errOut)
	}
	var sessions []struct {
		ID      string     `json:"id"`
		Subject string     `json:"subject"`
		End     *time.Time `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &sessions); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.Subject == "agent-gone" && s.End == nil {
			t.Errorf("session %s never ended", s.ID)
		}
	}
}

// TestServeRefusesPlainNonLoopbackListener: `listen: 0.0.0.0:…` without
// `tls:` stops `regate serve` at start, naming targets[0].tls; with `tls:` the
// same configuration starts.
func TestServeRefusesPlainNonLoopbackListener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := testenv.FreePort(t)
	base := fmt.Sprintf(`identity:
  oidc: {issuer: "http://127.0.0.1:1/", audience: regate}
store: {url: "sqlite://%s"}
targets:
  - name: app-db
    protocol: postgres
    listen: 0.0.0.0:%d
    upstream: 127.0.0.1:1
    credentials: {user: app}
`, filepath.Join(dir, "regate.db"), port)
	cfgPath := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(cfgPath, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Binary(t), "serve", "--config", cfgPath)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("regate serve did not exit within 15s:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("regate serve exited with %v, want a non-zero exit:\n%s", err, out)
	}
	if !strings.Contains(string(out), "targets[0].tls") {
		t.Fatalf("the error does not name targets[0].tls:\n%s", out)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatal("something listens on the refused port")
	}

	// Control: the same file with tls: starts and listens on all addresses.
	certs := testenv.NewTLS(t, "127.0.0.1")
	withTLS := filepath.Join(dir, "tls.yaml")
	body := base + fmt.Sprintf("    tls: {cert: %q, key: %q}\n", certs.Cert, certs.Key)
	if err := os.WriteFile(withTLS, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(testenv.Binary(t), "serve", "--config", withTLS)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("regate serve with tls: exited (%v):\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("regate serve with tls: is not listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPostgresUpstreamTLS: regate reaches a PostgreSQL that refuses every
// non-TLS TCP connection, verifying it against the CA and server_name.
func TestPostgresUpstreamTLS(t *testing.T) {
	t.Parallel()
	pg, iss := backends(t)
	// The certificate names only db.internal: verification passes only when
	// regate uses server_name, not the upstream's IP address.
	up := testenv.NewTLS(t, "db.internal")
	pg.EnableTLS(t, up, true)

	// Directly, a plain TCP login is refused by pg_hba.
	cmd := exec.Command("psql", "-X", "-A", "-t", "-c", "SELECT 1",
		fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=app sslmode=disable connect_timeout=5", pg.Port, pg.AppUser))
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.AppPassword)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no encryption") {
		t.Fatalf("a plain TCP login to the upstream was not refused: %v\n%s", err, out)
	}

	// regate reaches the database through a tap that records how each
	// connection begins.
	tap := startTap(t, pg.Addr())
	viaTap := *pg
	viaTap.Port = tap.port
	gw := testenv.StartGateway(t, &viaTap, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience,
		Extra: fmt.Sprintf("    upstream_tls: {ca: %q, server_name: db.internal}\n", up.CA)})
	tok := iss.Token(t, "agent-up", audience, "agents")
	r := testenv.PsqlVia(t, gw.Listen, "agent-up", "app", tok,
		[]string{"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", "SELECT count(*) FROM customers"})
	if r.Code != 0 || r.Out != "t\n3" {
		t.Fatalf("through upstream TLS: code %d out %q err %q", r.Code, r.Out, r.Err)
	}

	t.Run("cancel reaches a TLS-only upstream", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		cancelViaRequest(cfg)
		before := len(tap.heads())
		assertPgxCancel(t, cfg)
		// The forwarded cancel carries the upstream's real key: it must not
		// cross the network in clear text when the target is reached over TLS.
		heads := tap.heads()
		if len(heads) <= before {
			t.Fatal("the tap saw no connection")
		}
		for _, h := range heads {
			if code := binary.BigEndian.Uint32(h[4:]); code != 80877103 {
				t.Errorf("an upstream connection began with request code %d, not SSLRequest (%x)", code, h)
			}
		}
	})
	t.Run("an untrusted upstream certificate is refused", func(t *testing.T) {
		other := testenv.NewTLS(t, "db.internal")
		for name, extra := range map[string]string{
			"other CA":       fmt.Sprintf("    upstream_tls: {ca: %q, server_name: db.internal}\n", other.CA),
			"name mismatch":  fmt.Sprintf("    upstream_tls: {ca: %q, server_name: db.example}\n", up.CA),
			"no server_name": fmt.Sprintf("    upstream_tls: {ca: %q}\n", up.CA),
		} {
			bad := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Extra: extra})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			conn, err := pgconn.Connect(ctx, connString(bad.Listen, tok))
			cancel()
			if err == nil {
				conn.Close(context.Background())
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "08001" || pe.Severity != "FATAL" ||
				!strings.Contains(pe.Message, "cannot connect to target") || !strings.Contains(pe.Message, "certificate") {
				t.Errorf("%s: got %v, want FATAL 08001 naming the certificate", name, err)
			}
		}
	})
}

// tap relays TCP connections to an address and keeps the first 8 bytes
// each client sent.
type tap struct {
	port int
	mu   sync.Mutex
	seen [][]byte
}

func startTap(t *testing.T, target string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tp := &tap{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go tp.relay(c, target)
		}
	}()
	return tp
}

func (tp *tap) relay(c net.Conn, target string) {
	defer c.Close()
	head := make([]byte, 8)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, head); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	tp.mu.Lock()
	tp.seen = append(tp.seen, head)
	tp.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(head); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (tp *tap) heads() [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([][]byte(nil), tp.seen...)
}

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
		if !strings.Contains(gw.Logs(), "forwarded a cancel request") {
			t.Fatal("regate did not log the forwarded cancel")
		}
		// The outcome is recorded as the target's error.
		_, out := findCommand(t, gw, func(q string) bool { return q == "SELECT pg_sleep(30)" })
		if out == nil || out.Outcome.Status != "error" || out.Outcome.Code != "57014" {
			t.Fatalf("outcome of the cancelled statement: %+v", out)
		}
	})

	t.Run("pgx context timeout closes the connection", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer qcancel()
		start := time.Now()
		_, err = conn.Exec(qctx, "SELECT pg_sleep(30)")
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
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
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
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
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
		var dropped int
		if err := openStore(t, gw).QueryRow(`SELECT count(*) FROM events WHERE type = 'cancel' AND body LIKE '%wrong key: dropped%'`).Scan(&dropped); err != nil || dropped < 2 {
			t.Fatalf("%d dropped cancels recorded (%v), want >= 2", dropped, err)
		}
	})
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
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, connString(gw.Listen, tok))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
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
		q := fmt.Sprintf("COPY customers TO '%s'", file)
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

// ---------------------------------------------------------------------------
// Hostile clients

// TestPostgresHostileClients: malformed and oversized input from raw sockets
// ends those connections promptly and cleanly; the gateway keeps serving.
func TestPostgresHostileClients(t *testing.T) {
	t.Parallel()
	_, iss, gw := setup(t)
	tok := iss.Token(t, "agent-raw", audience, "agents")
	// Opened first, never written to: the startup timeout (15 s) must end it.
	idle := dialRaw(t, gw.Listen)
	idleSince := time.Now()

	t.Run("HTTP request instead of a startup message", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		expectRejected(t, c, "08P01")
	})
	t.Run("startup length 0x7fffffff", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		if _, err := c.Write([]byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0}); err != nil {
			t.Fatal(err)
		}
		expectRejected(t, c, "08P01")
	})
	t.Run("startup length below the minimum", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		if _, err := c.Write([]byte{0, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
		expectRejected(t, c, "08P01")
	})
	t.Run("unknown startup code", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		if _, err := c.Write(startupCode(1234<<16 | 1)); err != nil {
			t.Fatal(err)
		}
		expectRejected(t, c, "08P01")
	})
	t.Run("oversized password message", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		w := startup(t, c)
		if _, err := c.Write([]byte{'p', 0x40, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
		w.expectFatal(t, "08P01", "password message")
	})
	t.Run("query before the password", func(t *testing.T) {
		c := dialRaw(t, gw.Listen)
		w := startup(t, c)
		w.send(t, &pgproto3.Query{String: "SELECT 1"})
		w.expectFatal(t, "08P01", "password message")
	})
	t.Run("1 GiB Query after login", func(t *testing.T) {
		w := login(t, gw.Listen, tok)
		if _, err := w.c.Write([]byte{'Q', 0x40, 0, 0, 4}); err != nil {
			t.Fatal(err)
		}
		w.expectFatal(t, "08P01", "exceeds the limit")
	})
	t.Run("negative message length", func(t *testing.T) {
		w := login(t, gw.Listen, tok)
		if _, err := w.c.Write([]byte{'Q', 0xff, 0xff, 0xff, 0xf0}); err != nil {
			t.Fatal(err)
		}
		w.expectFatal(t, "08P01", "invalid length")
	})
	t.Run("unknown message type", func(t *testing.T) {
		w := login(t, gw.Listen, tok)
		if _, err := w.c.Write([]byte{'Z', 0, 0, 0, 5, 'I'}); err != nil {
			t.Fatal(err)
		}
		w.expectFatal(t, "08P01", "unexpected message type 'Z'")
	})
	t.Run("Query without its terminating NUL", func(t *testing.T) {
		w := login(t, gw.Listen, tok)
		if _, err := w.c.Write(append([]byte{'Q', 0, 0, 0, 12}, "SELECT 1"...)); err != nil {
			t.Fatal(err)
		}
		w.expectFatal(t, "08P01", "malformed Query")
	})
	t.Run("truncated message, then half-close", func(t *testing.T) {
		w := login(t, gw.Listen, tok)
		if _, err := w.c.Write(append([]byte{'Q', 0, 0, 0, 104}, "SELECT 1; "...)); err != nil {
			t.Fatal(err)
		}
		if err := w.c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if err := waitClosed(w.c, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the gateway still serves", func(t *testing.T) {
		r := testenv.PsqlVia(t, gw.Listen, "agent-raw", "app", tok, []string{"SELECT count(*) FROM customers"})
		if r.Code != 0 || r.Out != "3" {
			t.Fatalf("code %d out %q err %q", r.Code, r.Out, r.Err)
		}
		// The idle connection is still open: nothing else waited for it.
		_ = idle.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var b [1]byte
		if _, err := idle.Read(b[:]); !isTimeout(err) {
			t.Fatalf("the idle connection ended early: %v", err)
		}
	})
	t.Run("the startup timeout ends an idle connection", func(t *testing.T) {
		if err := waitClosed(idle, time.Until(idleSince.Add(20*time.Second))); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(idleSince); d < 14*time.Second {
			t.Fatalf("closed after %s, before the 15 s startup timeout", d)
		}
	})
	logs := gw.Logs()
	if strings.Contains(strings.ToLower(logs), "panic") || strings.Contains(logs, "goroutine ") {
		t.Fatalf("regate's log shows a panic:\n%s", logs)
	}
}

// ---------------------------------------------------------------------------
// Raw wire client

type wire struct {
	c   net.Conn
	fe  *pgproto3.Frontend
	key *pgproto3.BackendKeyData
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startupCode is an 8-byte startup-phase packet carrying only code.
func startupCode(code uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code)
}

// startup sends a 3.0 StartupMessage on c and reads the password request.
func startup(t *testing.T, c net.Conn) *wire {
	t.Helper()
	w := &wire{c: c, fe: pgproto3.NewFrontend(c, c)}
	w.send(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "raw-client", "database": "app", "application_name": "raw"}})
	if m := w.receive(t); fmt.Sprintf("%T", m) != "*pgproto3.AuthenticationCleartextPassword" {
		t.Fatalf("want AuthenticationCleartextPassword, got %#v", m)
	}
	return w
}

// login runs startup and authentication on a new connection to addr, up to
// the first ReadyForQuery.
func login(t *testing.T, addr, token string) *wire {
	t.Helper()
	return loginOn(t, dialRaw(t, addr), token)
}

func loginOn(t *testing.T, c net.Conn, token string) *wire {
	t.Helper()
	w := startup(t, c)
	w.send(t, &pgproto3.PasswordMessage{Password: token})
	for {
		switch m := w.receive(t).(type) {
		case *pgproto3.ReadyForQuery:
			return w
		case *pgproto3.BackendKeyData:
			k := *m
			w.key = &k
		case *pgproto3.ErrorResponse:
			t.Fatalf("login refused: %s %s", m.Code, m.Message)
		}
	}
}

func (w *wire) send(t *testing.T, m pgproto3.FrontendMessage) {
	t.Helper()
	w.fe.Send(m)
	if err := w.fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (w *wire) receive(t *testing.T) pgproto3.BackendMessage {
	t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := w.fe.Receive()
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return m
}

// simpleQuery runs q and expects it to succeed.
func (w *wire) simpleQuery(t *testing.T, q string) {
	t.Helper()
	w.send(t, &pgproto3.Query{String: q})
	for {
		switch m := w.receive(t).(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s: %s %s", q, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return
		}
	}
}

// expectFatal wants a FATAL ErrorResponse with code mentioning msg, then the
// connection closed, within a few seconds.
func (w *wire) expectFatal(t *testing.T, code, msg string) {
	t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		m, err := w.fe.Receive()
		if err != nil {
			t.Fatalf("no FATAL %s before the connection ended: %v", code, err)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			if e.Severity != "FATAL" || e.Code != code || !strings.Contains(e.Message, msg) {
				t.Fatalf("got %s %s %q, want FATAL %s mentioning %q", e.Severity, e.Code, e.Message, code, msg)
			}
			break
		}
	}
	if err := waitClosed(w.c, 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

// expectRejected wants the connection closed within 2 s, after at most an
// ErrorResponse with code.
func expectRejected(t *testing.T, c net.Conn, code string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	data, err := io.ReadAll(c)
	if isTimeout(err) {
		t.Fatalf("connection still open after 2s (read %q)", data)
	}
	if len(data) > 0 && (data[0] != 'E' || !bytes.Contains(data, []byte("C"+code+"\x00"))) {
		t.Fatalf("answered %q, want nothing or an ErrorResponse %s", data, code)
	}
}

// waitClosed reads until the peer closes c (EOF or reset), failing on a
// timeout.
func waitClosed(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		return fmt.Errorf("connection still open after %s", d)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ---------------------------------------------------------------------------
// Records

// recEvent is the part of a `regate replay --json` event these tests read.
type recEvent struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Ref       string `json:"ref"`
	SessionID string `json:"session_id"`
	Input     struct {
		Postgres struct {
			Query      string `json:"query"`
			Statements []struct {
				Command string         `json:"command"`
				Node    string         `json:"node"`
				AST     map[string]any `json:"ast"`
			} `json:"statements"`
		} `json:"postgres"`
	} `json:"input"`
	Decision *struct {
		Allow   bool     `json:"allow"`
		Reasons []string `json:"reasons"`
	} `json:"decision"`
	Outcome *struct {
		Status string   `json:"status"`
		Tags   []string `json:"tags"`
		Rows   int64    `json:"rows"`
		Error  string   `json:"error"`
		Code   string   `json:"code"`
	} `json:"outcome"`
}

// records reads every session's events through the CLI.
func records(t *testing.T, gw *testenv.Gateway) []recEvent {
	t.Helper()
	out, errOut, code := testenv.Run(t, "sessions", "--json", "--store", gw.Store)
	if code != 0 {
		t.Fatalf("sessions: %d %s", code, errOut)
	}
	var sessions []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &sessions); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	var all []recEvent
	for _, s := range sessions {
		out, errOut, code := testenv.Run(t, "replay", s.ID, "--json", "--store", gw.Store)
		if code != 0 {
			t.Fatalf("replay %s: %d %s", s.ID, code, errOut)
		}
		var evs []recEvent
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatalf("replay --json: %v\n%s", err, out)
		}
		all = append(all, evs...)
	}
	return all
}

// findCommand returns the last command event whose query matches, and its
// outcome event (nil when none).
func findCommand(t *testing.T, gw *testenv.Gateway, match func(query string) bool) (cmd, out *recEvent) {
	t.Helper()
	evs := records(t, gw)
	for i := range evs {
		if evs[i].Type == "command" && match(evs[i].Input.Postgres.Query) {
			cmd = &evs[i]
		}
	}
	if cmd == nil {
		return nil, nil
	}
	for i := range evs {
		if evs[i].Type == "outcome" && evs[i].Ref == cmd.ID {
			out = &evs[i]
		}
	}
	return cmd, out
}

func outcomeOf(e *recEvent) any {
	if e == nil {
		return nil
	}
	return e.Outcome
}

// backends starts PostgreSQL with the customers table and an issuer.
func backends(t *testing.T) (*testenv.Postgres, *testenv.Issuer) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.customers (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL);
		INSERT INTO public.customers VALUES (1, 'ann@example.com', 'Ann'), (2, 'bob@example.com', 'Bob'), (3, 'cy@example.com', 'Cy');
		ALTER TABLE public.customers OWNER TO app;`)
	return pg, testenv.StartIssuer(t)
}
