package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/regate from this checkout once per test process (or uses
// $REGATE_BIN) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("REGATE_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "regate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "regate")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/regate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Gateway is a running `regate serve`.
type Gateway struct {
	Dir    string
	Config string
	Listen string
	Store  string
	logs   *syncBuffer
	cmd    *exec.Cmd
}

// Logs returns what regate has logged so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Signal sends sig to the gateway process.
func (g *Gateway) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// GatewayOptions describe one postgres target in front of pg.
type GatewayOptions struct {
	Issuer   string
	Audience string
	Bundle   string // "" for the embedded default library
	Decision string // the decision path; "regate/decision" when empty
	Labels   string // YAML flow mapping, e.g. "{env: prod}"
	Extra    string // extra YAML appended to the target
	Global   string // extra top-level YAML (admin:, approval:)
	Policy   string // extra YAML under policy:, indented by two spaces (opa:, ready_timeout:)
	Store    string // the store URL; "" for a new store in the gateway's directory
}

// StartGateway writes a config file as a user would and runs `regate serve`.
func StartGateway(t testing.TB, pg *Postgres, o GatewayOptions) *Gateway {
	t.Helper()
	dir := t.TempDir()
	g := &Gateway{Dir: dir, Listen: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), logs: &syncBuffer{}}
	g.Store = o.Store
	if g.Store == "" {
		g.Store = "sqlite://" + filepath.Join(dir, "regate.db")
	}
	if o.Labels == "" {
		o.Labels = "{env: test}"
	}
	if o.Decision == "" {
		o.Decision = "regate/decision"
	}
	bundle := ""
	if o.Bundle != "" {
		bundle = "  bundle: " + o.Bundle + "\n"
	}
	cfg := fmt.Sprintf(`%s
identity:
  oidc: {issuer: %q, audience: %q}
policy:
%s  decision: %s
%s
store: {url: %q}
targets:
  - name: app-db
    protocol: postgres
    listen: %s
    upstream: %s
    labels: %s
    credentials: {user: %s, password: "${TEST_APP_PASSWORD}"}
%s`, o.Global, o.Issuer, o.Audience, bundle, o.Decision, o.Policy, g.Store, g.Listen, pg.Addr(), o.Labels, pg.AppUser, o.Extra)
	g.Config = filepath.Join(dir, "regate.yaml")
	if err := os.WriteFile(g.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cmd = exec.CommandContext(ctx, Binary(t), "serve", "--config", g.Config, "--log-level", "debug")
	g.cmd.Env = append(os.Environ(), "TEST_APP_PASSWORD="+pg.AppPassword)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	g.cmd.Cancel = func() error { return g.cmd.Process.Signal(os.Interrupt) }
	g.cmd.WaitDelay = 10 * time.Second
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = g.cmd.Wait()
		if t.Failed() {
			t.Logf("regate logs:\n%s", g.Logs())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", g.Listen, 200*time.Millisecond); err == nil {
			c.Close()
			return g
		}
		if g.cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("regate did not start listening on %s:\n%s", g.Listen, g.Logs())
	return nil
}

// Run runs a regate CLI command and returns its stdout, stderr and exit code.
func Run(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		t.Fatalf("regate %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), 0
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
