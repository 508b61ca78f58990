package postgres

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/proxy"
	"github.com/regate/regate/proxy/approval"
)

// conn is one client session after startup.
type conn struct {
	s          *Server
	sess       *proxy.Session
	database   string
	clientUser string
	// outcomes completed by the target message being relayed, recorded
	// after it is written to the client (backend goroutine only).
	outcomes []outcome

	client net.Conn
	cr     frameReader   // client → regate
	cmu    sync.Mutex    // guards cw
	cw     *bufio.Writer // regate → client

	up       net.Conn
	ur       frameReader   // target → regate
	uw       *bufio.Writer // regate → target; frontend loop only
	pid      uint32
	upSecret []byte
	secret   uint32
	params   map[string]string
	txStatus byte // the last ReadyForQuery's; under qmu once the session runs

	qmu      sync.Mutex
	queue    []*item // forwarded requests awaiting their response, in order
	executed bool    // an Execute was answered since the last ReadyForQuery (idle)
	// funcDDL: a statement that changes the database's functions
	// (changesFuncs) was forwarded, and no ReadyForQuery has said idle
	// since it was answered: regate's catalog connection may not see the
	// change yet (rowFuncs.all).
	funcDDL bool
	// addedCols: the columns created by statements forwarded in a
	// transaction that has not ended (columnDDL), which regate's catalog
	// connection may not see yet; cleared, and the catalog's cache
	// invalidated, as funcDDL is.
	addedCols []derivedCol

	// Frontend-loop state of the extended query protocol.
	stmts      map[string]*prepared
	portals    map[string]*portal
	discarding bool // after a refusal in a batch: drop messages until Sync

	pending []byte // backend loop: the masked body replacing the current message

	// The last statements and column masks checkColumnMasks passed
	// (frontend loop): a prepared statement executed again shares its
	// statements, and a simple query that differs from the last one only in
	// integer literals shares their template (parse.Statement.Base; neither
	// check reads a literal's value). The pointer keeps the statement alive,
	// so an equal pointer is the same statement.
	maskOK maskChecked
}

// maskChecked names statements and mask obligations checkColumnMasks passed.
type maskChecked struct {
	stmt   *parse.Statement // the first statement, or the template it was filled from
	nStmts int
	masks  []decision.Mask
	funcs  *rowFuncSet // the database's functions of a whole row it was checked against
	redact bool        // readsMasked's answer
}

// checkedKey names stmts for maskChecked: a statement filled from a template
// by the template's statement.
func checkedKey(stmts []parse.Statement) *parse.Statement {
	if b := stmts[0].Base; b != nil {
		return b
	}
	return &stmts[0]
}

// same reports whether k names stmts under the masks src and the function
// set funcs.
func (k *maskChecked) same(stmts []parse.Statement, src []decision.Mask, funcs *rowFuncSet) bool {
	return k.stmt != nil && k.stmt == checkedKey(stmts) && k.nStmts == len(stmts) && k.funcs == funcs &&
		slices.Equal(k.masks, src)
}

// itemKind is the kind of a request forwarded upstream whose response the
// backend loop is waiting for.
type itemKind uint8

const (
	itemQuery    itemKind = iota // Query or FunctionCall: ends at ReadyForQuery
	itemParse                    // ends at ParseComplete
	itemBind                     // ends at BindComplete
	itemDescribe                 // ends at RowDescription or NoData
	itemExecute                  // ends at CommandComplete, EmptyQueryResponse or PortalSuspended
	itemClose                    // ends at CloseComplete
	itemSync                     // ends at ReadyForQuery
	itemProbe                    // regate's own Parse, Describe and Sync of a COPY's query (copyprobe.go): ends at ReadyForQuery
)

// item is one forwarded request awaiting its response, in order. An error
// ends the item it answers and, in an extended-protocol batch, every item up
// to the batch's Sync (Postgres skips them).
type item struct {
	kind itemKind
	cmd  *proxy.Command
	// refusal, when set, replaces the marker's error: the request was blocked.
	refusal *pgproto3.ErrorResponse
	// stmt receives the parameter types of a Describe of a statement.
	stmt *prepared
	// masker rewrites the results of a command with mask obligations; stmts
	// are its statements (COPY needs them).
	masker *resultMasker
	stmts  []parse.Statement
	// maskFor, on a Describe regate sent itself, is the Execute whose result
	// columns it learns; the client never sees its answer.
	maskFor *item
	// planFor, on a client's Describe of a portal, is the Execute of that
	// portal whose masks its answer plans (in place of a Describe of
	// regate's own); set only while the item is queued (see adoptDescribe).
	planFor *item
	// probe, on an itemProbe, receives the description it asked for.
	probe   *copyProbe
	popped  bool // answered and removed from the queue (guarded by qmu)
	funcDDL bool // stmts change the database's functions (changesFuncs)
	colDDL  bool // stmts create columns (columnDDL)
	tags    []string
	rows    int64
	errCode string
	errMsg  string
}

func newConn(s *Server, c net.Conn) *conn {
	return &conn{
		s: s, client: c,
		cr: frameReader{r: bufio.NewReaderSize(c, 32<<10), maxBody: s.cfg.MaxMessageSize},
		cw: bufio.NewWriterSize(c, 32<<10),
	}
}

func (cn *conn) initUpstream() {
	cn.ur = frameReader{r: bufio.NewReaderSize(cn.up, 32<<10), maxBody: 1 << 30}
	cn.uw = bufio.NewWriterSize(cn.up, 32<<10)
}

// relay runs both directions until either side closes.
func (cn *conn) relay(ctx context.Context) {
	defer cn.s.unregisterCancel(cn)
	done := make(chan error, 1)
	go func() {
		done <- cn.guard("backend", func() error { return cn.backendLoop(ctx) })
	}()
	ferr := cn.guard("frontend", func() error { return cn.frontendLoop(ctx) })
	cn.up.Close()
	berr := <-done
	cn.client.Close()
	cn.failPending(ctx)
	reason := ""
	switch {
	case ferr != nil && !isClosed(ferr):
		reason = ferr.Error()
	case berr != nil && !isClosed(berr):
		reason = berr.Error()
	}
	cn.sess.Close(context.WithoutCancel(ctx), reason)
}

// guard runs one direction's loop and turns a panic in it into an error that
// ends this session only (logged with its stack, told to the client): one
// connection's bug must not end every other session in the process.
func (cn *conn) guard(loop string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			cn.s.log.Error("internal error; the session is closed", "session_id", cn.sess.ID, "loop", loop,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			cn.fatalToClient(codeInternalError, "regate: internal error; the session is closed")
			cn.client.Close()
			cn.up.Close()
			err = fmt.Errorf("internal error in the %s loop: %v", loop, r)
		}
	}()
	return f()
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, errTerminated)
}

var errTerminated = errors.New("client terminated the session")

// frontendLoop reads client messages, decides, and forwards.
func (cn *conn) frontendLoop(ctx context.Context) error {
	for {
		typ, body, err := cn.cr.next()
		if err != nil {
			if !isClosed(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
				cn.fatalToClient(codeProtocolViolation, "regate: "+err.Error())
			}
			return err
		}
		if err := cn.dispatch(ctx, typ, body); err != nil {
			return err
		}
		if cn.cr.r.Buffered() == 0 {
			if err := cn.uw.Flush(); err != nil {
				return err
			}
		}
	}
}

func (cn *conn) dispatch(ctx context.Context, typ byte, body []byte) error {
	switch typ {
	case 'Q':
		return cn.query(ctx, body)
	case 'X':
		_ = writeFrame(cn.uw, 'X', nil)
		_ = cn.uw.Flush()
		return errTerminated
	case 'd', 'c', 'f': // CopyData, CopyDone, CopyFail of an allowed COPY FROM STDIN
		return writeFrame(cn.uw, typ, body)
	case 'P', 'B', 'D', 'E', 'C', 'H', 'S':
		return cn.extended(ctx, typ, body)
	case 'F':
		return cn.block(codeFeatureNotSupp, cn.sess.Refuse(ctx, cn.baseInput(""),
			"fast-path function calls are not allowed through regate"))
	default:
		msg := "regate: unexpected message type " + quoteType(typ)
		cn.fatalToClient(codeProtocolViolation, msg)
		return errors.New(msg)
	}
}

func quoteType(t byte) string {
	if t >= 0x20 && t < 0x7f {
		return "'" + string(rune(t)) + "'"
	}
	return "0x" + string("0123456789abcdef"[t>>4]) + string("0123456789abcdef"[t&15])
}

// push queues an item; the backend loop pops it when its response arrives.
func (cn *conn) push(it *item) {
	var added []derivedCol
	if it.refusal == nil {
		it.funcDDL = changesFuncs(it.stmts)
		added = columnDDL(it.stmts)
		it.colDDL = len(added) > 0
	}
	cn.qmu.Lock()
	cn.queue = append(cn.queue, it)
	cn.funcDDL = cn.funcDDL || it.funcDDL
	cn.addedCols = append(cn.addedCols, added...)
	cn.qmu.Unlock()
}

// setTxStatus keeps the transaction status of a ReadyForQuery (backend
// loop). Once a change to the database's functions or generated columns has
// been answered and the session is idle, the change is committed (or rolled
// back): the catalog's cache of them is invalidated for every session.
func (cn *conn) setTxStatus(b byte) {
	cn.qmu.Lock()
	cn.txStatus = b
	cn.executed = false
	ended := false
	if b == 'I' && cn.funcDDL && !slices.ContainsFunc(cn.queue, func(it *item) bool { return it.funcDDL }) {
		cn.funcDDL, ended = false, true
	}
	if b == 'I' && len(cn.addedCols) > 0 && !slices.ContainsFunc(cn.queue, func(it *item) bool { return it.colDDL }) {
		cn.addedCols, ended = nil, true
	}
	cn.qmu.Unlock()
	if ended {
		cn.s.catalog.invalidate(cn.database)
	}
}

// changingFuncs reports whether the session has changed the database's
// functions in a transaction that has not ended (frontend loop).
func (cn *conn) changingFuncs() bool {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	return cn.funcDDL
}

// pendingColumns returns the columns the session has created in a
// transaction that has not ended (frontend loop).
func (cn *conn) pendingColumns() []derivedCol {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	return cn.addedCols
}

// changesFuncs reports whether stmts may create or rename functions that
// attribute notation could apply to a whole row: CREATE FUNCTION and
// AGGREGATE, renames of functions, extensions (which bring functions), and DO
// (which can run any of these).
func changesFuncs(stmts []parse.Statement) bool {
	for _, st := range stmts {
		switch st.Node {
		case "CreateFunctionStmt", "CreateExtensionStmt", "AlterExtensionStmt", "AlterExtensionContentsStmt", "DoStmt":
			return true
		case "DefineStmt":
			if child(st.AST, st.Node)["kind"] == "OBJECT_AGGREGATE" {
				return true
			}
		case "RenameStmt":
			switch child(st.AST, st.Node)["renameType"] {
			case "OBJECT_FUNCTION", "OBJECT_AGGREGATE", "OBJECT_ROUTINE":
				return true
			}
		}
	}
	return false
}

// idle reports whether the session is outside a transaction block and has
// nothing in flight that could change what a table name means to it (frontend
// loop): no Query, Execute or Sync awaiting its answer, no Execute answered
// since the last ReadyForQuery (its implicit transaction may be open), and
// the last ReadyForQuery said idle. Parse, Bind, Describe and Close run
// nothing. What the target's catalog holds for the session is then what every
// connection sees, the session's search_path aside.
func (cn *conn) idle() bool {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	for _, it := range cn.queue {
		switch it.kind {
		case itemQuery, itemExecute, itemSync:
			return false
		}
	}
	return !cn.executed && cn.txStatus == 'I'
}

func (cn *conn) head() *item {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	if len(cn.queue) == 0 {
		return nil
	}
	return cn.queue[0]
}

func (cn *conn) pop() {
	cn.qmu.Lock()
	if len(cn.queue) > 0 {
		cn.executed = cn.executed || cn.queue[0].kind == itemExecute
		cn.queue[0].popped = true
		cn.queue[0] = nil
		cn.queue = cn.queue[1:]
	}
	cn.qmu.Unlock()
}

// adoptDescribe makes the answer to the client's Describe d (of the portal
// exec executes) plan exec's masks, and reports whether it could: not when
// the answer was already handled.
func (cn *conn) adoptDescribe(d, exec *item) bool {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	if d.popped {
		return false
	}
	d.planFor = exec
	return true
}

// fatalToClient sends a FATAL error; the caller then closes the session.
func (cn *conn) fatalToClient(code, msg string) {
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	_ = writeMsg(cn.cw, fatal(code, msg))
	_ = cn.cw.Flush()
}

// writeClient buffers one message for the client (flushed by the backend loop).
func (cn *conn) writeClient(m pgproto3.Message) error {
	buf, err := m.Encode(nil)
	if err != nil {
		return err
	}
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	_, err = cn.cw.Write(buf)
	return err
}

// noticeApproval tells the client, while its command waits, who must approve.
func (cn *conn) noticeApproval(r approval.Request) {
	n := &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000",
		Message: fmt.Sprintf("regate: waiting for approval %s (approvers: %s) — regate approve %s",
			r.ID, strings.Join(r.Groups, ", "), r.ID),
		Detail: fmt.Sprintf("the statement runs once approved; this session waits up to %s", cn.s.cfg.Pipeline.Approvals.WaitDuration()),
	}
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	if buf, err := n.Encode(nil); err == nil {
		_, _ = cn.cw.Write(buf)
		_ = cn.cw.Flush()
	}
}
