package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/parse"
)

// clockSkew is the leeway allowed for nbf and iat in the future.
const clockSkew = time.Minute

// Config configures a Verifier.
type Config struct {
	// Issuer is the OIDC issuer URL (required). Discovery happens at
	// Issuer + "/.well-known/openid-configuration" and tokens must carry
	// exactly this iss. It must be https, except on a loopback host.
	Issuer string
	// Audience must be among the token's aud values (required).
	Audience string
	// GroupsClaim names the claim holding the groups; "groups" when empty.
	// The claim may be an array of strings or a single string. A dotted name
	// ("realm_access.roles") is a path through nested objects.
	GroupsClaim string
	// HTTPClient fetches the discovery document and the JWKS; nil means a
	// client with a 10 s timeout.
	HTTPClient *http.Client
	// Now returns the current time for the expiry checks; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger hclog.Logger
}

// Verifier verifies tokens of one issuer. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	log    hclog.Logger
	client *http.Client

	mu          sync.Mutex
	prov        *provider // nil until discovery succeeds
	lastErr     error     // the last discovery failure, an ErrUnreachable *Error
	nextAttempt time.Time
	backoff     time.Duration
	inflight    bool
}

// New validates cfg and attempts discovery once. An unreachable issuer is not
// an error: it is logged, and Verify retries discovery (with backoff),
// failing closed until it succeeds.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	v := &Verifier{cfg: cfg, log: cfg.Logger, client: client}
	if p, err := v.currentProvider(ctx); err == nil {
		v.log.Debug("OIDC issuer discovered", "issuer", cfg.Issuer, "algorithms", p.algs)
	}
	return v, nil
}

func validate(cfg Config) error {
	if cfg.Issuer == "" {
		return errors.New("identity: Issuer is required")
	}
	if cfg.Audience == "" {
		return errors.New("identity: Audience is required")
	}
	u, err := url.Parse(cfg.Issuer)
	if err != nil {
		return fmt.Errorf("identity: Issuer %q is not a URL: %w", cfg.Issuer, err)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("identity: Issuer %q is not an http(s) URL", cfg.Issuer)
	}
	if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("identity: Issuer %q must use https (plain http is allowed only on a loopback host)", cfg.Issuer)
	}
	return nil
}

// IsLoopbackHost reports whether host (a name or an IP address, without a
// port) is "localhost" or a loopback address: where plain HTTP and
// listeners without TLS are accepted.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Verify checks rawToken and returns the identity it establishes. A refusal
// is an *Error (see the Err* sentinels); its message never contains the token.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (parse.Identity, error) {
	ident, err := v.verify(ctx, strings.TrimSpace(rawToken))
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			v.log.Debug("token refused", "reason", e.Reason.Error(), "error", e.Error())
		}
		return parse.Identity{}, err
	}
	return ident, nil
}

func (v *Verifier) verify(ctx context.Context, raw string) (parse.Identity, error) {
	if raw == "" {
		return parse.Identity{}, newError(ErrEmptyToken, nil, "empty token")
	}
	tok, err := parseUnverified(raw)
	if err != nil {
		return parse.Identity{}, err
	}
	if err := checkAlg(tok.alg, nil); err != nil {
		return parse.Identity{}, err
	}
	prov, err := v.currentProvider(ctx)
	if err != nil {
		return parse.Identity{}, err
	}
	if err := checkAlg(tok.alg, prov.algs); err != nil {
		return parse.Identity{}, err
	}
	// Checked before the signature so that a token from another issuer is
	// reported as such rather than as a bad signature.
	if iss := stringClaim(tok.claims, "iss"); iss != v.cfg.Issuer {
		return parse.Identity{}, v.issuerError(iss, nil)
	}
	idt, err := prov.verifier.Verify(oidc.ClientContext(ctx, v.client), raw)
	if err != nil {
		return parse.Identity{}, v.classify(err, tok)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return parse.Identity{}, newError(ErrClaims, err, "token claims cannot be decoded")
	}
	return v.identity(claims)
}

// identity applies the checks go-oidc does not make and builds the identity
// from the verified claims.
func (v *Verifier) identity(claims map[string]any) (parse.Identity, error) {
	now := v.cfg.Now()
	if nbf, ok := timeClaim(claims, "nbf"); ok && nbf.After(now.Add(clockSkew)) {
		return parse.Identity{}, newError(ErrNotYetValid, nil, "token is not valid before %s", fmtTime(nbf))
	}
	if iat, ok := timeClaim(claims, "iat"); ok && iat.After(now.Add(clockSkew)) {
		return parse.Identity{}, newError(ErrNotYetValid, nil, "token was issued in the future (iat %s)", fmtTime(iat))
	}
	sub := stringClaim(claims, "sub")
	if sub == "" {
		return parse.Identity{}, newError(ErrClaims, nil, `token has no "sub" claim`)
	}
	grps, err := groups(claims, v.cfg.GroupsClaim)
	if err != nil {
		return parse.Identity{}, err
	}
	return parse.Identity{
		Subject: sub,
		Issuer:  stringClaim(claims, "iss"),
		Email:   stringClaim(claims, "email"),
		Groups:  grps,
		Claims:  claims,
	}, nil
}

// classify maps a go-oidc verification error onto an *Error. go-oidc wraps
// most of its errors with %v, so apart from *oidc.TokenExpiredError they are
// recognised by their (stable) message prefixes.
func (v *Verifier) classify(err error, tok *unverified) error {
	var expired *oidc.TokenExpiredError
	if errors.As(err, &expired) {
		if _, ok := timeClaim(tok.claims, "exp"); !ok || expired.Expiry.IsZero() {
			return newError(ErrClaims, err, `token has no "exp" claim`)
		}
		return newError(ErrExpired, err, "token expired at %s", fmtTime(expired.Expiry))
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "failed to verify signature: fetching keys"):
		return unreachable(fmt.Errorf("fetching the issuer's signing keys: %w", err))
	case strings.HasPrefix(msg, "failed to verify signature"):
		return newError(ErrSignature, err, "token signature does not verify with the issuer's keys")
	case strings.HasPrefix(msg, "oidc: malformed jwt"):
		return newError(ErrMalformed, err, "token is not a JWT")
	case strings.HasPrefix(msg, "oidc: id token issued by a different provider"):
		return v.issuerError(stringClaim(tok.claims, "iss"), err)
	case strings.HasPrefix(msg, "oidc: expected audience"):
		return newError(ErrAudience, err, "token audience %v does not include %q",
			clipAll(audiences(tok.claims)), v.cfg.Audience)
	case strings.Contains(msg, "before the nbf (not before) time"):
		nbf, _ := timeClaim(tok.claims, "nbf")
		return newError(ErrNotYetValid, err, "token is not valid before %s", fmtTime(nbf))
	}
	return newError(ErrClaims, err, "token claims are invalid: %s", clip(msg))
}

func (v *Verifier) issuerError(iss string, cause error) error {
	if iss == "" {
		return newError(ErrIssuer, cause, `token has no "iss" claim`)
	}
	return newError(ErrIssuer, cause, "token issuer %q is not the configured issuer %q", clip(iss), v.cfg.Issuer)
}
