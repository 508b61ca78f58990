package bundles

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
)

// ErrNotBundle is returned (wrapped) by Load for a path that exists but is
// neither a directory nor a .tar.gz/.tgz file.
var ErrNotBundle = errors.New("not a directory or .tar.gz file")

// Load reads the bundle at path, a directory or a .tar.gz (.tgz) file in the
// OPA bundle format. Errors name the path and what is wrong: a missing path,
// a path of the wrong kind, or a Rego parse error as file:line.
//
// The revision is the one in the bundle's .manifest, or "" when there is no
// .manifest or it carries no revision.
func Load(ctx context.Context, path string) (*bundle.Bundle, error) {
	return load(ctx, path, false)
}

// LoadUnverified is Load for a bundle that is only evaluated locally (a
// what-if candidate): a .signatures.json, if any, is not checked.
func LoadUnverified(ctx context.Context, path string) (*bundle.Bundle, error) {
	return load(ctx, path, true)
}

func load(ctx context.Context, path string, skipVerify bool) (*bundle.Bundle, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	if path == "" {
		return nil, errors.New("bundle: empty path")
	}
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s: %w", path, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	if !info.IsDir() && !isTarball(path) {
		return nil, fmt.Errorf("bundle %s: %w", path, ErrNotBundle)
	}
	// AsBundle prefixes its errors with "bundle <path>: ", and names parse
	// errors by file and line.
	b, err := newLoader().WithSkipBundleVerification(skipVerify).AsBundle(path)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// LoadFS reads a bundle from the root of fsys (used for the embedded default
// library). When revision is not empty it becomes the bundle's revision,
// replacing any revision from a .manifest in fsys.
func LoadFS(fsys fs.FS, revision string) (*bundle.Bundle, error) {
	if fsys == nil {
		return nil, errors.New("bundle: nil file system")
	}
	b, err := newLoader().WithFS(fsys).AsBundle(".")
	if err != nil {
		return nil, err
	}
	if revision != "" {
		b.Manifest.Revision = revision
	}
	return b, nil
}

// newLoader returns OPA's file loader configured the way regate reads bundles.
func newLoader() loader.FileLoader {
	return loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true)
}

// isTarball tells whether path names a gzipped tarball by its extension.
func isTarball(path string) bool {
	lower := strings.ToLower(path)
	return strings.HasSuffix(lower, ".tar.gz") || strings.HasSuffix(lower, ".tgz")
}
