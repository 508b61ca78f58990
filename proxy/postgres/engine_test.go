package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/recorder"
)

// receiveUntilReady collects messages up to ReadyForQuery (or an error/EOF).
func receiveUntilReady(t *testing.T, fe *pgproto3.Frontend) []pgproto3.BackendMessage {
	t.Helper()
	var out []pgproto3.BackendMessage
	for {
		msg, err := fe.Receive()
		if err != nil {
			return out
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			c := *m
			out = append(out, &c)
			if m.Severity == "FATAL" {
				return out
			}
		case *pgproto3.CommandComplete:
			out = append(out, &pgproto3.CommandComplete{CommandTag: append([]byte(nil), m.CommandTag...)})
		case *pgproto3.ReadyForQuery:
			return append(out, &pgproto3.ReadyForQuery{TxStatus: m.TxStatus})
		default:
			out = append(out, msg)
		}
	}
}

func TestEngineDecidesAndRecords(t *testing.T) {
	addr, mem := startEngine(t, stubParser{})
	c, fe := login(t, addr)
	defer c.Close()

	fe.Send(&pgproto3.Query{String: "SELECT 1"})
	_ = fe.Flush()
	got := receiveUntilReady(t, fe)
	if len(got) != 2 || string(got[0].(*pgproto3.CommandComplete).CommandTag) != "SELECT 0" {
		t.Fatalf("SELECT: %#v", got)
	}
	fe.Send(&pgproto3.Query{String: "DROP TABLE t"})
	_ = fe.Flush()
	got = receiveUntilReady(t, fe)
	e, ok := got[0].(*pgproto3.ErrorResponse)
	if !ok || e.Code != "42501" || e.Message != "regate: blocked by policy: no DROP" || !strings.HasPrefix(e.Detail, "decision_id: ") {
		t.Fatalf("DROP: %#v", got)
	}
	// Extended protocol: a refused Execute fails the batch until Sync.
	fe.SendParse(&pgproto3.Parse{Name: "", Query: "DROP TABLE t"})
	fe.SendBind(&pgproto3.Bind{})
	fe.SendExecute(&pgproto3.Execute{})
	fe.SendParse(&pgproto3.Parse{Name: "", Query: "SELECT 2"})
	fe.SendSync(&pgproto3.Sync{})
	_ = fe.Flush()
	got = receiveUntilReady(t, fe)
	var codes []string
	for _, m := range got {
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			codes = append(codes, e.Code)
		}
	}
	if len(codes) != 1 || codes[0] != "42501" {
		t.Fatalf("extended refusal: %#v", got)
	}
	if _, ok := got[len(got)-1].(*pgproto3.ReadyForQuery); !ok {
		t.Fatalf("no ReadyForQuery after Sync: %#v", got)
	}
	// Hostile input: an unknown message type ends the session cleanly.
	_, _ = c.Write(frame('Z', ""))
	got = receiveUntilReady(t, fe)
	if e, ok := got[0].(*pgproto3.ErrorResponse); !ok || e.Severity != "FATAL" || e.Code != "08P01" {
		t.Fatalf("unknown message: %#v", got)
	}
	c.Close()

	var types []string
	for _, ev := range mem.All() {
		if ev.Type == recorder.TypeCommand || ev.Type == recorder.TypeOutcome {
			types = append(types, ev.Type)
		}
	}
	if strings.Count(strings.Join(types, " "), "command") != 3 {
		t.Fatalf("recorded %v", types)
	}
}

func TestEngineRefusesOversizedMessages(t *testing.T) {
	addr, _ := startEngine(t, stubParser{})
	c, fe := login(t, addr)
	defer c.Close()
	_, _ = c.Write([]byte{'Q', 0x40, 0, 0, 0}) // 1 GiB announced
	got := receiveUntilReady(t, fe)
	if len(got) == 0 {
		t.Fatal("no answer")
	}
	e, ok := got[0].(*pgproto3.ErrorResponse)
	if !ok || e.Code != "08P01" || !strings.Contains(e.Message, "exceeds the limit") {
		t.Fatalf("got %#v", got)
	}
}

func TestEngineRefusesBadTokens(t *testing.T) {
	addr, mem := startEngine(t, stubParser{})
	c, err := dialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "x"}})
	_ = fe.Flush()
	_, _ = fe.Receive()
	fe.Send(&pgproto3.PasswordMessage{Password: "forged"})
	_ = fe.Flush()
	msg, err := fe.Receive()
	e, ok := msg.(*pgproto3.ErrorResponse)
	if err != nil || !ok || e.Code != "28P01" || !strings.Contains(e.Message, "signature") {
		t.Fatalf("got %#v, %v", msg, err)
	}
	if all := mem.All(); len(all) != 1 || all[0].Type != recorder.TypeAuthFailure {
		t.Fatalf("recorded %+v", all)
	}
}

// panicParser panics on one statement text: a stand-in for a bug anywhere in
// a session's data path.
type panicParser struct{ stubParser }

func (p panicParser) Parse(q string) ([]parse.Statement, error) {
	if q == "SELECT panic" {
		panic("test: parser bug")
	}
	return p.stubParser.Parse(q)
}

// TestEnginePanicEndsOnlyItsSession: a panic in a session's loop ends that
// session (FATAL XX000, connection closed, the end recorded with the reason)
// and leaves the process and every other session running.
func TestEnginePanicEndsOnlyItsSession(t *testing.T) {
	addr, mem := startEngine(t, panicParser{})
	other, ofe := login(t, addr)
	defer other.Close()
	c, fe := login(t, addr)
	defer c.Close()
	fe.Send(&pgproto3.Query{String: "SELECT panic"})
	_ = fe.Flush()
	msg, err := fe.Receive()
	if e, ok := msg.(*pgproto3.ErrorResponse); err != nil || !ok || e.Severity != "FATAL" || e.Code != "XX000" ||
		e.Message != "regate: internal error; the session is closed" {
		t.Fatalf("after the panic: %#v, %v", msg, err)
	}
	if err := drain(c); err != nil {
		t.Fatalf("the connection stays open after the panic: %v", err)
	}
	ofe.Send(&pgproto3.Query{String: "SELECT 1"})
	_ = ofe.Flush()
	if got := receiveUntilReady(t, ofe); len(got) != 2 {
		t.Fatalf("the other session after the panic: %#v", got)
	}
	c2, fe2 := login(t, addr)
	defer c2.Close()
	fe2.Send(&pgproto3.Query{String: "SELECT 1"})
	_ = fe2.Flush()
	if got := receiveUntilReady(t, fe2); len(got) != 2 {
		t.Fatalf("a new session after the panic: %#v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, ev := range mem.All() {
			if ev.Type == recorder.TypeSessionEnd && ev.Outcome != nil && strings.Contains(ev.Outcome.Error, "test: parser bug") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no session end recorded with the panic as its reason")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
