package postgres

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/proxy"
	"github.com/regate/regate/recorder"
)

// SQLSTATE codes regate answers with.
const (
	codeInvalidPassword   = "28P01"
	codeProtocolViolation = "08P01"
	codeConnectionFailure = "08006"
	codeCannotConnect     = "08001"
	codeInsufficientPriv  = "42501"
	codeSyntaxError       = "42601"
	codeFeatureNotSupp    = "0A000"
	codeInvalidAuthSpec   = "28000"
	codeInternalError     = "XX000"
)

// maxPasswordBytes bounds the password message (the token) before a client is
// authenticated, so an anonymous client cannot make regate hold much memory.
const maxPasswordBytes = 64 << 10

// handle serves one client connection from accept to close.
func (s *Server) handle(ctx context.Context, raw net.Conn) {
	raw = proxy.RawTCP(raw)
	log := s.log.With("client_addr", raw.RemoteAddr().String())
	_ = raw.SetDeadline(time.Now().Add(s.cfg.StartupTimeout))
	c, startup, err := s.negotiate(ctx, raw)
	if err != nil {
		switch {
		case errors.Is(err, errHandled):
		case errors.Is(err, io.EOF):
			log.Debug("client closed the connection before its startup message")
		default:
			log.Info("client startup failed", "error", err)
			_ = writeMsg(c, fatal(codeProtocolViolation, "regate: "+err.Error()))
		}
		return
	}
	cn, err := s.authenticate(ctx, c, startup)
	if err != nil {
		log.Info("client session refused", "error", err)
		return
	}
	_ = raw.SetDeadline(time.Time{})
	cn.relay(ctx)
}

// errHandled means negotiate fully handled the connection (a cancel request).
var errHandled = errors.New("handled")

// negotiate answers SSLRequest/GSSENCRequest and CancelRequest and returns the
// (possibly TLS) connection and the client's StartupMessage. It reads without
// buffering, so no byte sent before the TLS handshake is ever used after it.
func (s *Server) negotiate(ctx context.Context, c net.Conn) (net.Conn, *pgproto3.StartupMessage, error) {
	tlsDone, gssDone := false, false
	for {
		code, body, err := readStartup(c)
		if err != nil {
			return c, nil, err
		}
		switch {
		case code == codeSSLRequest && !tlsDone && len(body) == 4:
			tlsDone = true
			if s.cfg.TLS == nil {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return c, nil, err
				}
				continue
			}
			if _, err := c.Write([]byte{'S'}); err != nil {
				return c, nil, err
			}
			tc := tls.Server(c, s.cfg.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return c, nil, fmt.Errorf("TLS handshake failed: %w", err)
			}
			c = tc
		case code == codeGSSENC && !gssDone && len(body) == 4:
			gssDone = true
			if _, err := c.Write([]byte{'N'}); err != nil {
				return c, nil, err
			}
		case code == codeCancel:
			s.cancel(ctx, body, c.RemoteAddr().String())
			return c, nil, errHandled
		case code>>16 == 3:
			// A newer 3.x minor version or "_pq_." protocol options are
			// answered, as Postgres does, with NegotiateProtocolVersion; the
			// session continues with 3.0 (4-byte cancel keys).
			binary.BigEndian.PutUint32(body, codeProtocol30)
			var sm pgproto3.StartupMessage
			if err := sm.Decode(body); err != nil {
				return c, nil, fmt.Errorf("invalid startup message: %w", err)
			}
			var unknown []string
			for k := range sm.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					unknown = append(unknown, k)
					delete(sm.Parameters, k)
				}
			}
			if _, isTLS := c.(*tls.Conn); s.cfg.RequireTLS && !isTLS {
				_ = writeMsg(c, fatal(codeInvalidAuthSpec, "regate: this listener accepts only TLS connections (use sslmode=require or stronger)"))
				return c, nil, errHandled
			}
			if code != codeProtocol30 || len(unknown) > 0 {
				sort.Strings(unknown)
				if err := writeMsg(c, &pgproto3.NegotiateProtocolVersion{UnrecognizedOptions: unknown}); err != nil {
					return c, nil, err
				}
			}
			return c, &sm, nil
		default:
			return c, nil, fmt.Errorf("unsupported startup request code %d", code)
		}
	}
}

// authenticate asks for the token, opens the session and connects upstream.
func (s *Server) authenticate(ctx context.Context, c net.Conn, sm *pgproto3.StartupMessage) (*conn, error) {
	p := sm.Parameters
	user, database := p["user"], p["database"]
	if user == "" {
		_ = writeMsg(c, fatal(codeInvalidAuthSpec, "regate: no user name specified in the startup message"))
		return nil, errors.New("no user in startup message")
	}
	if database == "" {
		database = user
	}
	if _, ok := p["replication"]; ok {
		_ = writeMsg(c, fatal(codeFeatureNotSupp, "regate: replication connections are not allowed"))
		return nil, errors.New("replication connection refused")
	}
	if err := writeMsg(c, &pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return nil, err
	}
	cn := newConn(s, c)
	cn.cr.maxBody = maxPasswordBytes // until authenticated
	typ, body, err := cn.cr.next()
	cn.cr.maxBody = s.cfg.MaxMessageSize
	if err != nil || typ != 'p' {
		_ = writeMsg(c, fatal(codeProtocolViolation, "regate: expected a password message carrying the OIDC token"))
		return nil, fmt.Errorf("expected a password message (got %q): %v", typ, err)
	}
	token, _ := cstring(body)
	sess, err := s.cfg.Pipeline.Open(ctx, proxy.SessionRequest{
		Target: s.cfg.Target, ClientAddr: c.RemoteAddr().String(), Token: token,
		Details: recorder.SessionInfo{Database: database, User: s.cfg.Credentials.User},
		Login:   user, Logins: append([]string{s.cfg.Credentials.User}, s.cfg.ClientUsers...),
	})
	token = ""
	if err != nil {
		var ae *proxy.AuthError
		code := codeInvalidPassword
		switch {
		case !errors.As(err, &ae):
			code = codeConnectionFailure
		case ae.Login:
			code = codeInvalidAuthSpec // as PostgreSQL refuses a role it does not know
		}
		_ = writeMsg(c, fatal(code, "regate: "+err.Error()))
		return nil, err
	}
	cn.sess, cn.database, cn.clientUser = sess, database, user
	sess.OnApprovalWait = cn.noticeApproval
	if err := cn.connectUpstream(ctx, p); err != nil {
		sess.Close(ctx, err.Error())
		_ = writeMsg(c, fatal(codeCannotConnect, "regate: "+err.Error()))
		return nil, err
	}
	if err := cn.greet(); err != nil {
		// The client left during login: release the target connection too.
		cn.s.unregisterCancel(cn)
		cn.up.Close()
		sess.Close(context.WithoutCancel(ctx), "the client left during login: "+err.Error())
		return nil, err
	}
	return cn, nil
}

// greet finishes the client's startup with the target's parameters.
func (cn *conn) greet() error {
	var secret [4]byte
	_, _ = rand.Read(secret[:])
	cn.s.registerCancel(cn, secret)
	msgs := []pgproto3.Message{&pgproto3.AuthenticationOk{}}
	for k, v := range cn.params {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	msgs = append(msgs,
		&pgproto3.BackendKeyData{ProcessID: cn.pid, SecretKey: secret[:]},
		&pgproto3.ReadyForQuery{TxStatus: cn.txStatus})
	cn.secret = binary.BigEndian.Uint32(secret[:])
	return writeMsg(cn.client, msgs...)
}
