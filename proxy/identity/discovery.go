package identity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Discovery retry backoff: the first retry may happen retryMin after a
// failure, each further failure doubles the wait up to retryMax.
const (
	retryMin = 2 * time.Second
	retryMax = 15 * time.Second
)

var (
	errNoJWKS      = errors.New("the discovery document has no jwks_uri")
	errDiscovering = errors.New("discovery is in progress")
)

// provider is the outcome of a successful discovery.
type provider struct {
	verifier *oidc.IDTokenVerifier
	algs     []string // asymmetric algorithms the issuer advertises
}

// currentProvider returns the discovered provider, attempting discovery if it
// has not succeeded yet and the backoff allows. While discovery fails it
// returns an ErrUnreachable *Error: Verify fails closed.
func (v *Verifier) currentProvider(ctx context.Context) (*provider, error) {
	v.mu.Lock()
	if v.prov != nil {
		p := v.prov
		v.mu.Unlock()
		return p, nil
	}
	if v.inflight || time.Now().Before(v.nextAttempt) {
		err := v.lastErr
		v.mu.Unlock()
		if err == nil {
			err = unreachable(errDiscovering)
		}
		return nil, err
	}
	v.inflight = true
	v.mu.Unlock()

	p, err := v.discover(ctx)
	v.record(p, err)
	if err != nil {
		return nil, unreachable(err)
	}
	return p, nil
}

// record stores the outcome of one discovery attempt and schedules the next.
func (v *Verifier) record(p *provider, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.inflight = false
	if err == nil {
		if v.lastErr != nil {
			v.log.Info("OIDC discovery succeeded", "issuer", v.cfg.Issuer, "algorithms", p.algs)
		}
		v.prov, v.lastErr = p, nil
		return
	}
	switch {
	case v.backoff == 0:
		v.backoff = retryMin
	case v.backoff < retryMax:
		v.backoff = min(2*v.backoff, retryMax)
	}
	v.nextAttempt = time.Now().Add(v.backoff)
	v.lastErr = unreachable(err)
	v.log.Warn("OIDC discovery failed; tokens are refused until it succeeds",
		"issuer", v.cfg.Issuer, "error", clipN(err.Error(), 3*maxShown), "retry_after", v.backoff)
}

// discover fetches the issuer's discovery document and builds a go-oidc
// verifier restricted to the asymmetric algorithms the issuer advertises.
func (v *Verifier) discover(ctx context.Context) (*provider, error) {
	ctx = oidc.ClientContext(ctx, v.client)
	p, err := oidc.NewProvider(ctx, v.cfg.Issuer)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) { // it names the URL already
			return nil, fmt.Errorf("discovery: %w", err)
		}
		return nil, fmt.Errorf("discovery at %s: %w", discoveryURL(v.cfg.Issuer), err)
	}
	var meta struct {
		Algs    []string `json:"id_token_signing_alg_values_supported"`
		JWKSURI string   `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("discovery at %s: %w", discoveryURL(v.cfg.Issuer), err)
	}
	if meta.JWKSURI == "" {
		return nil, fmt.Errorf("discovery at %s: %w", discoveryURL(v.cfg.Issuer), errNoJWKS)
	}
	algs := make([]string, 0, len(meta.Algs))
	for _, a := range meta.Algs {
		if isAsymmetric(a) {
			algs = append(algs, a)
		}
	}
	if len(algs) == 0 {
		// The document advertises no usable algorithm: RS256 is the one
		// every OpenID provider must support.
		algs = []string{oidc.RS256}
	}
	// p.Verifier's key set uses v.client (carried by ctx into NewProvider)
	// with a background context, so it outlives this call.
	ov := p.Verifier(&oidc.Config{
		ClientID:             v.cfg.Audience,
		SupportedSigningAlgs: algs,
		Now:                  v.cfg.Now,
	})
	return &provider{verifier: ov, algs: algs}, nil
}

func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}
