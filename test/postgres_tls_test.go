package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
			Parameters: map[string]string{"user": "app", "database": "app", "_pq_.regate_test": "on"}})
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
	// Each login ends on its own schedule (upstream connect, SCRAM, greeting):
	// wait until every session is recorded as ended (and stays so), then
	// check that no upstream connection is left.
	ended := func() (all bool, summary string) {
		n, open := 0, 0
		for _, s := range listSessions(t, gw) {
			if s.Subject == "agent-gone" {
				n++
				if s.End == nil {
					open++
				}
			}
		}
		// A reset may also reach regate before it reads the token: no
		// session then, which is fine. Done is every started one ended.
		return n > 0 && open == 0, fmt.Sprintf("%d sessions, %d never ended", n, open)
	}
	deadline := time.Now().Add(10 * time.Second)
	for stable := 0; stable < 3; {
		all, summary := ended()
		if all {
			stable++ // ended, and still so 200 ms later: no login is in flight
		} else {
			stable = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after their clients left: %s", summary)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n := pg.Psql(t, "postgres", fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'", pg.AppUser))
		if n == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s upstream connections are still open 5 s after their sessions ended", n)
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
