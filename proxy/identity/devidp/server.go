package devidp

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/proxy/identity"
)

const (
	// DefaultAudience is the aud of tokens minted without one.
	DefaultAudience = "regate"
	// DefaultTTL is the lifetime of tokens minted without one.
	DefaultTTL = time.Hour
	// MaxTTL is the longest lifetime a token may be given.
	MaxTTL = 24 * time.Hour
)

// Server is a running development issuer.
type Server struct {
	log    hclog.Logger
	issuer string
	ln     net.Listener
	srv    *http.Server
	signer jose.Signer
	jwks   []byte // the public JSON Web Key Set, marshalled

	stop      func() bool // detaches the ctx-done hook
	closeOnce sync.Once
	closeErr  error
}

// Start listens on addr, which must be a loopback address such as
// "127.0.0.1:0", generates a fresh in-memory RSA-2048 key and serves the
// issuer until Close is called or ctx is done.
func Start(ctx context.Context, addr string, logger hclog.Logger) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := checkLoopbackAddr(addr); err != nil {
		return nil, err
	}
	signer, jwks, err := newKey()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devidp: listen on %s: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("devidp: %s resolved to the non-loopback address %s", addr, ln.Addr())
	}
	s := &Server{
		log:    logger,
		issuer: "http://" + ln.Addr().String(),
		ln:     ln,
		signer: signer,
		jwks:   jwks,
	}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.serve()
	s.stop = context.AfterFunc(ctx, func() { _ = s.shutdown() })
	logger.Warn("development OIDC issuer started: it issues tokens for any identity to local callers; never use it in production",
		"issuer", s.issuer)
	return s, nil
}

func (s *Server) serve() {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("development OIDC issuer stopped", "error", err)
	}
}

// checkLoopbackAddr refuses any listen address that is not a loopback IP or
// "localhost" (an empty host would mean every interface).
func checkLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devidp: listen address %q: %w", addr, err)
	}
	if !identity.IsLoopbackHost(host) {
		return fmt.Errorf("devidp: refusing to listen on %q: the development issuer listens on a loopback address only (e.g. 127.0.0.1:0)", addr)
	}
	return nil
}

// newKey generates the signing key and returns its signer and public JWKS.
func newKey() (jose.Signer, []byte, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("devidp: generate key: %w", err)
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.RS256), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("devidp: key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, nil, fmt.Errorf("devidp: marshal JWKS: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, nil, fmt.Errorf("devidp: signer: %w", err)
	}
	return signer, jwks, nil
}

// Issuer returns the issuer URL, "http://127.0.0.1:PORT".
func (s *Server) Issuer() string { return s.issuer }

// Mint signs a token for sub. An empty audience means DefaultAudience, a zero
// ttl DefaultTTL; ttl may not be negative nor exceed MaxTTL.
func (s *Server) Mint(sub string, groups []string, email string, audience string, ttl time.Duration) (string, error) {
	if strings.TrimSpace(sub) == "" {
		return "", errors.New("devidp: sub is required")
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 0 || ttl > MaxTTL {
		return "", fmt.Errorf("devidp: ttl %s is out of range (0 < ttl <= %s)", ttl, MaxTTL)
	}
	if audience == "" {
		audience = DefaultAudience
	}
	now := time.Now()
	claims := map[string]any{
		"iss":    s.issuer,
		"sub":    sub,
		"aud":    audience,
		"iat":    now.Unix(),
		"nbf":    now.Unix(),
		"exp":    now.Add(ttl).Unix(),
		"jti":    uuid.NewString(),
		"groups": cleanGroups(groups),
	}
	if email != "" {
		claims["email"] = email
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devidp: marshal claims: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devidp: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("devidp: serialize: %w", err)
	}
	return tok, nil
}

// cleanGroups trims the groups and drops empty ones; never nil.
func cleanGroups(groups []string) []string {
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// Close stops the issuer at once. It is safe to call more than once.
func (s *Server) Close() error {
	if s.stop != nil {
		s.stop()
	}
	return s.shutdown()
}

func (s *Server) shutdown() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.srv.Close()
		s.log.Info("development OIDC issuer stopped", "issuer", s.issuer)
	})
	return s.closeErr
}
