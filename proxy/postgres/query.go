package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/proxy"
)

// query handles a simple-protocol Query: parse, decide, record, then forward
// or refuse.
func (cn *conn) query(ctx context.Context, body []byte) error {
	q, ok := cstring(body)
	if !ok || len(q)+1 != len(body) {
		cn.fatalToClient(codeProtocolViolation, "regate: malformed Query message")
		return fmt.Errorf("malformed Query message")
	}
	stmts, err := cn.s.cfg.Parser.Parse(q)
	if err != nil {
		return cn.block(codeSyntaxError, cn.sess.Refuse(ctx, cn.baseInput(q), err.Error()), false)
	}
	if len(stmts) == 0 { // empty query: Postgres answers EmptyQueryResponse
		cn.push(&exchange{})
		return writeFrame(cn.uw, 'Q', body)
	}
	in := cn.baseInput(q)
	in.Postgres.Statements = stmts
	cmd := cn.sess.Authorize(ctx, in)
	if !cmd.Allowed {
		return cn.block(codeInsufficientPriv, cmd, false)
	}
	cn.push(&exchange{cmd: cmd})
	return writeFrame(cn.uw, 'Q', body)
}

func (cn *conn) baseInput(q string) *parse.Input {
	in := cn.sess.Input()
	in.Postgres = &parse.Postgres{
		Database: cn.database, User: cn.s.cfg.Credentials.User, ClientUser: cn.clientUser,
		Query: q, Params: []string{}, Statements: []parse.Statement{},
	}
	return &in
}

// block refuses a command. The refusal travels through the target as a marker
// statement that always fails, so the answer reaches the client in order with
// everything before it, and an open transaction fails exactly as it would had
// Postgres refused the statement itself. The marker's error is replaced by the
// refusal; its text also appears in the target's own log.
func (cn *conn) block(code string, cmd *proxy.Command, quiet bool) error {
	refusal := &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code,
		Message: cmd.Message, Detail: "decision_id: " + cmd.Decision.ID,
	}
	cn.push(&exchange{cmd: cmd, refusal: refusal, quiet: quiet})
	return writeFrame(cn.uw, 'Q', markerQuery(cmd.Decision.ID))
}

// markerQuery is a statement that always fails, naming the decision.
// The id is hex (proxy.NewID), so it needs no quoting beyond the literal.
func markerQuery(decisionID string) []byte {
	q := "DO $regate$BEGIN RAISE EXCEPTION 'regate: statement blocked (decision_id %)', '" +
		sanitizeID(decisionID) + "' USING ERRCODE = '42501'; END$regate$"
	return append([]byte(q), 0)
}

func sanitizeID(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// refuseExtended refuses extended-protocol messages, which this engine does not
// decide yet: the first one of a batch answers with an error, the rest are
// discarded until Sync, as Postgres does after an error.
func (cn *conn) refuseExtended(ctx context.Context, typ byte, body []byte) error {
	if cn.discarding {
		return nil
	}
	cn.discarding = true
	q := ""
	if typ == 'P' { // Parse: name, query, …
		if name, ok := cstring(body); ok {
			q, _ = cstring(body[len(name)+1:])
		}
	}
	reason := "the extended query protocol (Parse/Bind/Execute) is not supported yet; " +
		"use the simple query protocol (psql does; pgx: QueryExecModeSimpleProtocol)"
	return cn.block(codeFeatureNotSupp, cn.sess.Refuse(ctx, cn.baseInput(q), reason), true)
}
