package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection, the first
// through RawTCP.
func tcpPair(t *testing.T) (raw, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p := <-accepted
	if p == nil {
		t.Fatal("accept failed")
	}
	raw = RawTCP(c)
	if _, ok := raw.(*rawTCP); !ok {
		t.Fatalf("RawTCP(%T) = %T, want *rawTCP", c, raw)
	}
	t.Cleanup(func() { raw.Close(); p.Close() })
	return raw, p
}

// TestRawTCPRoundTrip: 8 MiB each way (far more than the socket buffers, so
// writes stop on EAGAIN and wait for the poller) arrive intact, then a close
// reads as io.EOF.
func TestRawTCPRoundTrip(t *testing.T) {
	raw, peer := tcpPair(t)
	out := bytes.Repeat([]byte("regate-raw-io."), 8<<20/14)
	echoed := make(chan error, 1)
	go func() { // the peer echoes everything back, then closes
		_, err := io.Copy(peer, io.LimitReader(peer, int64(len(out))))
		peer.Close()
		echoed <- err
	}()
	wrote := make(chan error, 1)
	go func() {
		n, err := raw.Write(out)
		if err == nil && n != len(out) {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	got, err := io.ReadAll(raw)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := <-echoed; err != nil {
		t.Fatalf("peer: %v", err)
	}
	if !bytes.Equal(got, out) {
		t.Fatalf("read back %d bytes, want the %d written", len(got), len(out))
	}
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

// TestRawTCPErrors: a passed deadline, a closed connection and a reset read
// as net.Conn's own errors do, since the proxies tell them apart.
func TestRawTCPErrors(t *testing.T) {
	raw, peer := tcpPair(t)
	if err := raw.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := raw.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v, want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past its deadline: %#v, want a *net.OpError of op read", err)
	}
	if err := raw.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	// The peer resets the connection (SO_LINGER 0): the next read fails with
	// ECONNRESET, worded as net words it.
	if err := peer.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	_, err = raw.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read after a reset: %v, want a read error with ECONNRESET", err)
	}

	raw.Close()
	if _, err := raw.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestRawTCPOthersUnchanged: a connection that is not a *net.TCPConn is
// returned as it is.
func TestRawTCPOthersUnchanged(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := RawTCP(a); got != a {
		t.Fatalf("RawTCP(net.Pipe end) = %T, want it unchanged", got)
	}
}
