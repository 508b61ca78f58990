package postgres

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/proxy"
	"github.com/regate/regate/recorder"
)

type cancelKey struct {
	pid    uint32
	secret uint32
}

// registerCancel remembers how to cancel cn's upstream backend. The client is
// told the upstream's process id with a secret of regate's own; the real
// secret never leaves regate.
func (s *Server) registerCancel(cn *conn, secret [4]byte) {
	k := cancelKey{pid: cn.pid, secret: binary.BigEndian.Uint32(secret[:])}
	s.mu.Lock()
	if s.cancels == nil {
		s.cancels = map[cancelKey]*conn{}
	}
	s.cancels[k] = cn
	s.mu.Unlock()
}

// endedCancelTTL is how long the key of an ended session is remembered, so a
// late cancel (pgx sends one after closing a connection whose query it gave
// up on) is told apart from a wrong key.
const endedCancelTTL = time.Minute

// maxEndedCancels bounds that memory.
const maxEndedCancels = 4096

func (s *Server) unregisterCancel(cn *conn) {
	k := cancelKey{pid: cn.pid, secret: cn.secret}
	now := time.Now()
	s.mu.Lock()
	delete(s.cancels, k)
	if s.ended == nil {
		s.ended = map[cancelKey]endedSession{}
	}
	if len(s.ended) >= maxEndedCancels {
		for old, e := range s.ended {
			if now.Sub(e.at) > endedCancelTTL || len(s.ended) >= maxEndedCancels {
				delete(s.ended, old)
			}
		}
	}
	s.ended[k] = endedSession{id: cn.sess.ID, at: now}
	s.mu.Unlock()
}

// endedSession is a session whose cancel key is remembered after its end.
type endedSession struct {
	id string
	at time.Time
}

// cancel forwards a client's CancelRequest to the right upstream backend with
// the real key. A request with an unknown key is dropped, logged and recorded.
func (s *Server) cancel(ctx context.Context, body []byte, client string) {
	var req pgproto3.CancelRequest
	if err := req.Decode(body); err != nil || len(req.SecretKey) != 4 {
		s.log.Warn("dropped a malformed cancel request", "client_addr", client)
		s.recordCancel(ctx, "", client, recorder.StatusBlocked, "malformed cancel request")
		return
	}
	k := cancelKey{pid: req.ProcessID, secret: binary.BigEndian.Uint32(req.SecretKey)}
	s.mu.Lock()
	cn := s.cancels[k]
	ended, wasEnded := s.ended[k]
	s.mu.Unlock()
	if cn == nil && wasEnded && time.Since(ended.at) < endedCancelTTL {
		s.log.Info("dropped a cancel request for a session that has ended", "session_id", ended.id, "client_addr", client)
		s.recordCancel(ctx, ended.id, client, recorder.StatusOK, "cancel request for a session that has ended: nothing to cancel")
		return
	}
	if cn == nil {
		s.log.Warn("dropped a cancel request with an unknown key", "pid", req.ProcessID, "client_addr", client)
		s.recordCancel(ctx, "", client, recorder.StatusBlocked,
			fmt.Sprintf("cancel request for backend %d with a wrong key: dropped", req.ProcessID))
		return
	}
	defer s.recordCancel(ctx, cn.sess.ID, client, recorder.StatusOK, "cancel request forwarded")
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.DialContext(ctx, "tcp", s.cfg.Upstream)
	if err != nil {
		s.log.Warn("cannot forward a cancel request", "session_id", cn.sess.ID, "error", err)
		return
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(5 * time.Second))
	if s.cfg.UpstreamTLS != nil {
		// The real key must not cross the network in clear text when the
		// target is reached over TLS: cancel over TLS too.
		tc, err := s.upstreamTLSConn(ctx, up)
		if err != nil {
			s.log.Warn("cannot forward a cancel request", "session_id", cn.sess.ID, "error", err)
			return
		}
		defer tc.Close()
		up = tc
	}
	fwd := pgproto3.CancelRequest{ProcessID: cn.pid, SecretKey: cn.upSecret}
	if err := writeMsg(up, &fwd); err != nil {
		s.log.Warn("cannot forward a cancel request", "session_id", cn.sess.ID, "error", err)
		return
	}
	// Postgres closes the connection once it has read the request.
	var one [1]byte
	_, _ = up.Read(one[:])
	s.log.Info("forwarded a cancel request", "session_id", cn.sess.ID)
}

// upstreamTLSConn negotiates TLS (SSLRequest, then the handshake with the
// target's verified configuration) on a new connection to the target.
func (s *Server) upstreamTLSConn(ctx context.Context, up net.Conn) (net.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], codeSSLRequest)
	if _, err := up.Write(req[:]); err != nil {
		return nil, err
	}
	var answer [1]byte
	if _, err := io.ReadFull(up, answer[:]); err != nil {
		return nil, err
	}
	if answer[0] != 'S' {
		return nil, fmt.Errorf("the target refused TLS (answered %q)", answer[0])
	}
	tc := tls.Client(up, s.cfg.UpstreamTLS.Clone())
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with the target failed: %w", err)
	}
	return tc, nil
}

// recordCancel appends a cancel event: to the session it cancels, or to a
// session of its own when the key matched none.
func (s *Server) recordCancel(ctx context.Context, sessionID, client, status, msg string) {
	if sessionID == "" {
		sessionID = proxy.NewID()
	}
	ev := &recorder.Event{
		ID: proxy.NewID(), Time: time.Now().UTC(), Type: recorder.TypeCancel, SessionID: sessionID,
		Protocol: "postgres", Target: s.cfg.Target.Name,
		Session: &recorder.SessionInfo{ClientAddr: client},
		Outcome: &recorder.Outcome{Status: status, Error: msg},
	}
	if err := s.cfg.Pipeline.Recorder.Append(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Error("cannot record a cancel request", "error", err)
	}
}
