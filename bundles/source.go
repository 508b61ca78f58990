package bundles

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opaconfig "github.com/open-policy-agent/opa/v1/config"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"github.com/open-policy-agent/opa/v1/util"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Local bundles, by name, activated once at start (a directory or
	// .tar.gz read with Load, or the embedded library).
	Local map[string]*bundle.Bundle
	// OPA is OPA's own configuration (services, bundles, keys, labels,
	// decision_logs, persistence_directory, discovery, ...) as JSON or YAML,
	// passed to OPA's plugin manager as-is. Empty for none.
	OPA []byte
	// ID names this gateway in OPA (decision-log and status labels).
	ID string
	// Logger receives OPA's plugin logs (downloads, signature checks,
	// activations); nil discards them.
	Logger hclog.Logger
	// PrintHook receives the output of Rego print() calls.
	PrintHook print.Hook
}

// RemoteBundles tells whether the OPA configuration makes OPA fetch bundles
// (bundles, the legacy bundle key, or discovery). When it does, the caller
// usually loads no local bundle.
func RemoteBundles(raw []byte, id string) (bool, error) {
	if len(raw) == 0 {
		return false, nil
	}
	c, err := opaconfig.ParseConfig(raw, id)
	if err != nil {
		return false, err
	}
	return c.Bundle != nil || c.Bundles != nil || c.Discovery != nil, nil
}

// Source is where the active bundles come from: OPA's plugin manager, which
// activates local bundles at start and, with the bundle plugin, downloads
// (ETag, polling, long polling), verifies (.signatures.json against the
// configured keys), compiles and activates bundles from bundle services. A
// bundle that fails any step is never activated; the previous one stays.
//
// Policies evaluate against Store() with Compiler(); OnActivate tells them
// when a new set of bundles is active.
type Source struct {
	manager *plugins.Manager
	raw     []byte

	mu       sync.Mutex
	statuses map[string]bundleplugin.Status
	failures atomic.Int64
}

// NewSource creates the plugin manager and activates the local bundles. A
// local bundle that does not compile, or an OPA configuration OPA rejects,
// is an error. Register OnActivate, then call Start.
func NewSource(ctx context.Context, cfg SourceConfig) (*Source, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	raw := cfg.OPA
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	oplog := newOPALogger(log)
	opts := []func(*plugins.Manager){
		plugins.Logger(oplog),
		plugins.ConsoleLogger(oplog),
		plugins.WithParserOptions(ast.ParserOptions{ProcessAnnotation: true, RegoVersion: ast.RegoV1}),
		plugins.EnablePrintStatements(cfg.PrintHook != nil),
	}
	if cfg.PrintHook != nil {
		opts = append(opts, plugins.PrintHook(cfg.PrintHook))
	}
	if len(cfg.Local) > 0 {
		opts = append(opts, plugins.InitBundles(cfg.Local))
	}
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	m, err := plugins.New(raw, cfg.ID, store, opts...)
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	if err := m.Init(ctx); err != nil {
		return nil, err
	}
	return &Source{manager: m, raw: raw, statuses: map[string]bundleplugin.Status{}}, nil
}

// OnActivate registers fn to run whenever a new set of bundles (or data) is
// activated, inside the activating transaction's commit: the store is locked
// against readers until fn returns, so a reader that opened its transaction
// after the commit sees both the new data and whatever fn installed. fn
// must not open transactions of its own; it reads through txn.
func (s *Source) OnActivate(fn func(ctx context.Context, txn storage.Transaction)) {
	s.manager.RegisterCompilerTrigger(func(txn storage.Transaction) { fn(context.Background(), txn) })
}

// Start starts OPA's plugins (bundle downloads, decision logs, status).
func (s *Source) Start(ctx context.Context) error {
	var boot map[string]any
	// JSON or YAML, as plugins.New accepted it (the SDK decodes it the same
	// way); only discovery reads it.
	if err := util.Unmarshal(s.raw, &boot); err != nil {
		return fmt.Errorf("policy.opa: %w", err)
	}
	d, err := discovery.New(s.manager, discovery.BootConfig(boot))
	if err != nil {
		return fmt.Errorf("policy.opa: %w", err)
	}
	s.manager.Register(discovery.Name, d)
	if bp := bundleplugin.Lookup(s.manager); bp != nil {
		bp.Register("regate", s.bundleStatus)
	}
	if err := s.manager.Start(ctx); err != nil {
		return fmt.Errorf("policy.opa: start OPA plugins: %w", err)
	}
	return nil
}

// Manager is OPA's plugin manager (for plugins such as decision logs).
func (s *Source) Manager() *plugins.Manager { return s.manager }

// Store is the store the active bundles' data and policies live in.
func (s *Source) Store() storage.Store { return s.manager.Store }

// Compiler is the compiler of the active bundles' policies.
func (s *Source) Compiler() *ast.Compiler { return s.manager.GetCompiler() }

// Active returns the name and revision of every active bundle, as recorded
// in txn.
func (s *Source) Active(ctx context.Context, txn storage.Transaction) (map[string]string, error) {
	store := s.manager.Store
	names, err := bundle.ReadBundleNamesFromStore(ctx, store, txn)
	if err != nil && !storage.IsNotFound(err) {
		return nil, fmt.Errorf("read active bundles: %w", err)
	}
	active := make(map[string]string, len(names))
	for _, name := range names {
		rev, err := bundle.ReadBundleRevisionFromStore(ctx, store, txn, name)
		if err != nil && !storage.IsNotFound(err) {
			return nil, fmt.Errorf("read revision of bundle %q: %w", name, err)
		}
		active[name] = rev
	}
	return active, nil
}

// bundleStatus keeps the bundle plugin's latest status per bundle.
func (s *Source) bundleStatus(st bundleplugin.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.Code != "" {
		s.failures.Add(1)
	}
	s.statuses[st.Name] = st
}

// ReportLocal records the outcome of reloading a local bundle (Replace or a
// failure to read it) in the statuses and failure count, as the bundle
// plugin does for remote bundles.
func (s *Source) ReportLocal(name, activeRevision string, err error) {
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.statuses[name]
	st.Name, st.LastRequest = name, now
	if err != nil {
		s.failures.Add(1)
		st.Code, st.Message, st.Errors = "bundle_error", err.Error(), nil
	} else {
		st.Code, st.Message, st.Errors = "", "", nil
		st.ActiveRevision, st.LastSuccessfulRequest, st.LastSuccessfulDownload, st.LastSuccessfulActivation = activeRevision, now, now, now
	}
	s.statuses[name] = st
}

// Failures counts failed attempts to download, verify, compile or activate
// a remote bundle, and failed reloads of a local one (ReportLocal).
func (s *Source) Failures() int64 { return s.failures.Load() }

// Status is one remote bundle's status, as OPA's bundle plugin reports it.
type Status struct {
	Name                     string    `json:"name"`
	ActiveRevision           string    `json:"active_revision,omitempty"`
	LastRequest              time.Time `json:"last_request,omitzero"`
	LastSuccessfulRequest    time.Time `json:"last_successful_request,omitzero"`
	LastSuccessfulDownload   time.Time `json:"last_successful_download,omitzero"`
	LastSuccessfulActivation time.Time `json:"last_successful_activation,omitzero"`
	// Code and Message describe the last failure ("" when the last attempt succeeded).
	Code    string   `json:"code,omitempty"`
	Message string   `json:"message,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

// Statuses returns the status of every remote bundle, by name.
func (s *Source) Statuses() []Status {
	s.mu.Lock()
	out := make([]Status, 0, len(s.statuses))
	for _, st := range s.statuses {
		bs := Status{
			Name: st.Name, ActiveRevision: st.ActiveRevision, LastRequest: st.LastRequest,
			LastSuccessfulRequest: st.LastSuccessfulRequest, LastSuccessfulDownload: st.LastSuccessfulDownload,
			LastSuccessfulActivation: st.LastSuccessfulActivation, Code: st.Code, Message: st.Message,
		}
		for _, err := range st.Errors {
			bs.Errors = append(bs.Errors, err.Error())
		}
		out = append(out, bs)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Plugins returns the state of each OPA plugin (OK, NOT_READY, ERROR, WARN),
// and whether the bundle plugin, if any, has activated every bundle once.
func (s *Source) Plugins() (map[string]string, bool) {
	ready := true
	ps := s.manager.PluginStatus()
	if len(ps) == 0 {
		return nil, ready
	}
	out := map[string]string{}
	for name, st := range ps {
		if st == nil {
			continue
		}
		out[name] = string(st.State)
		if name == bundleplugin.Name && st.State != plugins.StateOK {
			ready = false
		}
	}
	return out, ready
}

// NotActivated describes the remote bundles never activated yet, with their
// last error, e.g. "authz (server replied with not found)".
func (s *Source) NotActivated() string {
	var waiting []string
	for _, b := range s.Statuses() {
		if b.LastSuccessfulActivation.IsZero() {
			msg := b.Name
			if b.Message != "" {
				msg += " (" + b.Message + ")"
			}
			waiting = append(waiting, msg)
		}
	}
	return strings.Join(waiting, ", ")
}

// Close stops OPA's plugins.
func (s *Source) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.manager.Stop(ctx)
}

// Replace activates b as the bundle name (a local bundle read again, e.g. on
// SIGHUP), exactly as OPA's bundle plugin activates a downloaded one: it is
// compiled with the other active bundles, its roots are checked against
// theirs, and it replaces the previous version in one transaction. On any
// error nothing changes.
func (s *Source) Replace(ctx context.Context, name string, b *bundle.Bundle) error {
	store := s.manager.Store
	params := storage.WriteParams
	params.Context = storage.NewContext()
	return storage.Txn(ctx, store, params, func(txn storage.Transaction) error {
		compiler := ast.NewCompiler().
			WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
			WithEnablePrintStatements(s.manager.EnablePrintStatements())
		if b.Manifest.Roots != nil {
			compiler = compiler.WithPathConflictsCheckRoots(*b.Manifest.Roots)
		}
		err := bundle.Activate(&bundle.ActivateOpts{
			Ctx: ctx, Store: store, Txn: txn, TxnCtx: params.Context, Compiler: compiler,
			Metrics: metrics.New(), Bundles: map[string]*bundle.Bundle{name: b},
			ParserOptions: s.manager.ParserOptions(),
		})
		if err != nil {
			return err
		}
		plugins.SetCompilerOnContext(params.Context, compiler)
		return nil
	})
}
