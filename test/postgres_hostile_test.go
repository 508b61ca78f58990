package test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/test/testenv"
)

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
		Parameters: map[string]string{"user": "app", "database": "app", "application_name": "raw"}})
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
