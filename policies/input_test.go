package policies

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/parse"
)

// referenceValue is the input as the contract defines it: its JSON encoding,
// decoded.
func referenceValue(t *testing.T, in *parse.Input) ast.Value {
	t.Helper()
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := util.UnmarshalJSON(raw, &doc); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type point struct {
	X int `json:"x"`
}

func TestInputValueMatchesJSON(t *testing.T) {
	tree := map[string]any{"SelectStmt": map[string]any{
		"floats":   []any{0.0, math.Copysign(0, -1), 1.0, 1.5, -2.25, 1e6, 123456789.0, 1e20, 1e21, 1.5e-7, 1e-6, 5e-324, math.MaxFloat64},
		"ints":     []any{0, -1, int64(1) << 53, json.Number("12345678901234567890")},
		"strings":  []string{"a", "b"},
		"labels":   map[string]string{"k": "v"},
		"nilslice": []any(nil),
		"nilmap":   map[string]any(nil),
		"nilstrs":  []string(nil),
		"other":    []any{int32(7), float32(0.1), point{X: 3}, &point{X: 4}, uint8(9)},
		"nested":   []any{map[string]any{"a": []any{true, false, nil, "x"}}},
	}}
	tests := map[string]*parse.Input{
		"bench":    nil, // filled below
		"trees":    pgInput(parse.Statement{Command: "SELECT", AST: tree}, parse.Statement{Command: "DROP"}),
		"no pg":    {Version: 1, Protocol: "ssh", Time: time.Unix(0, 1).UTC()},
		"no stmts": pgInput(),
		"empty":    {},
	}
	for name, in := range tests {
		if in == nil {
			in = pgInput(selectStmt, dropStmt)
		}
		t.Run(name, func(t *testing.T) {
			before, _ := json.Marshal(in)
			e := &Engine{cache: newValueCache(4)}
			for round := 0; round < 2; round++ { // the second round hits the cache
				fast, err := e.fastInputValue(in)
				if err != nil {
					t.Fatal(err)
				}
				if want := referenceValue(t, in); fast.Compare(want) != 0 {
					t.Errorf("fastInputValue (round %d) =\n%v\nwant\n%v", round, fast, want)
				}
			}
			got, err := inputValue(in)
			if err != nil {
				t.Fatal(err)
			}
			if want := referenceValue(t, in); got.Compare(want) != 0 || got.String() != want.String() {
				t.Errorf("inputValue =\n%v\nwant\n%v", got, want)
			}
			if after, _ := json.Marshal(in); string(after) != string(before) {
				t.Error("inputValue modified its input")
			}
		})
	}
}

func TestInputValueRejectsNonJSONNumbers(t *testing.T) {
	in := pgInput(parse.Statement{AST: map[string]any{"x": math.Inf(1)}})
	if _, err := inputValue(in); err == nil {
		t.Error("inputValue accepted +Inf")
	}
	e := newEngine(t, Config{})
	if d := e.Decide(t.Context(), in); d.Allow || d.Error == "" {
		t.Errorf("decision = %+v", d)
	}
}

// TestStatementValueCache checks that a statement's cached value is only
// reused for a statement with the same tree and the same other fields.
func TestStatementValueCache(t *testing.T) {
	e := &Engine{cache: newValueCache(16)}
	tree := map[string]any{"SelectStmt": map[string]any{"op": "SETOP_NONE"}}
	base := parse.Statement{Command: "SELECT", Node: "SelectStmt", AST: tree,
		Relations: []parse.Relation{{Schema: "public", Name: "t", Access: parse.AccessRead}}, Functions: []string{"f"}}
	variants := []func(s *parse.Statement){
		func(s *parse.Statement) {},
		func(s *parse.Statement) { s.Command = "DELETE" },
		func(s *parse.Statement) { s.Node = "DeleteStmt" },
		func(s *parse.Statement) { s.HasWhere = true },
		func(s *parse.Statement) { s.Relations = nil },
		func(s *parse.Statement) { s.Relations = []parse.Relation{} },
		func(s *parse.Statement) { s.Relations = []parse.Relation{{Name: "t", Access: parse.AccessWrite}} },
		func(s *parse.Statement) { s.Functions = nil },
		func(s *parse.Statement) { s.Functions = []string{} },
		func(s *parse.Statement) { s.Functions = []string{"g"} },
	}
	for round := range 2 {
		for i, change := range variants {
			s := base
			change(&s)
			got, err := e.statementValue(&s)
			if err != nil {
				t.Fatal(err)
			}
			want, err := viaJSON(s)
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 || got.String() != want.String() {
				t.Errorf("round %d, variant %d: %v, want %v", round, i, got, want)
			}
		}
	}
}
