package postgres

import (
	"context"
	"strconv"
	"strings"

	"github.com/regate/regate/recorder"
)

// backendLoop relays target messages to the client, replacing the marker
// errors of blocked requests and recording each outcome at ReadyForQuery.
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
			return err
		}
	}
}

func (cn *conn) relayBackend(ctx context.Context, typ byte, body []byte) error {
	ex := cn.head()
	forward := true
	switch typ {
	case 'C':
		if ex != nil {
			tag, _ := cstring(body)
			ex.tags = append(ex.tags, tag)
			ex.rows += tagRows(tag)
		}
	case 'E':
		if ex != nil {
			ex.errCode, ex.errMsg = errorFields(body)
			if ex.refusal != nil {
				forward = false
				if err := cn.writeClient(ex.refusal); err != nil {
					return err
				}
			}
		}
	case 'Z':
		if len(body) == 1 {
			cn.txStatus = body[0]
		}
		if ex != nil {
			cn.pop()
			cn.finish(ctx, ex)
			forward = !ex.quiet
		}
	default:
		// Anything else a marker query produces is not the client's business.
		forward = ex == nil || ex.refusal == nil || typ == 'N' || typ == 'A' || typ == 'S'
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

func (cn *conn) writeClient(m interface{ Encode([]byte) ([]byte, error) }) error {
	buf, err := m.Encode(nil)
	if err != nil {
		return err
	}
	cn.cmu.Lock()
	defer cn.cmu.Unlock()
	_, err = cn.cw.Write(buf)
	return err
}

// finish records the outcome of a completed exchange.
func (cn *conn) finish(ctx context.Context, ex *exchange) {
	if ex.cmd == nil {
		return
	}
	out := recorder.Outcome{Status: recorder.StatusOK, Tags: ex.tags, Rows: ex.rows}
	switch {
	case ex.refusal != nil:
		out = recorder.Outcome{Status: recorder.StatusBlocked, Error: ex.refusal.Message, Code: ex.refusal.Code}
	case ex.errCode != "":
		out.Status, out.Error, out.Code = recorder.StatusError, ex.errMsg, ex.errCode
	}
	ex.cmd.Done(ctx, out)
}

// failPending records the outcome of requests the target never answered.
func (cn *conn) failPending(ctx context.Context) {
	cn.qmu.Lock()
	q := cn.queue
	cn.queue = nil
	cn.qmu.Unlock()
	for _, ex := range q {
		if ex.cmd != nil {
			ex.cmd.Done(ctx, recorder.Outcome{Status: recorder.StatusFailed,
				Tags: ex.tags, Error: "the session ended before the target answered"})
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
