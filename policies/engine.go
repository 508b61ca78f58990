package policies

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"

	"github.com/regate/regate/bundles"
	"github.com/regate/regate/policies/decision"
)

// Config configures an Engine.
type Config struct {
	// Bundle is a directory or .tar.gz loaded once at start. When empty, the
	// embedded default library is loaded, unless OPA configures bundles (or
	// discovery), in which case only those are active.
	Bundle string
	// Unverified loads Bundle without checking a .signatures.json it may
	// have; for candidates evaluated locally (what-if), never for serving.
	Unverified bool
	// Decision is the data path of the decision, "regate/decision" when empty
	// ("data.regate.decision" and "/regate/decision" are accepted too).
	Decision string
	// OPA is OPA's own configuration (services, bundles, keys, labels,
	// decision_logs, persistence_directory, ...) as JSON or YAML, passed to
	// OPA's plugin manager as-is. Empty for none.
	OPA []byte
	// ID names this gateway in OPA (decision-log and status labels); "regate"
	// when empty.
	ID string
	// Logger receives load and activation messages, OPA's plugin logs and the
	// output of Rego print() calls (at debug level); nil means
	// hclog.NewNullLogger().
	Logger hclog.Logger
}

// Engine evaluates the decision against the active bundles. It is safe for
// concurrent use. Bundles come from a bundles.Source (OPA's plugin manager):
// when it activates a new revision (downloaded, signature-checked and
// compiled by OPA's bundle plugin), the engine prepares the decision query
// on it and swaps it in atomically, so the next Decide uses it and no caller
// ever sees a half-activated policy. A bundle that fails to download,
// verify, compile or activate leaves the previous one in force.
type Engine struct {
	ref    ast.Ref
	path   string
	logger hclog.Logger
	cache  *valueCache
	source *bundles.Source
	store  storage.Store
	gen    atomic.Pointer[generation]
	dlogs  *logs.Plugin // OPA decision logs, when configured

	// memo holds decisions that do not depend on the parameters or time of
	// a request (see decisionMemo); epoch counts the store's commits.
	memo  *decisionMemo
	epoch atomic.Uint64

	metrics  metrics
	stopOnce sync.Once

	// local is policy.bundle's path ("" for none or the embedded library)
	// and localName the name it is active under; Reload reads it again.
	local, localName string
	unverified       bool
	reloadMu         sync.Mutex
}

// generation is one activated policy: the prepared query compiled from the
// active bundles, and their revisions.
type generation struct {
	query     rego.PreparedEvalQuery
	bundles   map[string]decision.Bundle
	activated time.Time

	// memoizable: the memo may serve this generation's decisions (no
	// module calls a non-deterministic built-in or print).
	memoizable bool
}

// New loads the configured bundles and prepares the decision query. A local
// bundle that fails to load or compile is an error naming the file and line;
// bundles from an OPA bundle service arrive in the background (see WaitReady).
func New(ctx context.Context, cfg Config) (*Engine, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	ref, path, err := decisionRef(cfg.Decision)
	if err != nil {
		return nil, err
	}
	id := cfg.ID
	if id == "" {
		id = "regate"
	}
	remote, err := bundles.RemoteBundles(cfg.OPA, id)
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	local := map[string]*bundle.Bundle{}
	label, localName := "", ""
	if cfg.Bundle != "" || !remote {
		name, b, err := loadBundle(ctx, cfg.Bundle, cfg.Unverified)
		if err != nil {
			return nil, err
		}
		local[name], label, localName = b, bundleLabel(cfg.Bundle, name), name
	}
	src, err := bundles.NewSource(ctx, bundles.SourceConfig{
		Local: local, OPA: cfg.OPA, ID: id, Logger: logger.Named("opa"), PrintHook: printHook{logger: logger},
	})
	if err != nil {
		if label != "" {
			return nil, fmt.Errorf("compile bundle %s: %w", label, err)
		}
		return nil, err
	}
	e := &Engine{ref: ref, path: path, logger: logger, cache: newValueCache(8192), source: src, store: src.Store(),
		memo: newDecisionMemo(memoSize), local: cfg.Bundle, localName: localName, unverified: cfg.Unverified}
	src.OnActivate(func(ctx context.Context, txn storage.Transaction) {
		if err := e.activate(ctx, txn); err != nil {
			e.metrics.swapFailures.Add(1)
			e.logger.Error("cannot prepare the decision query on the new bundles; the previous ones stay in force", "error", err)
		}
	})
	if err := storage.Txn(ctx, e.store, storage.TransactionParams{Write: true}, func(txn storage.Transaction) error {
		// Every commit (bundles, data-only bundles, any write) starts a new
		// epoch: memoized decisions never outlive the data they were made on.
		if _, err := e.store.Register(ctx, txn, storage.TriggerConfig{
			SkipDataConversion: true,
			OnCommit:           func(context.Context, storage.Transaction, storage.TriggerEvent) { e.epoch.Add(1) },
		}); err != nil {
			return err
		}
		return e.activate(ctx, txn)
	}); err != nil {
		src.Close()
		return nil, err
	}
	if err := src.Start(ctx); err != nil {
		src.Close()
		return nil, err
	}
	e.dlogs = logs.Lookup(src.Manager())
	return e, nil
}

// activate prepares the decision query on the source's current compiler and
// the bundles recorded in txn, and makes it the active generation.
func (e *Engine) activate(ctx context.Context, txn storage.Transaction) error {
	compiler := e.source.Compiler()
	if compiler == nil {
		return errors.New("no compiler")
	}
	revs, err := e.source.Active(ctx, txn)
	if err != nil {
		return err
	}
	active := make(map[string]decision.Bundle, len(revs))
	for name, rev := range revs {
		active[name] = decision.Bundle{Revision: rev}
	}
	// Both queries are prepared on the new compiler, in the activating
	// transaction.
	on := func(opts ...func(*rego.Rego)) *rego.Rego {
		return rego.New(append(opts,
			rego.Compiler(compiler),
			rego.Store(e.store),
			rego.Transaction(txn),
			rego.SetRegoVersion(ast.RegoV1),
			rego.StrictBuiltinErrors(true),
		)...)
	}
	query, err := on(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(e.ref)))),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{logger: e.logger}),
	).PrepareForEval(ctx)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", e.ref, err)
	}
	if len(active) > 0 && !definesDocument(compiler, e.ref) {
		e.logger.Warn("no rule defines the decision; requests are denied unless bundle data provides it",
			"decision", e.ref.String(), "bundles", active)
	}
	prev := e.gen.Swap(&generation{query: query, bundles: active, activated: time.Now(), memoizable: memoizable(compiler)})
	e.metrics.activations.Add(1)
	if prev != nil {
		for name, b := range active {
			if prev.bundles[name] != b {
				e.logger.Info("policy bundle activated", "bundle", name, "revision", b.Revision,
					"previous_revision", prev.bundles[name].Revision)
			}
		}
	}
	return nil
}

// Reload reads the local bundle (policy.bundle) again and activates it
// atomically, as a downloaded revision would be (serve does this on SIGHUP).
// A bundle that fails to load or compile is an error and the previous one
// stays in force. It returns the bundle's name and new revision; without a
// local bundle it is an error. The embedded library never changes.
func (e *Engine) Reload(ctx context.Context) (name, revision string, err error) {
	if e.local == "" {
		return "", "", errors.New("no local bundle to reload (policy.bundle is not set)")
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	_, b, err := loadBundle(ctx, e.local, e.unverified)
	if err == nil {
		if err = e.source.Replace(ctx, e.localName, b); err != nil {
			err = fmt.Errorf("compile bundle %s: %w", e.local, err)
		}
	}
	if err != nil {
		e.source.ReportLocal(e.localName, "", err)
		return e.localName, "", err
	}
	e.source.ReportLocal(e.localName, b.Manifest.Revision, nil)
	return e.localName, b.Manifest.Revision, nil
}

// Bundles returns the active bundles' names and revisions.
func (e *Engine) Bundles() map[string]decision.Bundle {
	return maps.Clone(e.gen.Load().bundles)
}

// Path returns the decision's data path in slash form, e.g. "regate/decision".
func (e *Engine) Path() string {
	return e.path
}

// Close stops OPA's plugins (bundle polling, decision-log uploads).
func (e *Engine) Close() {
	e.stopOnce.Do(e.source.Close)
}

// loadBundle reads the configured bundle, or the embedded default library
// when path is empty, and returns it with its name.
func loadBundle(ctx context.Context, path string, unverified bool) (string, *bundle.Bundle, error) {
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
	load := bundles.Load
	if unverified {
		load = bundles.LoadUnverified
	}
	b, err := load(ctx, path)
	if err != nil {
		return "", nil, err
	}
	return filepath.Base(filepath.Clean(path)), b, nil
}

// definesDocument tells whether a rule of the compiled modules defines the
// document at ref, a document inside it or one of its parents.
func definesDocument(c *ast.Compiler, ref ast.Ref) bool {
	for _, mod := range c.Modules {
		for _, rule := range mod.Rules {
			p := mod.Package.Path.Extend(rule.Head.Ref().GroundPrefix())
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
