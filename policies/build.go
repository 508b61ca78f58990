package policies

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
)

// BuildOptions configures Build.
type BuildOptions struct {
	// Paths are the directories and files to bundle, loaded as `opa build` does.
	Paths []string
	// Revision is written into the bundle's .manifest.
	Revision string
	// SigningKey, when set, signs the bundle (.signatures.json): a PEM private
	// key for RS*/ES*/PS* algorithms or a shared secret for HS*, given as the
	// key itself or a file holding it.
	SigningKey string
	// SigningAlg is the JWS algorithm; RS256 when empty.
	SigningAlg string
	// KeyID is the "keyid" the signature names, which gateways look up in
	// their OPA keys configuration; "default" when empty.
	KeyID string
	// ClaimsFile optionally adds claims to the signature (as opa build
	// --claims-file).
	ClaimsFile string
}

// Build writes an OPA bundle (.tar.gz) of the given paths to w with OPA's own
// bundle compiler, exactly as `opa build -b PATH --revision REV
// [--signing-key KEY --signing-alg ALG --verification-key-id ID]` does, so
// either tool's output can be served to a gateway. Rego is parsed as Rego v1
// and the bundle is compiled (a compile error fails the build, naming the
// file and line).
func Build(ctx context.Context, opts BuildOptions, w io.Writer) error {
	if len(opts.Paths) == 0 {
		return errors.New("policy build: no path to bundle")
	}
	c := compile.New()
	if info, err := os.Stat(opts.Paths[0]); len(opts.Paths) == 1 && err == nil && info.IsDir() {
		// One directory is the bundle's root: its files are stored as
		// /policy.rego, not /path/to/dir/policy.rego.
		c = c.WithFS(os.DirFS(opts.Paths[0])).WithPaths(".")
	} else {
		c = c.WithPaths(opts.Paths...)
	}
	c = c.
		WithAsBundle(true).
		WithRevision(opts.Revision).
		WithRegoVersion(ast.RegoV1).
		WithOutput(w)
	if opts.SigningKey != "" {
		keyID := opts.KeyID
		if keyID == "" {
			keyID = "default"
		}
		c = c.WithBundleSigningConfig(bundle.NewSigningConfig(opts.SigningKey, opts.SigningAlg, opts.ClaimsFile)).
			WithBundleVerificationKeyID(keyID)
	}
	if err := c.Build(ctx); err != nil {
		return fmt.Errorf("policy build %s: %w", strings.Join(opts.Paths, " "), err)
	}
	return nil
}
