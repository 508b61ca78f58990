package postgres

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// prepared is a statement the client created with Parse.
type prepared struct {
	query string
	mu    sync.Mutex
	oids  []uint32 // parameter types: from Parse, completed by ParameterDescription
}

func (p *prepared) setParamTypes(oids []uint32) {
	p.mu.Lock()
	p.oids = oids
	p.mu.Unlock()
}

func (p *prepared) paramType(i int) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i < len(p.oids) {
		return p.oids[i]
	}
	return 0
}

// portal is a statement bound to parameters with Bind.
type portal struct {
	query   string
	params  []*string
	decided bool
	masker  *resultMasker
	// described is the client's latest Describe of this portal, whose
	// answer can plan the masks of its first execution.
	described *item
}

// hiddenDescribe sends a Describe of portal whose answer plans exec's masks
// and is not forwarded to the client.
func (cn *conn) hiddenDescribe(portal string, exec *item) error {
	cn.push(&item{kind: itemDescribe, maskFor: exec})
	d := pgproto3.Describe{ObjectType: 'P', Name: portal}
	buf, err := d.Encode(nil)
	if err != nil {
		return err
	}
	_, err = cn.uw.Write(buf)
	return err
}

// extended handles the extended query protocol. Parse, Bind, Describe, Close,
// Flush and Sync are forwarded as they come (none of them runs anything);
// Execute is decided, with the portal's statement text and parameters, the
// first time a portal is executed. After a refusal the rest of the batch is
// dropped until Sync, as Postgres itself does after an error.
func (cn *conn) extended(ctx context.Context, typ byte, body []byte) error {
	if typ == 'S' {
		cn.discarding = false
		cn.push(&item{kind: itemSync})
		return writeFrame(cn.uw, 'S', body)
	}
	if cn.discarding {
		return nil
	}
	var err error
	switch typ {
	case 'P':
		err = cn.parseMsg(body)
	case 'B':
		err = cn.bindMsg(body)
	case 'D':
		err = cn.describeMsg(body)
	case 'E':
		return cn.executeMsg(ctx, body)
	case 'C':
		err = cn.closeMsg(body)
	case 'H':
	}
	if err != nil {
		cn.fatalToClient(codeProtocolViolation, "regate: "+err.Error())
		return err
	}
	return writeFrame(cn.uw, typ, body)
}

func (cn *conn) parseMsg(body []byte) error {
	var m pgproto3.Parse
	if err := m.Decode(body); err != nil {
		return fmt.Errorf("malformed Parse message: %w", err)
	}
	if cn.stmts == nil {
		cn.stmts = map[string]*prepared{}
	}
	cn.stmts[m.Name] = &prepared{query: m.Query, oids: append([]uint32(nil), m.ParameterOIDs...)}
	cn.push(&item{kind: itemParse})
	return nil
}

func (cn *conn) bindMsg(body []byte) error {
	var m pgproto3.Bind
	if err := m.Decode(body); err != nil {
		return fmt.Errorf("malformed Bind message: %w", err)
	}
	if cn.portals == nil {
		cn.portals = map[string]*portal{}
	}
	st := cn.stmts[m.PreparedStatement]
	pt := &portal{params: make([]*string, len(m.Parameters))}
	if st != nil {
		pt.query = st.query
	}
	for i, raw := range m.Parameters {
		if raw == nil {
			continue
		}
		format := int16(0)
		switch {
		case len(m.ParameterFormatCodes) == 1:
			format = m.ParameterFormatCodes[0]
		case i < len(m.ParameterFormatCodes):
			format = m.ParameterFormatCodes[i]
		}
		var oid uint32
		if st != nil {
			oid = st.paramType(i)
		}
		s := paramText(oid, format, raw)
		pt.params[i] = &s
	}
	if st == nil {
		// Postgres will refuse the Bind; an Execute of it is refused too.
		pt = nil
	}
	cn.portals[m.DestinationPortal] = pt
	cn.push(&item{kind: itemBind})
	return nil
}

// paramText renders a bound parameter in Postgres's text form. Binary values
// of types pgx knows are converted; anything else is shown as \x<hex>.
func paramText(oid uint32, format int16, raw []byte) string {
	if format == pgtype.TextFormatCode {
		return string(raw)
	}
	typeMap := pgtype.NewMap() // pgtype.Map caches plans without locking: one per call
	if t, ok := typeMap.TypeForOID(oid); ok {
		v, err := t.Codec.DecodeValue(typeMap, oid, pgtype.BinaryFormatCode, raw)
		if err == nil {
			if buf, err := typeMap.Encode(oid, pgtype.TextFormatCode, v, nil); err == nil && buf != nil {
				return string(buf)
			}
		}
	}
	return `\x` + hex.EncodeToString(raw)
}

func (cn *conn) describeMsg(body []byte) error {
	var m pgproto3.Describe
	if err := m.Decode(body); err != nil {
		return fmt.Errorf("malformed Describe message: %w", err)
	}
	it := &item{kind: itemDescribe}
	if m.ObjectType == 'S' {
		it.stmt = cn.stmts[m.Name]
	} else if pt := cn.portals[m.Name]; pt != nil {
		pt.described = it
	}
	cn.push(it)
	return nil
}

func (cn *conn) closeMsg(body []byte) error {
	var m pgproto3.Close
	if err := m.Decode(body); err != nil {
		return fmt.Errorf("malformed Close message: %w", err)
	}
	if m.ObjectType == 'S' {
		delete(cn.stmts, m.Name)
	} else {
		delete(cn.portals, m.Name)
	}
	cn.push(&item{kind: itemClose})
	return nil
}

// executeMsg decides a portal's first execution; later executions of the same
// (suspended) portal continue what was already decided.
func (cn *conn) executeMsg(ctx context.Context, body []byte) error {
	var m pgproto3.Execute
	if err := m.Decode(body); err != nil {
		cn.fatalToClient(codeProtocolViolation, "regate: malformed Execute message: "+err.Error())
		return err
	}
	pt, known := cn.portals[m.Portal]
	if !known || pt == nil {
		reason := fmt.Sprintf("portal %q was not bound through regate", m.Portal)
		if known {
			reason = fmt.Sprintf("portal %q is bound to a statement regate did not see prepared", m.Portal)
		}
		return cn.blockExecute(codeInsufficientPriv, cn.sess.Refuse(ctx, cn.baseInput(""), reason))
	}
	if pt.decided {
		// A suspended portal continues under its first decision and masks.
		exec := &item{kind: itemExecute, masker: pt.masker}
		if pt.masker != nil {
			if err := cn.hiddenDescribe(m.Portal, exec); err != nil {
				return err
			}
		}
		cn.push(exec)
		return writeFrame(cn.uw, 'E', body)
	}
	a := cn.authorize(ctx, pt.query, pt.params, false)
	if a.cmd != nil && !a.cmd.Allowed {
		return cn.blockExecute(a.code, a.cmd)
	}
	pt.decided = true
	pt.masker = a.masker
	exec := &item{kind: itemExecute, cmd: a.cmd, masker: a.masker, stmts: a.stmts}
	if a.masker != nil && (pt.described == nil || !cn.adoptDescribe(pt.described, exec)) {
		// Learn the result columns (and their formats, as bound) first,
		// unless the client's own Describe of the portal, not answered
		// yet, tells them.
		if err := cn.hiddenDescribe(m.Portal, exec); err != nil {
			return err
		}
	}
	cn.push(exec)
	return writeFrame(cn.uw, 'E', body)
}
