package policies

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/regate/regate/bundles"
	"github.com/regate/regate/policies/decision"
)

// Config configures an Engine.
type Config struct {
	// Bundle is a directory or .tar.gz; "" means the embedded default library.
	Bundle string
	// Decision is the data path of the decision, "regate/decision" when empty
	// ("data.regate.decision" and "/regate/decision" are accepted too).
	Decision string
	// Logger receives load messages and the output of Rego print() calls (at
	// debug level); nil means hclog.NewNullLogger().
	Logger hclog.Logger
}

// Engine evaluates the decision of one compiled bundle. It is safe for
// concurrent use: every Decide shares one prepared query.
type Engine struct {
	query   rego.PreparedEvalQuery
	ref     ast.Ref
	path    string
	bundles map[string]decision.Bundle
	logger  hclog.Logger
	cache   *valueCache
}

// New loads and compiles the bundle and prepares the decision query. A bundle
// that fails to load or compile is an error naming the file and line.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	ref, path, err := decisionRef(cfg.Decision)
	if err != nil {
		return nil, err
	}
	name, b, err := loadBundle(ctx, cfg.Bundle)
	if err != nil {
		return nil, err
	}
	query, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.ParsedBundle(name, b),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{logger: logger}),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile bundle %s: %w", bundleLabel(cfg.Bundle, name), err)
	}
	if !definesDocument(b, ref) {
		logger.Warn("no rule defines the decision; requests are denied unless bundle data provides it",
			"decision", ref.String(), "bundle", name)
	}
	e := &Engine{
		cache:   newValueCache(8192),
		query:   query,
		ref:     ref,
		path:    path,
		bundles: map[string]decision.Bundle{name: {Revision: b.Manifest.Revision}},
		logger:  logger,
	}
	logger.Debug("policy bundle loaded", "bundle", name, "revision", b.Manifest.Revision, "decision", path)
	return e, nil
}

// Bundles returns the active bundle's name and revision.
func (e *Engine) Bundles() map[string]decision.Bundle {
	return maps.Clone(e.bundles)
}

// Path returns the decision's data path in slash form, e.g. "regate/decision".
func (e *Engine) Path() string {
	return e.path
}

// loadBundle reads the configured bundle, or the embedded default library
// when path is empty, and returns it with its name.
func loadBundle(ctx context.Context, path string) (string, *bundle.Bundle, error) {
	if path == "" {
		rev, err := defaultRevision()
		if err != nil {
			return "", nil, err
		}
		b, err := bundles.LoadFS(Default(), rev)
		if err != nil {
			return "", nil, fmt.Errorf("default library: %w", err)
		}
		return DefaultBundleName, b, nil
	}
	b, err := bundles.Load(ctx, path)
	if err != nil {
		return "", nil, err
	}
	return filepath.Base(filepath.Clean(path)), b, nil
}

// definesDocument tells whether a rule of b defines the document at ref, a
// document inside it or one of its parents.
func definesDocument(b *bundle.Bundle, ref ast.Ref) bool {
	for _, mf := range b.Modules {
		if mf.Parsed == nil {
			continue
		}
		for _, rule := range mf.Parsed.Rules {
			p := mf.Parsed.Package.Path.Extend(rule.Head.Ref().GroundPrefix())
			if p.HasPrefix(ref) || ref.HasPrefix(p) {
				return true
			}
		}
	}
	return false
}

func bundleLabel(path, name string) string {
	if path == "" {
		return name
	}
	return path
}
