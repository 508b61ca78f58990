package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/regate/regate/cmd/regate/config"
	"github.com/regate/regate/proxy/identity/devidp"
)

// devState is what a running `regate dev` tells the other commands.
type devState struct {
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	Store    string `json:"store"`
	Listen   string `json:"listen"`
	Admin    string `json:"admin,omitempty"`
	PID      int    `json:"pid"`
}

func devStatePath() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("regate-dev-%d", os.Getuid()), "state.json")
}

func readDevState() (*devState, error) {
	b, err := os.ReadFile(devStatePath())
	if err != nil {
		return nil, fmt.Errorf("no running 'regate dev' found (%w)", err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", devStatePath(), err)
	}
	return &st, nil
}

const devBanner = `
 ██████████████████████████████████████████████████████████████████████████
   regate dev: DEVELOPMENT MODE. NOT FOR PRODUCTION.
   A built-in OIDC issuer on %s mints a token for anyone who asks
   on this machine. Use 'regate serve --config FILE' with your real identity provider.
 ██████████████████████████████████████████████████████████████████████████
`

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "dev [flags]", stderr)
	listen := fs.String("listen", "127.0.0.1:6432", "where psql connects (loopback only)")
	upstream := fs.String("upstream", "127.0.0.1:5432", "the PostgreSQL server regate fronts")
	upUser := fs.String("upstream-user", "postgres", "the role regate logs in to the upstream as")
	upPass := fs.String("upstream-password", "", "its password (or set REGATE_DEV_UPSTREAM_PASSWORD)")
	issuerAddr := fs.String("issuer-listen", "127.0.0.1:0", "the development OIDC issuer's address (loopback only)")
	bundle := fs.String("bundle", "", "policy bundle directory or .tar.gz (default: the embedded library)")
	opaFile := fs.String("opa", "", "OPA configuration file (YAML or JSON: services, bundles, keys, ...), as policy.opa of serve")
	decisionPath := fs.String("decision", "", "data path of the decision (default regate/decision)")
	admin := fs.String("admin", "127.0.0.1:8080", "admin API address (approvals, /healthz); a free port when it is taken; \"\" for none")
	dataDir := fs.String("data", "", "directory for the SQLite store (default: a new temp dir)")
	labels := fs.String("labels", "env=dev", "target labels, comma-separated key=value")
	logLevel := fs.String("log-level", "info", "log level")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if loop, err := config.IsLoopback(*listen); err != nil || !loop {
		return fmt.Errorf("dev: --listen %s must be a loopback address", *listen)
	}
	if *upPass == "" {
		*upPass = os.Getenv("REGATE_DEV_UPSTREAM_PASSWORD")
	}
	if *admin != "" {
		*admin = availableAddr(*admin)
	}
	log := newLogger(stderr, *logLevel, false)
	idp, err := devidp.Start(ctx, *issuerAddr, log.Named("devidp"))
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer idp.Close()
	fmt.Fprintf(stderr, devBanner, idp.Issuer())
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "regate-dev-data-"); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	lbl, err := parseLabels(*labels)
	if err != nil {
		return fmt.Errorf("dev: --labels: %w", err)
	}
	var opa map[string]any
	if *opaFile != "" {
		if opa, err = config.LoadOPA(*opaFile); err != nil {
			return fmt.Errorf("dev: --opa: %w", err)
		}
	}
	cfg := &config.Config{
		Admin:    config.Admin{Listen: *admin},
		Identity: config.Identity{OIDC: config.OIDC{Issuer: idp.Issuer(), Audience: "regate"}},
		Policy:   config.Policy{Bundle: *bundle, OPA: opa, Decision: *decisionPath},
		Store:    config.Store{URL: "sqlite://" + filepath.Join(dir, "regate.db")},
		Targets: []config.Target{{
			Name: "dev-db", Protocol: "postgres", Listen: *listen, Upstream: *upstream, Labels: lbl,
			Credentials: config.Credentials{User: *upUser, Password: *upPass},
		}},
	}
	st := devState{Issuer: idp.Issuer(), Audience: "regate", Store: cfg.Store.URL, Listen: *listen, Admin: *admin, PID: os.Getpid()}
	ready := func() {
		if err := writeDevState(st); err != nil {
			log.Warn("cannot write the dev state file; 'regate token' will need --issuer", "error", err)
		}
		self := os.Args[0]
		fmt.Fprintf(stderr, devReady, idp.Issuer(), cfg.Store.URL, orNone(*admin), self, hostPort(*listen), self, self, self)
	}
	return runGateway(ctx, cfg, log, ready)
}

const devReady = `
regate dev is ready.
  issuer: %s
  store:  %s
  admin:  %s
Try it (in another shell):
  export PGPASSWORD="$(%s token --sub agent-7 --groups agents)"
  psql "%s dbname=postgres user=agent-7 sslmode=disable"
  postgres=> SELECT * FROM customers;      -- allowed
  postgres=> DROP TABLE customers;         -- blocked by the default policy (42501)
Then: %s sessions; %s replay <SESSION_ID>; %s verify
`

func hostPort(listen string) string {
	i := strings.LastIndexByte(listen, ':')
	return fmt.Sprintf("host=%s port=%s", listen[:i], listen[i+1:])
}

func writeDevState(st devState) error {
	p := devStatePath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token", "token --sub NAME [--groups a,b] [--email E] [--aud regate] [--ttl 1h]", stderr)
	sub := fs.String("sub", "", "the token's subject (required)")
	groups := fs.String("groups", "", "comma-separated groups")
	email := fs.String("email", "", "email claim")
	aud := fs.String("aud", "", "audience (default: the dev gateway's, regate)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (at most 24h)")
	issuer := fs.String("issuer", "", "the dev issuer URL (default: the running 'regate dev')")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *sub == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("token: --sub is required")}
	}
	if *issuer == "" || *aud == "" {
		st, err := readDevState()
		if err != nil {
			return fmt.Errorf("token: %w; start 'regate dev' or pass --issuer", err)
		}
		if *issuer == "" {
			*issuer = st.Issuer
		}
		if *aud == "" {
			*aud = st.Audience
		}
	}
	var gs []string
	for _, g := range strings.Split(*groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			gs = append(gs, g)
		}
	}
	tok, err := devidp.RequestToken(ctx, *issuer, *sub, gs, *email, *aud, *ttl)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// availableAddr returns addr when it can be listened on, else a free port on
// the same host (so several `regate dev` can run side by side).
func availableAddr(addr string) string {
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return addr
	}
	defer ln.Close()
	return ln.Addr().String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return "http://" + s
}
