package policies

import (
	"bytes"
	"strings"
	"testing"
	"time"

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
	// The key of an input, from an encoding of its own and from a session's
	// encoder (which caches the identity, target and session parts): both
	// must agree.
	var sessionEnc parse.InputEncoder
	value := func(in *parse.Input) memoKeys {
		t.Helper()
		own, ok := memoKeyOf(in, nil)
		if !ok {
			t.Fatal("not memoizable")
		}
		enc, err := sessionEnc.EncodeParts(in)
		if err != nil {
			t.Fatal(err)
		}
		ks, ok := memoKeyOf(in, &enc)
		if !ok {
			t.Fatal("not memoizable")
		}
		for _, pair := range [][2]*memoKey{{&ks.session, &own.session}, {&ks.shared, &own.shared}} {
			k, own := pair[0], pair[1]
			if !k.equal(own) || k.hash != own.hash {
				t.Fatalf("the key from a session's encoding differs:\n%q\n%q", k.parts, own.parts)
			}
			if o := k.own(); !o.equal(k) || !k.equal(&o) || o.hash != k.hash {
				t.Fatalf("the key's copy differs:\n%q\n%q", o.parts, k.parts)
			}
		}
		if ks.session.equal(&ks.shared) || !ks.shared.shared || ks.session.shared {
			t.Fatal("the shared key equals the session key")
		}
		return ks
	}
	sameKey := func(a, b memoKey) bool {
		ao, bo := a.own(), b.own()
		eq := a.equal(&b)
		if eq != b.equal(&a) || eq != ao.equal(&b) || eq != a.equal(&bo) || eq != bytes.Equal(ao.parts[0], bo.parts[0]) {
			t.Fatalf("equal disagrees with itself or with bytes.Equal: %q %q", a.parts, b.parts)
		}
		return eq
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
		if b := value(in); !sameKey(a.session, b.session) || a.session.hash != b.session.hash || !sameKey(a.shared, b.shared) {
			t.Errorf("%s: another key", name)
		}
	}
	otherAST := func(in *parse.Input) {
		st := in.Postgres.Statements[0]
		tree, err := sql.NewParser(0).Parse("SELECT a FROM t WHERE b = $1 AND c = 1")
		if err != nil {
			t.Fatal(err)
		}
		// RawAST is AST's encoding (parse/sql sets both): the record and the
		// key are made from it, policies see AST.
		st.AST, st.RawAST = tree[0].AST, tree[0].RawAST
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
	big := base()
	big.Postgres.Query = strings.Repeat("x", memoMaxQuery+1)
	if _, ok := memoKeyOf(big, nil); ok {
		t.Error("a query longer than memoMaxQuery has a key")
	}
	if _, ok := memoKeyOf(&parse.Input{Version: 1, Protocol: "ssh"}, nil); ok {
		t.Error("an input without postgres has a key")
	}
	sessionOnly := map[string]bool{"session": true, "client addr": true, "started at": true}
	for name, change := range other {
		in := base()
		change(in)
		b := value(in)
		if sameKey(a.session, b.session) {
			t.Errorf("%s: the same key", name)
		}
		// The shared key leaves the session out, and only the session.
		if sameKey(a.shared, b.shared) != sessionOnly[name] {
			t.Errorf("%s: the same shared key: %v", name, !sessionOnly[name])
		}
	}
}

// TestMemoKeyEqual checks key equality over keys split differently.
func TestMemoKeyEqual(t *testing.T) {
	key := func(parts ...string) memoKey {
		var k memoKey
		for _, p := range parts {
			k.parts = append(k.parts, []byte(p))
		}
		return k
	}
	cases := []struct {
		a, b memoKey
		want bool
	}{
		{key("ab", "c", ""), key("a", "bc", ""), true},
		{key("", "", ""), key(""), true},
		{key("abc"), key("", "", "abc"), true},
		{key("a", "b", "c"), key("abc"), true},
		{key("abc"), key("ab"), false},
		{key("ab", "", ""), key("abc"), false},
		{key("abd"), key("a", "b", "c"), false},
		{key(""), key("x"), false},
	}
	for _, c := range cases {
		if got := c.a.equal(&c.b); got != c.want {
			t.Errorf("%q equal %q = %v, want %v", c.a.parts, c.b.parts, got, c.want)
		}
		if got := c.b.equal(&c.a); got != c.want {
			t.Errorf("%q equal %q = %v, want %v", c.b.parts, c.a.parts, got, c.want)
		}
	}
}
