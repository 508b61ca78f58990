package sql

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	pgparser "github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/regate/regate/parse"
)

// DefaultCacheSize is the number of cached query texts of a Parser created
// with a cacheSize of zero or less.
const DefaultCacheSize = 4096

// maxCachedQueryLen is the length above which a query text is parsed but not
// cached, so that a few huge statements cannot pin a lot of memory.
const maxCachedQueryLen = 64 << 10

// Parser parses statements and caches results by exact query text (bounded
// LRU; safe for concurrent use), and templates of texts that differ only in
// integer literals (see template.go).
type Parser struct {
	cache     *lru[[]parse.Statement]
	templates *lru[*template] // by shape; nil: the shape cannot be templated
}

// NewParser returns a Parser whose cache holds up to cacheSize query texts;
// cacheSize <= 0 means DefaultCacheSize.
func NewParser(cacheSize int) *Parser {
	if cacheSize <= 0 {
		cacheSize = DefaultCacheSize
	}
	return &Parser{cache: newLRU[[]parse.Statement](cacheSize), templates: newLRU[*template](cacheSize)}
}

// Parse returns the statements of query in source order. The returned slice
// and everything it references may be shared with other callers through the
// cache: callers must not modify it. A query holding only whitespace and
// comments yields an empty slice and no error.
func (p *Parser) Parse(query string) ([]parse.Statement, error) {
	if stmts, ok := p.cache.get(query); ok {
		return stmts, nil
	}
	var shape string
	lits, ok := scanLiterals(query)
	if ok && len(lits) > 0 && len(query) <= maxCachedQueryLen && strings.IndexByte(query, 0) < 0 {
		shape = shapeOf(query, lits)
		if t, ok := p.templates.get(shape); ok {
			if t == nil {
				shape = "" // known not to template
			} else {
				return t.fill(query, lits), nil
			}
		}
	}
	stmts, err := parseSQL(query)
	if err != nil {
		return nil, err
	}
	if shape != "" {
		// The texts of a templated shape are not cached one by one.
		t := makeTemplate(query, lits, stmts)
		p.templates.add(shape, t)
		if t != nil {
			return stmts, nil
		}
	}
	if len(query) <= maxCachedQueryLen {
		p.cache.add(query, stmts)
	}
	return stmts, nil
}

// rawParseResult is the part of pg_query's JSON output that is used.
type rawParseResult struct {
	Stmts []struct {
		Stmt json.RawMessage `json:"stmt"`
	} `json:"stmts"`
}

// parseSQL parses query without any caching.
func parseSQL(query string) ([]parse.Statement, error) {
	if strings.IndexByte(query, 0) >= 0 {
		return nil, errors.New("cannot parse SQL: query contains a NUL byte")
	}
	tree, err := pg_query.ParseToJSON(query)
	if err != nil {
		return nil, parseError(err)
	}
	var raw rawParseResult
	if err := json.Unmarshal([]byte(tree), &raw); err != nil {
		return nil, fmt.Errorf("cannot parse SQL: decoding parse tree: %w", err)
	}
	stmts := make([]parse.Statement, 0, len(raw.Stmts))
	for i, rs := range raw.Stmts {
		var tree map[string]any
		if err := json.Unmarshal(rs.Stmt, &tree); err != nil {
			return nil, fmt.Errorf("cannot parse SQL: decoding parse tree: %w", err)
		}
		node, body, ok := soleEntry(tree)
		if !ok {
			return nil, fmt.Errorf("cannot parse SQL: statement %d has an unexpected parse tree", i+1)
		}
		st := buildStatement(node, body, tree)
		// As encoding/json writes it (compact, <, > and & escaped), so that
		// encoders can copy it as it is (parse.InputEncoder).
		canon, err := json.Marshal(rs.Stmt)
		if err != nil {
			return nil, fmt.Errorf("cannot parse SQL: encoding parse tree: %w", err)
		}
		st.RawAST = canon
		stmts = append(stmts, st)
	}
	return stmts, nil
}

// parseError turns a pg_query error into the package's error, adding the
// position the parser reported when there is one.
func parseError(err error) error {
	var pe *pgparser.Error
	if errors.As(err, &pe) && pe.Cursorpos > 0 {
		return fmt.Errorf("cannot parse SQL: %w at position %d", err, pe.Cursorpos)
	}
	return fmt.Errorf("cannot parse SQL: %w", err)
}

// buildStatement derives the Statement of one parsed statement whose AST is
// ast == {node: body}.
func buildStatement(node string, body map[string]any, ast map[string]any) parse.Statement {
	c := &collector{}
	c.walk(ast, "", nil)
	return parse.Statement{
		Command:   command(node, body),
		Node:      node,
		Relations: c.relationList(),
		HasWhere:  hasWhere(node, body),
		Functions: c.functionList(),
		AST:       ast,
	}
}

// hasWhere reports whether a top-level statement carries a WHERE clause (for
// MERGE: a join condition).
func hasWhere(node string, body map[string]any) bool {
	switch node {
	case "SelectStmt", "UpdateStmt", "DeleteStmt":
		return body["whereClause"] != nil
	case "MergeStmt":
		return body["joinCondition"] != nil
	}
	return false
}

// soleEntry returns the only entry of a {"NodeType": {...}} object.
func soleEntry(m map[string]any) (string, map[string]any, bool) {
	if len(m) != 1 {
		return "", nil, false
	}
	for k, v := range m {
		body, ok := v.(map[string]any)
		return k, body, ok
	}
	return "", nil, false
}
