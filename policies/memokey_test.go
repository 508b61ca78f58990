package policies

import (
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/parse/sql"
)

// TestMemoKey checks that inputs have the same memo key exactly when they
// differ in nothing but their time and parameters.
func TestMemoKey(t *testing.T) {
	e := newEngine(t, Config{})
	defer e.Close()
	stmts, err := sql.NewParser(0).Parse("SELECT a FROM t WHERE b = $1 AND c = 1.0")
	if err != nil {
		t.Fatal(err)
	}
	base := func() *parse.Input {
		in := pgInput(stmts...)
		p := "1"
		in.Postgres.Params = []*string{&p}
		return in
	}
	value := func(in *parse.Input) ast.Object {
		t.Helper()
		v, err := e.fastInputValue(in)
		if err != nil {
			t.Fatal(err)
		}
		obj, ok := memoInput(v)
		if !ok {
			t.Fatal("not memoizable")
		}
		return obj
	}
	a := value(base())
	same := map[string]func(*parse.Input){
		"time":        func(in *parse.Input) { in.Time = in.Time.Add(time.Second) },
		"params":      func(in *parse.Input) { p := "2"; in.Postgres.Params = []*string{&p} },
		"null params": func(in *parse.Input) { in.Postgres.Params = nil },
		"no params":   func(in *parse.Input) { in.Postgres.Params = []*string{} },
		"equal copy":  func(in *parse.Input) { in.Identity.Claims = map[string]any{"email": "alice@example.com"} },
	}
	for name, change := range same {
		in := base()
		change(in)
		if b := value(in); !sameKey(a, b) || keyHash(a) != keyHash(b) {
			t.Errorf("%s: another key", name)
		}
	}
	otherAST := func(in *parse.Input) {
		st := in.Postgres.Statements[0]
		tree, err := sql.NewParser(0).Parse("SELECT a FROM t WHERE b = $1 AND c = 1")
		if err != nil {
			t.Fatal(err)
		}
		st.AST = tree[0].AST
		in.Postgres.Statements = []parse.Statement{st}
	}
	other := map[string]func(*parse.Input){
		"version":  func(in *parse.Input) { in.Version = 2 },
		"protocol": func(in *parse.Input) { in.Protocol = "postgresql" },
		"subject": func(in *parse.Input) {
			in.Identity.Claims = map[string]any{"email": "alice@example.com"}
			in.Identity.Subject = "bob"
		},
		"claims":     func(in *parse.Input) { in.Identity.Claims = map[string]any{"email": "bob@example.com"} },
		"claim type": func(in *parse.Input) { in.Identity.Claims = map[string]any{"email": 1} },
		"groups": func(in *parse.Input) {
			in.Identity.Claims = map[string]any{"email": "alice@example.com"}
			in.Identity.Groups = nil
		},
		"target":          func(in *parse.Input) { in.Target.Name = "dev" },
		"labels":          func(in *parse.Input) { in.Target.Labels = map[string]string{"env": "dev"} },
		"session":         func(in *parse.Input) { in.Session.ID = "s2" },
		"client addr":     func(in *parse.Input) { in.Session.ClientAddr = "10.0.0.2:5555" },
		"started at":      func(in *parse.Input) { in.Session.StartedAt = in.Session.StartedAt.Add(time.Nanosecond) },
		"database":        func(in *parse.Input) { in.Postgres.Database = "other" },
		"user":            func(in *parse.Input) { in.Postgres.User = "other" },
		"client user":     func(in *parse.Input) { in.Postgres.ClientUser = "other" },
		"query":           func(in *parse.Input) { in.Postgres.Query = "other" },
		"no statements":   func(in *parse.Input) { in.Postgres.Statements = nil },
		"ast number text": otherAST,
		"relations": func(in *parse.Input) {
			st := in.Postgres.Statements[0]
			st.Relations = append([]parse.Relation{}, st.Relations...)
			st.Relations[0].Access = parse.AccessWrite
			in.Postgres.Statements = []parse.Statement{st}
		},
	}
	for name, change := range other {
		in := base()
		change(in)
		if b := value(in); sameKey(a, b) {
			t.Errorf("%s: the same key", name)
		}
	}
}
