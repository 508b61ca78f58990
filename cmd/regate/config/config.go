package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/regate/regate/proxy/identity"
)

// Config is the whole configuration file.
type Config struct {
	// Admin is the admin HTTP listener (/healthz). Optional: no admin listener when empty.
	Admin    Admin    `yaml:"admin"`
	Identity Identity `yaml:"identity" required:"true"`
	Policy   Policy   `yaml:"policy"`
	Store    Store    `yaml:"store" required:"true"`
	Targets  []Target `yaml:"targets"`
	Approval Approval `yaml:"approval"`
}

// Approval configures human approval of requests whose decision asks for it.
type Approval struct {
	// Wait is how long a command waits for a decision; 60s when zero.
	Wait time.Duration `yaml:"wait"`
	// TTL is how long a request stays open and a late approval stays usable; 15m when zero.
	TTL time.Duration `yaml:"ttl"`
	// Notify lists webhooks told of every new request.
	Notify []Notify `yaml:"notify"`
}

// Notify is one approval webhook.
type Notify struct {
	URL string `yaml:"url" required:"true" secret:"true"`
	// Format is json (default) or slack.
	Format string `yaml:"format"`
}

// Admin configures the admin API listener.
type Admin struct {
	Listen string `yaml:"listen"`
}

// Identity configures client authentication.
type Identity struct {
	OIDC OIDC `yaml:"oidc" required:"true"`
}

// OIDC is the token issuer regate trusts.
type OIDC struct {
	Issuer      string `yaml:"issuer" required:"true"`
	Audience    string `yaml:"audience" required:"true"`
	GroupsClaim string `yaml:"groups_claim"`
}

// Policy says where the bundle comes from and which decision to evaluate.
type Policy struct {
	// Bundle is a directory or .tar.gz; the embedded default library when empty.
	Bundle string `yaml:"bundle"`
	// Decision is the decision's data path; "regate/decision" when empty.
	Decision string `yaml:"decision"`
	// OPA is OPA's own configuration (services, bundles, keys, labels,
	// decision_logs, persistence_directory, ...), passed to OPA as-is.
	OPA map[string]any `yaml:"opa" secret:"true"`
	// ReadyTimeout is how long serve waits at start for the bundles of
	// policy.opa to be activated before it opens the listeners anyway
	// (denying every request until a bundle is active); 30s when zero.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
}

// Store is where events are recorded.
type Store struct {
	URL string `yaml:"url" required:"true"`
}

// Target is one protected system.
type Target struct {
	Name        string            `yaml:"name" required:"true"`
	Protocol    string            `yaml:"protocol" required:"true"`
	Listen      string            `yaml:"listen" required:"true"`
	Upstream    string            `yaml:"upstream" required:"true"`
	Labels      map[string]string `yaml:"labels"`
	Credentials Credentials       `yaml:"credentials" required:"true"`
	// ClientUsers are user names clients may ask for besides the target's
	// account (credentials.user) and their own identity; "*" accepts any.
	ClientUsers []string     `yaml:"client_users"`
	TLS         *TLS         `yaml:"tls"`
	UpstreamTLS *UpstreamTLS `yaml:"upstream_tls"`
	// MaxMessageSize bounds one client message in bytes; 16 MiB when 0.
	MaxMessageSize int `yaml:"max_message_size"`
}

// Credentials are what regate logs in to the target with.
type Credentials struct {
	User     string `yaml:"user" required:"true"`
	Password string `yaml:"password" secret:"true"`
}

// TLS is a listener certificate.
type TLS struct {
	Cert string `yaml:"cert" required:"true"`
	Key  string `yaml:"key" required:"true"`
}

// UpstreamTLS makes regate connect to the target with TLS, verifying its
// certificate against CA (the system roots when empty) and ServerName (the
// upstream host when empty).
type UpstreamTLS struct {
	CA         string `yaml:"ca"`
	ServerName string `yaml:"server_name"`
}

// Load reads, expands and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// LoadForStore reads a configuration file for the commands that only need
// store.url (sessions, replay, verify): an unset ${VAR} elsewhere, such as a
// target password, expands to "" instead of failing.
func LoadForStore(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	cfg, err := Parse(data, func(k string) (string, bool) { v, _ := os.LookupEnv(k); return v, true })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates a configuration document. lookup resolves ${VAR}.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var cfg Config
	if err := decode(data, &cfg, lookup); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) validate() error {
	if err := checkIssuer(c.Identity.OIDC.Issuer); err != nil {
		return fmt.Errorf("identity.oidc.issuer: %w", err)
	}
	if len(c.Targets) == 0 {
		return fmt.Errorf("targets: at least one target is required")
	}
	names := map[string]bool{}
	listens := map[string]string{}
	for i, t := range c.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		if names[t.Name] {
			return fmt.Errorf("%s.name: duplicate target name %q", p, t.Name)
		}
		names[t.Name] = true
		if t.Protocol != "postgres" {
			return fmt.Errorf("%s.protocol: %q is not supported (supported: postgres)", p, t.Protocol)
		}
		if other, ok := listens[t.Listen]; ok {
			return fmt.Errorf("%s.listen: %s is already used by target %q", p, t.Listen, other)
		}
		listens[t.Listen] = t.Name
		if _, _, err := net.SplitHostPort(t.Upstream); err != nil {
			return fmt.Errorf("%s.upstream: %q is not host:port", p, t.Upstream)
		}
		loop, err := IsLoopback(t.Listen)
		if err != nil {
			return fmt.Errorf("%s.listen: %w", p, err)
		}
		if !loop && t.TLS == nil {
			return fmt.Errorf("%s.tls: required because %s is not a loopback address", p, t.Listen)
		}
		for j, u := range t.ClientUsers {
			if u == "" {
				return fmt.Errorf("%s.client_users[%d]: empty user name", p, j)
			}
		}
	}
	for i, n := range c.Approval.Notify {
		if n.Format != "" && n.Format != "json" && n.Format != "slack" {
			return fmt.Errorf("approval.notify[%d].format: %q is not json or slack", i, n.Format)
		}
		if u, err := url.Parse(n.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("approval.notify[%d].url: not an http(s) URL", i)
		}
	}
	if c.Admin.Listen != "" {
		loop, err := IsLoopback(c.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin.listen: %w", err)
		}
		if !loop {
			return fmt.Errorf("admin.listen: %s is not a loopback address; the admin API only listens on loopback", c.Admin.Listen)
		}
	}
	return nil
}

// checkIssuer requires https, except for loopback development issuers.
func checkIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", issuer)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if loop, _ := IsLoopback(net.JoinHostPort(u.Hostname(), "0")); loop {
			return nil
		}
		return fmt.Errorf("%q must use https (plain http is accepted only on loopback)", issuer)
	}
	return fmt.Errorf("%q must be an https URL", issuer)
}

// IsLoopback reports whether a host:port listen address is on loopback.
func IsLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("%q is not host:port", addr)
	}
	return identity.IsLoopbackHost(host), nil
}

// LoadOPA reads a file of OPA configuration (YAML or JSON), as given under
// policy.opa, expanding ${VAR}.
func LoadOPA(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read OPA configuration: %w", err)
	}
	var out map[string]any
	if err := decode(data, &out, os.LookupEnv); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
