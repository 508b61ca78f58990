package test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/regate/regate"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// TestDependencyDirection enforces the layout's import rules:
// cmd → proxy/* → {parse/*, policies, recorder, proxy/identity, proxy/approval};
// policies → {parse, bundles}; recorder → parse (types) and policies/decision;
// only policies and bundles import OPA; protocol engines never import each other.
func TestDependencyDirection(t *testing.T) {
	engines := []string{mod + "/proxy/postgres", mod + "/proxy/ssh", mod + "/proxy/kubernetes", mod + "/proxy/http"}
	for _, p := range listPackages(t) {
		ip := p.ImportPath
		for _, imp := range p.Imports {
			bad := ""
			switch {
			case strings.HasPrefix(imp, "github.com/open-policy-agent/opa") &&
				!(under(ip, mod+"/policies") && !under(ip, mod+"/policies/decision")) && !under(ip, mod+"/bundles"):
				bad = "only policies and bundles may import OPA"
			case under(imp, mod+"/cmd") && !under(ip, mod+"/cmd"):
				bad = "nothing imports cmd"
			case under(ip, mod+"/parse") && (under(imp, mod+"/proxy") || under(imp, mod+"/policies") || under(imp, mod+"/recorder")):
				bad = "parse imports only parse"
			case under(ip, mod+"/recorder") && strings.HasPrefix(imp, mod) &&
				!under(imp, mod+"/parse") && !under(imp, mod+"/policies/decision") && !under(imp, mod+"/recorder"):
				bad = "recorder imports only parse and policies/decision"
			case under(ip, mod+"/policies") && (under(imp, mod+"/proxy") || under(imp, mod+"/recorder")):
				bad = "policies must not import proxy or recorder"
			case under(ip, mod+"/bundles") && strings.HasPrefix(imp, mod) && !under(imp, mod+"/bundles"):
				bad = "bundles imports nothing of regate"
			case ip == mod+"/proxy" && (isEngine(imp, engines) || under(imp, mod+"/policies") && !under(imp, mod+"/policies/decision")):
				bad = "the pipeline is protocol-neutral and talks to the evaluator through an interface"
			}
			for _, e := range engines {
				if under(ip, e) && isEngine(imp, engines) && !under(imp, e) {
					bad = "protocol engines never import each other"
				}
			}
			if bad != "" {
				t.Errorf("%s imports %s: %s", ip, imp, bad)
			}
		}
	}
}

func isEngine(imp string, engines []string) bool {
	for _, e := range engines {
		if under(imp, e) {
			return true
		}
	}
	return false
}

// TestDecisionPackageHasNoOPA checks transitively that the Decision type and the
// recorder stay free of the evaluator.
func TestDecisionPackageHasNoOPA(t *testing.T) {
	for _, p := range []string{mod + "/policies/decision", mod + "/recorder", mod + "/proxy"} {
		cmd := exec.Command("go", "list", "-deps", p)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", p, err)
		}
		if strings.Contains(string(out), "github.com/open-policy-agent/opa") {
			t.Errorf("%s depends on OPA", p)
		}
	}
}
