package sql

import (
	"encoding/json"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/regate/regate/parse"
)

// PlpgsqlQueries returns the SQL a PL/pgSQL function runs, from its
// definition (a CREATE FUNCTION or CREATE PROCEDURE statement, as
// pg_get_functiondef writes it), parsed by PostgreSQL's own PL/pgSQL parser:
// every query and expression of its body as a statement (an expression e as
// SELECT e, an assignment v := e as SELECT e), those whose rows are the
// function's result (RETURN QUERY) marked. dynamic reports SQL built while
// it runs (EXECUTE, RETURN QUERY EXECUTE, OPEN … FOR EXECUTE, FOR … IN
// EXECUTE), which no reading of the definition can see.
func (p *Parser) PlpgsqlQueries(def string) (queries []parse.PlpgsqlQuery, dynamic bool, err error) {
	out, err := pg_query.ParsePlPgSqlToJSON(def)
	if err != nil {
		return nil, false, fmt.Errorf("parse PL/pgSQL: %w", err)
	}
	var tree any
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		return nil, false, fmt.Errorf("parse PL/pgSQL: %w", err)
	}
	walkPlpgsql(tree, plOther, func(q string, mode float64, result bool) {
		queries = append(queries, parse.PlpgsqlQuery{SQL: plpgsqlStatement(q, mode), Result: result})
	}, &dynamic)
	return queries, dynamic, nil
}

// Where walkPlpgsql is in a PL/pgSQL tree.
const (
	plOther       = iota
	plReturnQuery // inside RETURN QUERY
	plResult      // inside RETURN QUERY's query
)

func walkPlpgsql(v any, at int, add func(q string, mode float64, result bool), dynamic *bool) {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			walkPlpgsql(x, plOther, add, dynamic)
		}
	case map[string]any:
		for k, x := range v {
			switch k {
			case "PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "dynquery":
				*dynamic = true
			case "PLpgSQL_expr":
				e, _ := x.(map[string]any)
				q, _ := e["query"].(string)
				mode, _ := e["parseMode"].(float64)
				add(q, mode, at == plResult)
				continue
			}
			next := plOther
			switch {
			case k == "PLpgSQL_stmt_return_query":
				next = plReturnQuery
			case at == plReturnQuery && k == "query":
				next = plResult
			}
			walkPlpgsql(x, next, add, dynamic)
		}
	}
}

// plpgsqlStatement makes a PL/pgSQL expression a statement. parseMode is
// PostgreSQL's RawParseMode: 0 a whole statement, 2 an expression, 3 to 5
// an assignment (target := expression, or =).
func plpgsqlStatement(q string, mode float64) string {
	switch {
	case mode == 0:
		return q
	case mode >= 3:
		if i := strings.IndexAny(q, ":="); i >= 0 {
			q = strings.TrimPrefix(q[i+1:], "=")
		}
	}
	return "SELECT " + q
}
