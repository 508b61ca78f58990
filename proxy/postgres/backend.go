package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/regate/regate/proxy"
	"github.com/regate/regate/recorder"
)

// backendLoop relays target messages to the client, replacing the marker
// errors of blocked requests and recording each outcome.
func (cn *conn) backendLoop(ctx context.Context) error {
	for {
		typ, body, err := cn.ur.next()
		if err != nil {
			if !isClosed(err) {
				cn.fatalToClient(codeConnectionFailure, "regate: connection to the target was lost: "+err.Error())
			}
			cn.client.Close()
			return err
		}
		if err := cn.relayBackend(ctx, typ, body); err != nil {
			// The client may be waiting for more (rows, COPY data): the
			// closed connection ends its wait, and the frontend loop's.
			cn.client.Close()
			return err
		}
	}
}

func (cn *conn) relayBackend(ctx context.Context, typ byte, body []byte) error {
	cn.pending = nil
	// Outcomes completed by this message are recorded once it is on its way
	// to the client (their encoding is not the client's wait).
	defer cn.recordOutcomes(ctx)
	forward, err := cn.track(ctx, typ, body)
	if err != nil {
		return err
	}
	if cn.pending != nil {
		body = cn.pending
	}
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	if forward {
		if err := writeFrame(cn.cw, typ, body); err != nil {
			return err
		}
	}
	if cn.ur.r.Buffered() == 0 {
		return cn.cw.Flush()
	}
	return nil
}

// track matches a target message to the request it answers and reports
// whether to forward it to the client.
func (cn *conn) track(ctx context.Context, typ byte, body []byte) (bool, error) {
	it := cn.head()
	if it == nil {
		if typ == 'Z' && len(body) == 1 {
			cn.setTxStatus(body[0])
		}
		return true, nil
	}
	if it.kind == itemProbe {
		return cn.trackProbe(it, typ, body)
	}
	switch typ {
	case '1', '2', '3': // ParseComplete, BindComplete, CloseComplete
		cn.pop()
	case 't': // ParameterDescription of a described statement
		if it.kind == itemDescribe && it.stmt != nil {
			it.stmt.setParamTypes(paramOIDs(body))
		}
	case 'T', 'n': // RowDescription, NoData
		return cn.trackDescription(ctx, it, typ, body)
	case 'D', 'H', 'd', 'c': // DataRow, CopyOutResponse, CopyData, CopyDone
		return true, cn.maskResult(ctx, it, typ, body)
	case 'C':
		tag, _ := cstring(body)
		it.tags = append(it.tags, tag)
		if it.masker != nil {
			it.masker.planned, it.masker.copy = false, nil
		}
		it.rows += tagRows(tag)
		if it.kind == itemExecute {
			cn.pop()
			cn.finish(ctx, it)
		}
	case 'I', 's': // EmptyQueryResponse, PortalSuspended
		if it.kind == itemExecute {
			cn.pop()
			cn.finish(ctx, it)
		}
	case 'E':
		if b := it.masker.probeError(body); b != nil {
			body = b
			cn.pending = body
		}
		if it.masker != nil && it.masker.redact {
			body = redactNotice(body)
			cn.pending = body
		}
		return cn.trackError(ctx, it, body)
	case 'N':
		if it.masker != nil && it.masker.redact {
			cn.pending = redactNotice(body)
		}
	case 'Z':
		// The batch's items first: setTxStatus also clears what they set.
		cn.endBatch(ctx)
		if len(body) == 1 {
			cn.setTxStatus(body[0])
		}
	default:
		// A marker produces nothing else the client should see.
		return it.refusal == nil || typ == 'N' || typ == 'A' || typ == 'S', nil
	}
	return true, nil
}

// trackDescription plans masking from a RowDescription and hides the answer
// to a Describe regate sent itself.
func (cn *conn) trackDescription(ctx context.Context, it *item, typ byte, body []byte) (bool, error) {
	if it.kind == itemDescribe {
		cn.pop()
		if it.planFor != nil {
			// The client's Describe of a portal plans its execution's
			// masks; the client sees the answer as usual.
			m := it.planFor.masker
			if typ == 'n' {
				m.planned, m.plan = true, nil
				return true, nil
			}
			return true, cn.planOrFail(cn.planMask(ctx, m, body))
		}
		if it.maskFor == nil {
			return true, nil
		}
		m := it.maskFor.masker
		if typ == 'n' {
			m.planned, m.plan = true, nil
			return false, nil
		}
		return false, cn.planOrFail(cn.planMask(ctx, m, body))
	}
	if typ == 'T' && it.masker != nil {
		return true, cn.planOrFail(cn.planMask(ctx, it.masker, body))
	}
	return true, nil
}

// planOrFail ends the session when results that must be masked cannot be:
// nothing unmasked may reach the client.
func (cn *conn) planOrFail(err error) error {
	if err != nil {
		cn.fatalToClient(codeInsufficientPriv, "regate: cannot mask the results as the policy requires: "+err.Error())
	}
	return err
}

// maskResult rewrites rows and COPY data of a command with mask obligations.
func (cn *conn) maskResult(ctx context.Context, it *item, typ byte, body []byte) error {
	m := it.masker
	if m == nil {
		return nil
	}
	switch typ {
	case 'H':
		idx := len(it.tags)
		if idx >= len(it.stmts) {
			return cn.planOrFail(fmt.Errorf("COPY output for an unknown statement"))
		}
		return cn.planOrFail(cn.planCopy(ctx, m, idx, it.stmts[idx]))
	case 'c':
		m.copy = nil
		return nil
	}
	var out []byte
	var err error
	switch {
	case typ == 'D' && m.planned:
		out, err = m.row(body)
	case typ == 'd' && m.copy != nil:
		out, err = m.copyRow(body)
	case typ == 'D':
		err = fmt.Errorf("rows arrived before their description")
	default:
		return nil
	}
	if err != nil {
		return cn.planOrFail(err)
	}
	cn.pending = out
	return nil
}

// trackError attributes an ErrorResponse. A simple query keeps its item until
// ReadyForQuery; in an extended batch the failing item ends and Postgres skips
// everything up to Sync.
func (cn *conn) trackError(ctx context.Context, it *item, body []byte) (bool, error) {
	it.errCode, it.errMsg = errorFields(body)
	forward := true
	if it.refusal != nil {
		forward = false
		if err := cn.writeClient(it.refusal); err != nil {
			return false, err
		}
	}
	switch it.kind {
	case itemQuery, itemSync:
		return forward, nil
	}
	cn.pop()
	cn.finish(ctx, it)
	for {
		next := cn.head()
		if next == nil || next.kind == itemSync || next.kind == itemQuery || next.kind == itemProbe {
			return forward, nil
		}
		cn.pop()
		cn.skipped(ctx, next)
	}
}

// endBatch handles ReadyForQuery: it ends the query or Sync at the head and
// any execution the target skipped before it.
func (cn *conn) endBatch(ctx context.Context) {
	for {
		it := cn.head()
		if it == nil {
			return
		}
		cn.pop()
		if it.kind == itemQuery || it.kind == itemSync {
			cn.finish(ctx, it)
			return
		}
		cn.skipped(ctx, it)
	}
}

func (cn *conn) skipped(ctx context.Context, it *item) {
	if it.cmd != nil {
		cn.done(it.cmd, recorder.Outcome{Status: recorder.StatusFailed, Tags: it.tags,
			Error: "not executed: an earlier message of the same batch failed"})
	}
}

// done queues the outcome of cmd for recordOutcomes.
func (cn *conn) done(cmd *proxy.Command, out recorder.Outcome) {
	cn.outcomes = append(cn.outcomes, outcome{cmd, out})
}

// recordOutcomes records the queued outcomes.
func (cn *conn) recordOutcomes(ctx context.Context) {
	for i, o := range cn.outcomes {
		o.cmd.Done(ctx, o.out)
		cn.outcomes[i] = outcome{}
	}
	cn.outcomes = cn.outcomes[:0]
}

// finish records the outcome of a completed item.
func (cn *conn) finish(ctx context.Context, it *item) {
	if it.cmd == nil {
		return
	}
	out := recorder.Outcome{Status: recorder.StatusOK, Tags: it.tags, Rows: it.rows, Masked: it.masker.summary()}
	switch {
	case it.refusal != nil:
		out = recorder.Outcome{Status: recorder.StatusBlocked, Error: it.refusal.Message, Code: it.refusal.Code}
	case it.errCode != "":
		out.Status, out.Error, out.Code = recorder.StatusError, it.errMsg, it.errCode
	}
	cn.done(it.cmd, out)
}

// failPending records the outcome of requests the target never answered.
func (cn *conn) failPending(ctx context.Context) {
	cn.qmu.Lock()
	q := cn.queue
	cn.queue = nil
	cn.qmu.Unlock()
	for _, it := range q {
		if it.cmd != nil {
			it.cmd.Done(ctx, recorder.Outcome{Status: recorder.StatusFailed,
				Tags: it.tags, Error: "the session ended before the target answered"})
		}
	}
}

// tagRows returns the row count of a command tag ("INSERT 0 5" → 5).
func tagRows(tag string) int64 {
	i := strings.LastIndexByte(tag, ' ')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(tag[i+1:], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// paramOIDs decodes a ParameterDescription body.
func paramOIDs(body []byte) []uint32 {
	if len(body) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+4*n {
		return nil
	}
	oids := make([]uint32, n)
	for i := range oids {
		oids[i] = binary.BigEndian.Uint32(body[2+4*i:])
	}
	return oids
}

// outcome is a command's outcome waiting to be recorded.
type outcome struct {
	cmd *proxy.Command
	out recorder.Outcome
}
