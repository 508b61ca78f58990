package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/cmd/regate/config"
	"github.com/regate/regate/parse"
	"github.com/regate/regate/parse/sql"
	"github.com/regate/regate/policies"
	"github.com/regate/regate/proxy"
	"github.com/regate/regate/proxy/approval"
	"github.com/regate/regate/proxy/identity"
	"github.com/regate/regate/proxy/postgres"
	"github.com/regate/regate/recorder"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "serve --config FILE", stderr)
	cfgPath := fs.String("config", "", "configuration file (required)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("serve: --config is required")}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	return runGateway(ctx, cfg, newLogger(stderr, *logLevel, *logJSON), nil)
}

func newLogger(w io.Writer, level string, json bool) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: "regate", Output: w, Level: hclog.LevelFromString(level), JSONFormat: json,
	})
}

// The engine takes the input's encoding from the pipeline: its memo finds
// decisions by it.
var _ proxy.EncodedDecider = (*policies.Engine)(nil)

// runGateway wires the pipeline from cfg and serves every target until ctx is
// done. ready, when set, is called once every listener is open.
func runGateway(ctx context.Context, cfg *config.Config, log hclog.Logger, ready func()) error {
	store, err := recorder.Open(ctx, cfg.Store.URL, log.Named("recorder"))
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer store.Close()
	verifier, err := identity.New(ctx, identity.Config{
		Issuer: cfg.Identity.OIDC.Issuer, Audience: cfg.Identity.OIDC.Audience,
		GroupsClaim: cfg.Identity.OIDC.GroupsClaim, Logger: log.Named("identity"),
	})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	engine, err := newEngine(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer engine.Close()
	pipe := &proxy.Pipeline{Auth: verifier, Decider: engine, Recorder: store, Logger: log.Named("proxy")}
	broker, err := newBroker(cfg, store, log)
	if err != nil {
		return err
	}
	pipe.Approvals = broker
	parser := sql.NewParser(0)

	var listeners []net.Listener
	var servers []*postgres.Server
	closeAll := func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}
	for _, t := range cfg.Targets {
		srv, err := newPostgresServer(t, pipe, parser, log)
		if err != nil {
			closeAll()
			return err
		}
		ln, err := listenTCP(t.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("target %q: %w", t.Name, err)
		}
		listeners, servers = append(listeners, ln), append(servers, srv)
		log.Info("target listening", "target", t.Name, "protocol", t.Protocol, "listen", ln.Addr().String(),
			"upstream", t.Upstream, "tls", t.TLS != nil)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(servers)+1)
	if cfg.Admin.Listen != "" {
		admin := adminHandler(engine, store, approval.Handler(broker, verifier, log.Named("approval")))
		if err := startAdmin(ctx, &wg, cfg.Admin.Listen, admin, log, errs); err != nil {
			closeAll()
			return err
		}
	}
	reloadOnHangup(ctx, &wg, engine, log)
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, listeners[i]); err != nil {
				errs <- err
			}
		}()
	}
	if ready != nil {
		ready()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errs:
		log.Error("a listener failed; shutting down", "error", runErr)
	}
	cancel()
	wg.Wait()
	return runErr
}

func newPostgresServer(t config.Target, pipe *proxy.Pipeline, parser *sql.Parser, log hclog.Logger) (*postgres.Server, error) {
	pc := postgres.Config{
		Target:      parse.Target{Name: t.Name, Protocol: t.Protocol, Labels: t.Labels},
		Upstream:    t.Upstream,
		Credentials: postgres.Credentials{User: t.Credentials.User, Password: t.Credentials.Password},
		Pipeline:    pipe, Parser: parser, MaxMessageSize: t.MaxMessageSize, ClientUsers: t.ClientUsers,
		Logger: log.Named("postgres").With("target", t.Name),
	}
	if pc.Target.Labels == nil {
		pc.Target.Labels = map[string]string{}
	}
	if t.TLS != nil {
		cert, err := tls.LoadX509KeyPair(t.TLS.Cert, t.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("target %q: tls: %w", t.Name, err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		loop, _ := config.IsLoopback(t.Listen)
		pc.RequireTLS = !loop
	}
	if t.UpstreamTLS != nil {
		tc, err := upstreamTLS(t)
		if err != nil {
			return nil, err
		}
		pc.UpstreamTLS = tc
	}
	return postgres.New(pc)
}

func upstreamTLS(t config.Target) (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(t.Upstream)
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if t.UpstreamTLS.ServerName != "" {
		tc.ServerName = t.UpstreamTLS.ServerName
	}
	if t.UpstreamTLS.CA != "" {
		pem, err := os.ReadFile(t.UpstreamTLS.CA)
		if err != nil {
			return nil, fmt.Errorf("target %q: upstream_tls.ca: %w", t.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("target %q: upstream_tls.ca: no PEM certificate in %s", t.Name, t.UpstreamTLS.CA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// reloadOnHangup reads policy.bundle again on every SIGHUP and activates it
// without dropping a connection; a bundle that does not load or compile is
// logged and the previous one stays in force.
func reloadOnHangup(ctx context.Context, wg *sync.WaitGroup, engine *policies.Engine, log hclog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				name, rev, err := engine.Reload(ctx)
				if err != nil {
					log.Error("SIGHUP: policy bundle not reloaded; the previous one stays in force", "bundle", name, "error", err)
					continue
				}
				log.Info("SIGHUP: policy bundle reloaded", "bundle", name, "revision", rev)
			}
		}
	}()
}

// newEngine starts the policy engine and, when policy.opa configures bundles,
// waits up to policy.ready_timeout for them to be activated. Until one is,
// every request is denied ("no policy bundle is active yet").
func newEngine(ctx context.Context, cfg *config.Config, log hclog.Logger) (*policies.Engine, error) {
	var opa []byte
	if cfg.Policy.OPA != nil {
		var err error
		if opa, err = json.Marshal(cfg.Policy.OPA); err != nil {
			return nil, fmt.Errorf("policy.opa: %w", err)
		}
	}
	engine, err := policies.New(ctx, policies.Config{
		Bundle: cfg.Policy.Bundle, Decision: cfg.Policy.Decision, OPA: opa, Logger: log.Named("policy"),
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	wait := cfg.Policy.ReadyTimeout
	if wait == 0 {
		wait = 30 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := engine.WaitReady(wctx); err != nil {
		log.Warn("serving before the policy is ready: requests are denied until a bundle is active", "error", err)
	}
	for name, b := range engine.Bundles() {
		log.Info("policy bundle active", "bundle", name, "revision", b.Revision)
	}
	return engine, nil
}

// newBroker builds the approval broker on the store.
func newBroker(cfg *config.Config, store recorder.Store, log hclog.Logger) (*approval.Broker, error) {
	n := &approval.Notifier{Logger: log.Named("notify")}
	for _, h := range cfg.Approval.Notify {
		n.Hooks = append(n.Hooks, approval.Webhook{URL: h.URL, Format: h.Format})
	}
	return approval.New(approval.Config{
		Store: store, Wait: cfg.Approval.Wait, TTL: cfg.Approval.TTL,
		Notify: n.Notify, Logger: log.Named("approval"),
	})
}

// adminHandler serves /healthz, /v1/status, /metrics and the approval API.
func adminHandler(engine *policies.Engine, store recorder.Store, approvals http.Handler) http.Handler {
	stats := func() *recorder.Stats {
		if r, ok := store.(recorder.StatsReporter); ok {
			st := r.Stats()
			return &st
		}
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "bundles": engine.Bundles()})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"policy": engine.Status(), "recorder": stats()})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := engine.WriteMetrics(w); err != nil {
			return
		}
		if st := stats(); st != nil {
			_ = writeRecorderMetrics(w, *st)
		}
	})
	mux.Handle("/v1/approvals", approvals)
	mux.Handle("/v1/approvals/", approvals)
	if os.Getenv("REGATE_PPROF") == "1" { // profiling, on the loopback admin listener only
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// writeRecorderMetrics writes the store's write path in Prometheus' text format.
func writeRecorderMetrics(w io.Writer, st recorder.Stats) error {
	_, err := fmt.Fprintf(w, `# HELP regate_recorder_events_appended_total Events recorded (made durable in the journal) since start.
# TYPE regate_recorder_events_appended_total counter
regate_recorder_events_appended_total %d
# HELP regate_recorder_backlog_events Events in the journal not yet copied into the database.
# TYPE regate_recorder_backlog_events gauge
regate_recorder_backlog_events %d
# HELP regate_recorder_journal_bytes Size of the store's journal.
# TYPE regate_recorder_journal_bytes gauge
regate_recorder_journal_bytes %d
# HELP regate_recorder_copy_failures_total Failed copies of the journal into the database (each is retried).
# TYPE regate_recorder_copy_failures_total counter
regate_recorder_copy_failures_total %d
`, st.Appended, st.Backlog, st.JournalBytes, st.CopyFailures)
	return err
}

// listenTCP listens on addr in the address family its host is written in
// (listenNetwork).
func listenTCP(addr string) (net.Listener, error) {
	return net.Listen(listenNetwork(addr), addr)
}

// listenNetwork: Go's "tcp" turns the IPv4 wildcard 0.0.0.0 into a
// dual-stack [::] that also accepts IPv6 connections, which whoever wrote
// 0.0.0.0 did not ask for; an IPv4 literal listens on "tcp4", an IPv6 one
// on "tcp6", a name (localhost) on "tcp".
func listenNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	switch {
	case err != nil || ip == nil:
		return "tcp"
	case ip.To4() != nil:
		return "tcp4"
	}
	return "tcp6"
}

// startAdmin serves the admin API on its loopback listener.
func startAdmin(ctx context.Context, wg *sync.WaitGroup, addr string, mux http.Handler, log hclog.Logger, errs chan<- error) error {
	ln, err := listenTCP(addr)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("admin API listening", "listen", ln.Addr().String())
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("admin API: %w", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return nil
}
