package policies

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// TestReadmeOPAConfigIsValid: the policy.opa examples in the README and in
// policies/ci are configurations OPA itself accepts (services, keys and
// bundles validated by OPA's own parsers; nothing is downloaded).
func TestReadmeOPAConfigIsValid(t *testing.T) {
	for _, tc := range []struct{ file, after string }{
		{"../README.md", "### Configuration"},
		{"../README.md", "### Bundle sources"},
		{"ci/README.md", "4. Publish"},
	} {
		readme, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(readme)
		i := strings.Index(s, tc.after)
		if i < 0 {
			t.Fatalf("%s has no %q", tc.file, tc.after)
		}
		s = s[i:]
		start := strings.Index(s, "```yaml\n") + len("```yaml\n")
		block := s[start : start+strings.Index(s[start:], "```")]
		var doc map[string]any
		if err := util.Unmarshal([]byte(dedent(block)), &doc); err != nil {
			t.Fatalf("%s %s: %v\n%s", tc.file, tc.after, err, block)
		}
		opa := doc
		if p, ok := doc["policy"].(map[string]any); ok {
			opa = p["opa"].(map[string]any)
		}
		raw, _ := json.Marshal(opa)
		m, err := plugins.New(raw, "readme", inmem.New())
		if err != nil {
			t.Fatalf("%s %s: OPA refuses the configuration: %v\n%s", tc.file, tc.after, err, raw)
		}
		if _, err := bundleplugin.NewConfigBuilder().WithBytes(m.Config.Bundles).WithServices(m.Services()).
			WithKeyConfigs(m.PublicKeys()).Parse(); err != nil {
			t.Fatalf("%s %s: OPA refuses the bundles: %v\n%s", tc.file, tc.after, err, raw)
		}
		if m.Config.Bundles == nil {
			t.Fatalf("%s %s: no bundles in %s", tc.file, tc.after, raw)
		}
	}
}

// dedent removes the indentation of the first line from every line.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	indent := len(lines[0]) - len(strings.TrimLeft(lines[0], " "))
	for i, l := range lines {
		if len(l) >= indent && strings.TrimSpace(l[:indent]) == "" {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}
