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
	// A simple query destroys the unnamed statement and portal.
	delete(cn.stmts, "")
	delete(cn.portals, "")
	a := cn.authorize(ctx, q, []*string{}, true)
	if a.cmd != nil && !a.cmd.Allowed {
		return cn.block(a.code, a.cmd)
	}
	if err := cn.sendProbes(a.masker); err != nil {
		return err
	}
	cn.push(&item{kind: itemQuery, cmd: a.cmd, masker: a.masker, stmts: a.stmts})
	return writeFrame(cn.uw, 'Q', body)
}

// authorization is what authorize decided for one statement text.
type authorization struct {
	cmd    *proxy.Command // nil for a text without statements
	code   string         // the SQLSTATE to refuse with when !cmd.Allowed
	masker *resultMasker  // the mask obligations to apply, nil when none
	stmts  []parse.Statement
}

// authorize parses and decides one statement text, and compiles the
// decision's mask obligations. An obligation regate cannot honour turns the
// command into a refusal. simple tells that the text came in a Query message
// (checkMaskable may then describe a COPY's query before it runs).
func (cn *conn) authorize(ctx context.Context, q string, params []*string, simple bool) authorization {
	stmts, err := cn.s.cfg.Parser.Parse(q)
	in := cn.baseInput(q)
	in.Postgres.Params = params
	if err != nil {
		return authorization{cmd: cn.sess.Refuse(ctx, in, err.Error()), code: codeSyntaxError}
	}
	if len(stmts) == 0 {
		return authorization{}
	}
	in.Postgres.Statements = stmts
	cmd := cn.sess.Authorize(ctx, in)
	a := authorization{cmd: cmd, code: codeInsufficientPriv, stmts: stmts}
	if !cmd.Allowed {
		return a
	}
	m, err := newResultMasker(cmd.Decision)
	if err == nil {
		simpleQ := ""
		if simple {
			simpleQ = q
		}
		err = cn.checkMaskable(ctx, m, stmts, simpleQ)
	}
	if err != nil {
		cmd.Deny(ctx, err.Error())
		return a
	}
	a.masker = m
	return a
}

func (cn *conn) baseInput(q string) *parse.Input {
	in := cn.sess.Input()
	in.Postgres = &parse.Postgres{
		Database: cn.database, User: cn.s.cfg.Credentials.User, ClientUser: cn.clientUser,
		Query: q, Params: []*string{}, Statements: []parse.Statement{},
	}
	return &in
}

func refusal(code string, cmd *proxy.Command) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code,
		Message: cmd.Message, Detail: "decision_id: " + cmd.Decision.ID,
	}
}

// block refuses a simple-protocol command. The refusal travels through the
// target as a marker statement that always fails, so the answer reaches the
// client in order with everything before it, and an open transaction fails
// exactly as it would had Postgres refused the statement itself. The marker's
// error is replaced by the refusal; its text also appears in the target's own
// log.
func (cn *conn) block(code string, cmd *proxy.Command) error {
	cn.push(&item{kind: itemQuery, cmd: cmd, refusal: refusal(code, cmd)})
	return writeFrame(cn.uw, 'Q', markerQuery(cmd.Decision.ID))
}

// blockExecute refuses an extended-protocol Execute: the marker is an Execute
// of a portal that cannot exist, which fails the batch (Postgres then skips
// to Sync) and an open transaction, like any error would.
func (cn *conn) blockExecute(code string, cmd *proxy.Command) error {
	cn.push(&item{kind: itemExecute, cmd: cmd, refusal: refusal(code, cmd)})
	cn.discarding = true
	ex := pgproto3.Execute{Portal: "regate: blocked by policy, decision_id " + sanitizeID(cmd.Decision.ID)}
	buf, err := ex.Encode(nil)
	if err != nil {
		return err
	}
	_, err = cn.uw.Write(buf)
	return err
}

// markerQuery is a statement that always fails, naming the decision.
func markerQuery(decisionID string) []byte {
	q := "DO $regate$BEGIN RAISE EXCEPTION 'regate: statement blocked (decision_id %)', '" +
		sanitizeID(decisionID) + "' USING ERRCODE = '42501'; END$regate$"
	return append([]byte(q), 0)
}

// sanitizeID keeps an id safe inside a SQL literal or a portal name.
func sanitizeID(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}
