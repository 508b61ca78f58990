package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/proxy"
	"github.com/regate/regate/recorder/recordertest"
)

// fakeUpstream is a minimal PostgreSQL server: it accepts any login and
// answers every Query with CommandComplete and every Sync with ReadyForQuery.
// It lets the engine's wire handling be fuzzed without a real database.
type fakeUpstream struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startFakeUpstream(t testing.TB) *fakeUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUpstream{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeUpstream) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	be := pgproto3.NewBackend(c, c)
	if _, err := be.ReceiveStartupMessage(); err != nil {
		return
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	failed := false // after an error in a batch, skip to Sync
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		if _, sync := msg.(*pgproto3.Sync); failed && !sync {
			continue
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			if strings.HasPrefix(m.String, "DO $regate$") {
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "marker"})
			} else {
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Parse:
			be.Send(&pgproto3.ParseComplete{})
		case *pgproto3.Bind:
			be.Send(&pgproto3.BindComplete{})
		case *pgproto3.Describe:
			be.Send(&pgproto3.NoData{})
		case *pgproto3.Execute:
			if m.Portal != "" { // the fake knows only the unnamed portal
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "34000", Message: "portal does not exist"})
				failed = true
			} else {
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
			}
		case *pgproto3.Close:
			be.Send(&pgproto3.CloseComplete{})
		case *pgproto3.Sync:
			failed = false
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Terminate:
			return
		}
		if be.Flush() != nil {
			return
		}
	}
}

type tokenAuth struct{}

func (tokenAuth) Verify(_ context.Context, tok string) (parse.Identity, error) {
	if tok != "good-token" {
		return parse.Identity{}, errors.New("token signature does not verify")
	}
	return parse.Identity{Subject: "fuzz", Claims: map[string]any{"sub": "fuzz"}}, nil
}

// denyDrops allows everything but statements whose command is DROP.
type denyDrops struct{}

func (denyDrops) Decide(_ context.Context, in *parse.Input) decision.Decision {
	for _, s := range in.Postgres.Statements {
		if s.Command == "DROP" {
			return decision.Decision{ID: proxy.NewID(), Reasons: []string{"no DROP"}}
		}
	}
	return decision.Decision{ID: proxy.NewID(), Allow: true}
}

// startEngine serves a Server in front of a fake upstream and returns its
// address and its in-memory record.
func startEngine(t testing.TB, parser Parser) (string, *recordertest.Memory) {
	up := startFakeUpstream(t)
	mem := recordertest.NewMemory()
	srv, err := New(Config{
		Target:      parse.Target{Name: "fuzz"},
		Upstream:    up.ln.Addr().String(),
		Credentials: Credentials{User: "u"},
		Pipeline:    &proxy.Pipeline{Auth: tokenAuth{}, Decider: denyDrops{}, Recorder: mem},
		Parser:      parser, MaxMessageSize: 1 << 16, StartupTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), mem
}

// login performs the startup and authentication of a client.
func login(t testing.TB, addr string) (net.Conn, *pgproto3.Frontend) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "fuzz", "database": "db"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := fe.Receive(); err != nil { // AuthenticationCleartextPassword
		t.Fatal(err)
	}
	fe.Send(&pgproto3.PasswordMessage{Password: "good-token"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return c, fe
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("login refused: %s", e.Message)
		}
	}
}

// drain reads until the server closes the connection or the deadline passes.
func drain(c net.Conn) error {
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func dialRaw(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	return c, err
}
