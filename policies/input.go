package policies

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/parse"
)

// inputValue converts the input document to an AST value, once per decision.
// The result is exactly what decoding the input's JSON encoding would give,
// so policies see the documented JSON schema (numbers as JSON numbers,
// omitted fields absent, nil slices and maps as null).
//
// The document goes through encoding/json, except the pg_query trees of the
// statements: they are most of its size and are already JSON-shaped Go
// values, so they are converted directly, with numbers formatted the way
// encoding/json formats them (see BenchmarkInputConversion).
func inputValue(input *parse.Input) (ast.Value, error) {
	shallow, trees := detachTrees(input)
	raw, err := json.Marshal(shallow)
	if err != nil {
		return nil, fmt.Errorf("encode input: %w", err)
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(raw, &doc); err != nil {
		return nil, fmt.Errorf("decode input: %w", err)
	}
	if len(trees) > 0 {
		pg, _ := doc["postgres"].(map[string]any)
		stmts, _ := pg["statements"].([]any)
		if len(stmts) != len(trees) {
			return nil, fmt.Errorf("convert input: %d statements, %d trees", len(stmts), len(trees))
		}
		for i, tree := range trees {
			v, err := jsonValue(tree)
			if err != nil {
				return nil, fmt.Errorf("convert input: statement %d: %w", i, err)
			}
			stmt, _ := stmts[i].(map[string]any)
			stmt["ast"] = v // an ast.Value is kept as is by InterfaceToValue
		}
	}
	value, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, fmt.Errorf("convert input: %w", err)
	}
	return value, nil
}

// detachTrees returns a copy of input whose statements have no AST (the
// input itself is not modified) and the ASTs by statement index.
func detachTrees(input *parse.Input) (*parse.Input, []map[string]any) {
	if input.Postgres == nil || len(input.Postgres.Statements) == 0 {
		return input, nil
	}
	shallow := *input
	pg := *input.Postgres
	pg.Statements = slices.Clone(pg.Statements)
	trees := make([]map[string]any, len(pg.Statements))
	for i := range pg.Statements {
		trees[i] = pg.Statements[i].AST
		pg.Statements[i].AST = nil
	}
	shallow.Postgres = &pg
	return &shallow, trees
}

// jsonValue converts a JSON-shaped Go value to the AST value its JSON
// encoding decodes to. Types other than the ones encoding/json decodes into
// go through a JSON round trip.
func jsonValue(x any) (ast.Value, error) {
	switch x := x.(type) {
	case map[string]any:
		if x == nil {
			return ast.NullValue, nil
		}
		// One allocation for all terms, as ast.InterfaceToValue does.
		terms := make([]ast.Term, 2*len(x))
		kvs := make([][2]*ast.Term, 0, len(x))
		for k, v := range x {
			key, err := ast.InterfaceToValue(k) // interns common strings
			if err != nil {
				return nil, err
			}
			val, err := jsonValue(v)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", k, err)
			}
			i := 2 * len(kvs)
			terms[i].Value, terms[i+1].Value = key, val
			kvs = append(kvs, [2]*ast.Term{&terms[i], &terms[i+1]})
		}
		return ast.NewObject(kvs...), nil
	case []any:
		if x == nil {
			return ast.NullValue, nil
		}
		terms := make([]ast.Term, len(x))
		ptrs := make([]*ast.Term, len(x))
		for i, v := range x {
			val, err := jsonValue(v)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			terms[i].Value = val
			ptrs[i] = &terms[i]
		}
		return ast.NewArray(ptrs...), nil
	case float64:
		return jsonNumber(x)
	case nil, bool, string, json.Number, int, int64:
		return ast.InterfaceToValue(x)
	default:
		ptr := util.Reference(x)
		if err := util.RoundTrip(ptr); err != nil {
			return nil, err
		}
		return ast.InterfaceToValue(*ptr)
	}
}

// jsonNumber formats f as encoding/json does and converts the result as
// decoding it with UseNumber would.
func jsonNumber(f float64) (ast.Value, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("unsupported number %v", f)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(nil, f, format, -1, 64)
	if format == 'e' {
		// encoding/json writes e-7, not e-07.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return ast.InterfaceToValue(json.Number(b))
}
