package postgres

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/regate/regate/parse"
)

// stubParser makes every text one SELECT statement, except texts starting
// with "DROP"; it keeps cgo out of the fuzz loop.
type stubParser struct{}

func (stubParser) Parse(q string) ([]parse.Statement, error) {
	if q == "" {
		return []parse.Statement{}, nil
	}
	cmd := "SELECT"
	if len(q) >= 4 && q[:4] == "DROP" {
		cmd = "DROP"
	}
	return []parse.Statement{{Command: cmd, Node: "SelectStmt", Relations: []parse.Relation{}, Functions: []string{}}}, nil
}

func frame(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// FuzzStartup sends arbitrary bytes as the first bytes of a connection: the
// server must answer or close promptly, never panic or hang.
func FuzzStartup(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})                          // SSLRequest
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2}) // CancelRequest
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Add(append([]byte{0, 0, 0, 23, 0, 3, 0, 0}, "user\x00u\x00\x00"...))
	addr, _ := startEngine(f, stubParser{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
		if err := drain(c); err != nil && !isReset(err) {
			t.Fatalf("the server did not close the connection: %v", err)
		}
	})
}

// FuzzFrontend sends arbitrary bytes after a successful login: every input
// ends in a clean error or a normal answer, the connection closes when the
// client's input ends, and nothing panics or hangs.
func FuzzFrontend(f *testing.F) {
	f.Add(frame('Q', "SELECT 1\x00"))
	f.Add(frame('Q', "DROP TABLE t\x00"))
	f.Add(append(frame('P', "s\x00SELECT $1\x00\x00\x00"), frame('S', "")...))
	f.Add(append(append(frame('B', "\x00s\x00\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00"), frame('E', "\x00\x00\x00\x00\x00")...), frame('S', "")...))
	f.Add(frame('Z', ""))
	f.Add([]byte{'Q', 0x40, 0, 0, 0})
	f.Add(frame('Q', "no terminator"))
	f.Add(frame('X', ""))
	addr, _ := startEngine(f, stubParser{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _ := login(t, addr)
		defer c.Close()
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()
		if err := drain(c); err != nil && !isReset(err) {
			t.Fatalf("the server did not close the connection: %v", err)
		}
	})
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout() && !errors.Is(err, os.ErrDeadlineExceeded)
}
