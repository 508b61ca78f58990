package parse

import (
	"encoding/json"
	"strings"
	"time"
)

// SchemaVersion is the version of the input document written into Input.Version.
const SchemaVersion = 1

// Input is the document a policy sees as `input`. Exactly one protocol object
// (Postgres, SSH, Kubernetes or HTTP) is set.
type Input struct {
	Version  int       `json:"version"`
	Protocol string    `json:"protocol"`
	Time     time.Time `json:"time"`
	Identity Identity  `json:"identity"`
	Target   Target    `json:"target"`
	Session  Session   `json:"session"`

	Postgres *Postgres `json:"postgres,omitempty"`
}

// Identity is who made the request, as established by the verified OIDC token.
// The raw token itself is never part of it.
type Identity struct {
	Subject string         `json:"subject"`
	Issuer  string         `json:"issuer"`
	Email   string         `json:"email,omitempty"`
	Groups  []string       `json:"groups"`
	Claims  map[string]any `json:"claims"`
}

// Target is the configured target the request is addressed to.
type Target struct {
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	Labels   map[string]string `json:"labels"`
}

// Session describes the client connection the request arrived on.
type Session struct {
	ID         string    `json:"id"`
	ClientAddr string    `json:"client_addr"`
	StartedAt  time.Time `json:"started_at"`
}

// Postgres is the protocol object of a PostgreSQL request.
type Postgres struct {
	// Database is the database the client asked for in its startup message.
	Database string `json:"database"`
	// User is the database role regate runs the statement as (the target's credentials).
	User string `json:"user"`
	// ClientUser is the user name the client sent in its startup message:
	// regate accepts only the target's account, one of the identity's names
	// (subject, email, preferred_username) or one of the target's
	// client_users. Identity, not this name, is what was authenticated.
	ClientUser string `json:"client_user"`
	// Query is the statement text exactly as the client sent it.
	Query string `json:"query"`
	// Params are the bound parameters of an extended-protocol execution, in
	// Postgres's text form (binary values of known types are converted; others
	// appear as "\\x" followed by hex); nil (JSON null) for SQL NULL.
	Params []*string `json:"params"`
	// Statements holds one entry per statement in Query, in order.
	Statements []Statement `json:"statements"`
}

// Statement is one parsed SQL statement.
type Statement struct {
	// Command is the Postgres command tag: SELECT, INSERT, UPDATE, DELETE, DROP, …
	Command string `json:"command"`
	// Node is the pg_query node type of the statement, e.g. "DeleteStmt".
	Node string `json:"node"`
	// Relations are the tables, views and other relations the statement names.
	Relations []Relation `json:"relations"`
	// HasWhere tells whether an UPDATE or DELETE carries a WHERE clause (or a
	// SELECT, for completeness); false for statements that cannot have one.
	HasWhere bool `json:"has_where"`
	// Functions are the names of every function the statement calls, lower-case,
	// without schema (also listed schema-qualified when written so).
	Functions []string `json:"functions"`
	// AST is the pg_query JSON of this statement.
	AST map[string]any `json:"ast"`
	// RawAST, when set, is AST's JSON encoding as the parser produced it,
	// in encoding/json's form (compact, with <, > and & escaped); encoding a
	// Statement then copies it instead of re-encoding AST.
	RawAST json.RawMessage `json:"-"`
	// Base, when set, is a statement whose AST equals this one's but for the
	// values at Patches: consumers that derived something from Base.AST can
	// update it instead of deriving it again (parse/sql sets it on statements
	// made from a template).
	Base    *Statement `json:"-"`
	Patches []Patch    `json:"-"`
}

// Patch replaces the value at Path (map keys as strings, array indices as
// ints, from the root of an AST) with Value.
//
// parse/sql's patches each write one integer literal of a templated text:
// Path leads to an A_Const node's body, Value is that body
// ({"ival": {"ival": N}, "location": L}), and Raw is where the digits of N are
// in the statement's RawAST ([start, end) offsets; [0, 0] when not known).
type Patch struct {
	Path  []any
	Value any
	Raw   [2]int
}

// MarshalJSON encodes the statement, reusing RawAST when it is set.
func (s Statement) MarshalJSON() ([]byte, error) {
	type plain Statement
	if s.RawAST == nil {
		return json.Marshal(plain(s))
	}
	return json.Marshal(struct {
		plain
		AST json.RawMessage `json:"ast"`
	}{plain(s), s.RawAST})
}

// Relation is a relation named by a statement.
type Relation struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Access is "read", "write" or "ddl".
	Access string `json:"access"`
}

// Relation access kinds.
const (
	AccessRead  = "read"
	AccessWrite = "write"
	AccessDDL   = "ddl"
)

// CommandText returns the command of a request as approvers see it: its text,
// its parameters and a one-line summary of what it touches.
func (in *Input) CommandText() (text string, params []string, summary string) {
	if in.Postgres == nil {
		return "", nil, in.Protocol + " request"
	}
	pg := in.Postgres
	for _, p := range pg.Params {
		if p == nil {
			params = append(params, "NULL")
		} else {
			params = append(params, *p)
		}
	}
	var parts []string
	for _, st := range pg.Statements {
		s := st.Command
		for i, r := range st.Relations {
			sep := " "
			if i > 0 {
				sep = ", "
			}
			name := r.Name
			if r.Schema != "" {
				name = r.Schema + "." + r.Name
			}
			s += sep + name + " (" + r.Access + ")"
		}
		parts = append(parts, s)
	}
	return pg.Query, params, strings.Join(parts, "; ")
}

// PlpgsqlQuery is one query or expression of a PL/pgSQL function's body, as
// a statement (parse/sql's Parser.PlpgsqlQueries).
type PlpgsqlQuery struct {
	SQL    string
	Result bool // its rows are the function's result (RETURN QUERY)
}
