package postgres

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// COPY … TO STDOUT sends rows without a description, so under column masks
// regate needs to learn where each output column comes from before the rows
// arrive. When the COPY comes alone in a simple Query, regate asks the target
// itself, on the session's own connection, right before the COPY: Parse as
// the unnamed statement, Describe of it, Sync (a probe) — of the COPY's query
// (probeText), or for COPY table of SELECT of its columns FROM ONLY the table
// (probeTable). The answer is the RowDescription a SELECT would get, with
// each column's source table and attribute, and is planned like one (and the
// query checked as that SELECT); the client sees none of it. The session's
// connection sees what the COPY will see: its search_path, its temporary
// tables, its transaction's uncommitted changes.
//
// The probe changes nothing the client can observe: the simple Query that
// follows destroys the unnamed statement anyway; a Sync inside a transaction
// block ends nothing, and outside one it ends the implicit transaction of the
// Parse alone. If the Parse fails (the query names a table that does not
// exist, say), the COPY fails with the same error; inside a transaction block
// the failed Parse has failed the transaction, and the COPY's "current
// transaction is aborted" error is replaced by the Parse's (probeError).
//
// A probe is sent only for a COPY that comes alone in a simple Query, with no
// extended-protocol batch of the client's open (its Sync would end the
// client's batch early): in a query string, statements before the COPY would
// run after the probe; in the extended protocol, a Sync cannot be added to the
// client's batch. Those are planned from regate's catalog connection
// (copyTable, copyQueryOutputs) or refused, and a mask check's verdict that
// relied on a probe is never reused for them (checkMaskable).

// copyProbe is the description of one COPY's query, asked for before it runs.
type copyProbe struct {
	text string // the query's text as the probe sends it
	// allColumns: the probe of a COPY table without a column list, which
	// writes every column but the generated ones (SELECT * has them too).
	allColumns bool
	described  bool // RowDescription or NoData arrived
	fields     []pgproto3.FieldDescription
	errBody    []byte // the probe's ErrorResponse, when its Parse failed
	errMsg     string
}

// Bounds on probeText's search for the query's text: at most
// probeStarts×probeEnds parses of the query string (it may be as long as a
// message may be). The first opening parenthesis and one of the last few
// closing ones (the options' come after it) are the usual answer; when the
// text is not found, the COPY is refused.
// A longer COPY is not probed (the catalog rules apply), so that the search
// costs at most that much parsing.
const (
	probeStarts   = 2 // opening parentheses tried
	probeEnds     = 8 // closing parentheses tried per opening one, from the end
	probeMaxQuery = 1 << 20
)

// probeText finds the text of a COPY's query (copyQuery, its syntax tree) in
// simple, the Query's text, and reports whether the COPY can be probed (see
// above): it is the only statement of a simple Query, and no batch of the
// client's is open. The text is the one between parentheses of simple that
// parses to exactly copyQuery, locations included (it is padded with spaces to
// keep them), so it is the query the target will run.
func (cn *conn) probeText(simple string, nStmts int, copyQuery map[string]any) (string, bool) {
	if len(simple) > probeMaxQuery || !cn.canProbe(simple, nStmts) {
		return "", false
	}
	starts := 0
	for s := 0; s < len(simple) && starts < probeStarts; s++ {
		if simple[s] != '(' {
			continue
		}
		starts++
		ends := 0
		for e := len(simple) - 1; e > s && ends < probeEnds; e-- {
			if simple[e] != ')' {
				continue
			}
			ends++
			text := strings.Repeat(" ", s+1) + simple[s+1:e]
			stmts, err := cn.s.cfg.Parser.Parse(text)
			if err == nil && len(stmts) == 1 && reflect.DeepEqual(stmts[0].AST, copyQuery) {
				return text, true
			}
		}
	}
	return "", false
}

// probeTable builds the probe of a COPY table TO STDOUT (rv, the table;
// attlist, its column list, nil for all columns) and reports whether it can
// be sent, as probeText: SELECT of the columns FROM ONLY the table, every name
// quoted, so that the session's connection resolves the name as the COPY will
// (search_path, temporary tables, uncommitted changes). The text is checked to
// parse back to the same names.
func (cn *conn) probeTable(simple string, nStmts int, rv map[string]any, attlist []any) (string, bool) {
	if !cn.canProbe(simple, nStmts) {
		return "", false
	}
	names := func(m map[string]any) (out []string) {
		for _, k := range []string{"catalogname", "schemaname", "relname"} {
			if v, _ := m[k].(string); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	table := names(rv)
	var cols []string
	for _, a := range attlist {
		cols = append(cols, defString(a))
	}
	list := "*"
	if len(cols) > 0 {
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = quoteIdent(c)
		}
		list = strings.Join(quoted, ", ")
	}
	quoted := make([]string, len(table))
	for i, n := range table {
		quoted[i] = quoteIdent(n)
	}
	text := "SELECT " + list + " FROM ONLY " + strings.Join(quoted, ".")
	stmts, err := cn.s.cfg.Parser.Parse(text)
	if err != nil || len(stmts) != 1 {
		return "", false
	}
	b := child(stmts[0].AST, "SelectStmt")
	from, _ := b["fromClause"].([]any)
	if len(from) != 1 || !slices.Equal(names(child(from[0], "RangeVar")), table) {
		return "", false
	}
	targets, _ := b["targetList"].([]any)
	for i, c := range cols {
		if i >= len(targets) || !slices.Equal(refFields(child(targets[i], "ResTarget")["val"]), []string{c}) {
			return "", false
		}
	}
	return text, len(table) > 0
}

// quoteIdent quotes a name for SQL.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// canProbe reports whether a COPY may be probed: it is the only statement
// (of nStmts) of a simple Query (simple, its text; "" otherwise), and no
// batch of the client's is open.
func (cn *conn) canProbe(simple string, nStmts int) bool {
	return simple != "" && nStmts == 1 && cn.batchClosed()
}

// batchClosed reports whether every extended-protocol batch the client
// started has been closed by its Sync (frontend loop).
func (cn *conn) batchClosed() bool {
	if cn.discarding {
		return false
	}
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	if n := len(cn.queue); n > 0 {
		switch cn.queue[n-1].kind {
		case itemQuery, itemSync, itemProbe:
		default:
			return false
		}
	}
	return true
}

// addProbe records that statement i, a COPY, is probed with p.
func (m *resultMasker) addProbe(i int, p *copyProbe) {
	if m.copyProbes == nil {
		m.copyProbes = map[int]*copyProbe{}
	}
	m.copyProbes[i] = p
}

// sendProbes sends the probes of m's COPY statements (frontend loop), before
// the Query that runs them.
func (cn *conn) sendProbes(m *resultMasker) error {
	if m == nil {
		return nil
	}
	for _, p := range m.copyProbes {
		cn.push(&item{kind: itemProbe, probe: p})
		var buf []byte
		var err error
		for _, msg := range []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: p.text},
			&pgproto3.Describe{ObjectType: 'S'},
			&pgproto3.Sync{},
		} {
			if buf, err = msg.Encode(buf); err != nil {
				return err
			}
		}
		if _, err := cn.uw.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// trackProbe takes the target's answers to a probe (backend loop); the client
// sees only the asynchronous messages among them.
func (cn *conn) trackProbe(it *item, typ byte, body []byte) (bool, error) {
	p := it.probe
	switch typ {
	case '1', 't': // ParseComplete, ParameterDescription
	case 'T':
		var rd pgproto3.RowDescription
		if err := rd.Decode(body); err != nil {
			return false, cn.planOrFail(fmt.Errorf("malformed RowDescription: %w", err))
		}
		p.fields = make([]pgproto3.FieldDescription, len(rd.Fields))
		for i, f := range rd.Fields {
			f.Name = bytes.Clone(f.Name)
			p.fields[i] = f
		}
		p.described = true
	case 'n': // NoData: a query without columns
		p.described = true
	case 'E':
		p.errBody = bytes.Clone(body)
		_, p.errMsg = errorFields(body)
	case 'N': // a notice about regate's own Parse
	case 'Z':
		cn.pop()
		if len(body) == 1 {
			cn.setTxStatus(body[0])
		}
	case 'S', 'A': // ParameterStatus, NotificationResponse: the session's
		return true, nil
	default:
		return false, cn.planOrFail(fmt.Errorf("unexpected message %s in answer to regate's Describe of a COPY's query", quoteType(typ)))
	}
	return false, nil
}

// planProbed plans the masks of a probed COPY's rows from its description:
// as a SELECT's in text format, the format of COPY's text and CSV rows.
func (cn *conn) planProbed(ctx context.Context, m *resultMasker, p *copyProbe) error {
	if !p.described {
		return fmt.Errorf("COPY (query) ran, but regate could not describe its query before it did (%s)", p.errMsg)
	}
	rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(p.fields))}
	for i, f := range p.fields {
		f.Format = 0
		rd.Fields[i] = f
	}
	return cn.planDescription(ctx, m, &rd, p.allColumns)
}

// probeError returns the ErrorResponse to give the client in place of body,
// an error of a command with masks, or nil to keep body: when a probe of the
// command failed inside a transaction block, the command's own error is
// "current transaction is aborted" (the probe's failure aborted it), and the
// probe's error says why.
func (m *resultMasker) probeError(body []byte) []byte {
	if m == nil {
		return nil
	}
	for _, p := range m.copyProbes {
		if p.errBody == nil {
			continue
		}
		if code, _ := errorFields(body); code == "25P02" {
			return p.errBody
		}
	}
	return nil
}
