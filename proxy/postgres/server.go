package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/proxy"
)

// Parser turns SQL text into statements. parse/sql.Parser implements it.
type Parser interface {
	Parse(query string) ([]parse.Statement, error)
}

// Credentials are what regate logs in to the target with. The client never sees them.
type Credentials struct {
	User     string
	Password string
}

// Config configures one PostgreSQL target.
type Config struct {
	// Target is the target as policies see it (name, labels). Protocol is set to "postgres".
	Target parse.Target
	// Upstream is the target's host:port. Required.
	Upstream string
	// Credentials for the target. User is required.
	Credentials Credentials
	// ClientUsers are the user names a client may send in its startup
	// message besides Credentials.User and its own identity's names
	// (subject, email, preferred_username); "*" accepts any.
	ClientUsers []string
	// TLS, when set, answers SSLRequest with 'S' and this configuration. When
	// nil, SSLRequest is answered 'N' (allowed only on loopback listeners; the
	// caller enforces that).
	TLS *tls.Config
	// RequireTLS refuses clients that do not negotiate TLS (the caller sets it
	// for listeners off loopback), so no token crosses the network in clear.
	RequireTLS bool
	// UpstreamTLS, when set, is used to connect to the target (verify-full).
	// When nil the target connection is plain TCP.
	UpstreamTLS *tls.Config
	Pipeline    *proxy.Pipeline
	Parser      Parser
	// MaxMessageSize bounds every client message body; 16 MiB when zero.
	MaxMessageSize int
	// StartupTimeout bounds the time from accept to a ready session; 15 s when zero.
	StartupTimeout time.Duration
	// Logger; nil discards.
	Logger hclog.Logger
}

// Server serves one PostgreSQL target.
type Server struct {
	cfg     Config
	log     hclog.Logger
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	cancels map[cancelKey]*conn
	ended   map[cancelKey]endedSession // keys of recently ended sessions
	catalog catalog
	wg      sync.WaitGroup
	closed  bool
}

// New validates cfg and fills its defaults.
func New(cfg Config) (*Server, error) {
	if cfg.Upstream == "" {
		return nil, errors.New("postgres: Upstream is required")
	}
	if cfg.Credentials.User == "" {
		return nil, errors.New("postgres: Credentials.User is required")
	}
	if cfg.Pipeline == nil || cfg.Parser == nil {
		return nil, errors.New("postgres: Pipeline and Parser are required")
	}
	if err := cfg.Pipeline.Validate(); err != nil {
		return nil, err
	}
	cfg.Target.Protocol = "postgres"
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 16 << 20
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}}
	s.catalog.s = s
	return s, nil
}

// Serve accepts connections on ln until ctx is done or ln fails. It closes ln
// and every connection before returning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.closeAll()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("postgres target %q: accept: %w", s.cfg.Target.Name, err)
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			defer func() {
				// Startup and authentication (the session's loops guard
				// themselves): a bug ends this connection, not the process.
				if r := recover(); r != nil {
					s.log.Error("internal error; the connection is closed", "client_addr", c.RemoteAddr().String(),
						"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
					c.Close()
				}
			}()
			s.handle(ctx, c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *Server) closeAll() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.catalog.close()
}
