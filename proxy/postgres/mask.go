package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/proxy/mask"
)

// Type OIDs whose values are text on the wire in both formats.
var textualTypes = map[uint32]bool{
	25: true, 1043: true, 1042: true, 19: true, // text, varchar, bpchar, name
	114: true, 142: true, // json, xml
}

// Type OIDs whose values hold text values (arrays of text-like types,
// records): detectors scan them, and a value with a match becomes NULL, since
// a replacement written into an array or record literal could break its
// syntax (and a binary one holds lengths).
var containerTypes = map[uint32]bool{
	1009: true, 1015: true, 1014: true, 1003: true, // text[], varchar[], bpchar[], name[]
	199: true, 3807: true, 143: true, // json[], jsonb[], xml[]
	2249: true, 2287: true, // record, record[]
}

const (
	oidJSON  = 114
	oidJSONB = 3802
	// firstUserOID: types from here on are user-defined (enums, domains,
	// composites, their arrays).
	firstUserOID = 16384
)

// resultMasker applies a command's mask obligations to what the target
// returns: RowDescription decides what each column gets, DataRow and
// CopyData are rewritten. It records how many values it masked per column.
type resultMasker struct {
	src  []decision.Mask // the decision's obligations (shared by memoized decisions)
	cols []decision.Mask // column masks: the decision's nPolicy, then those regate derives
	// nPolicy: how many of cols are the decision's (checkMasks).
	nPolicy int
	det     *mask.Masker
	plan    []colPlan
	counts  map[string]int64
	planned bool
	copy    *copyOut // set during COPY … TO STDOUT
	redact  bool     // withhold error and notice texts (readsMasked)
	// copyRels: the tables of the COPY … TO STDOUT statements (by index in
	// the query), looked up before the query was forwarded (copyTable).
	copyRels map[int]*relation
	// copyOuts: the output columns of the COPY (query) statements among
	// them (copyQueryOutputs).
	copyOuts map[int][]copyOutput
	// copyProbes: the COPY (query) statements among them that regate
	// describes before they run (copyprobe.go).
	copyProbes map[int]*copyProbe
	// copyClean: the COPY (query) statements among them whose output
	// checkColumnMasks found free of masked columns (planned for
	// detectors only).
	copyClean map[int]bool
	// maskUnknown: the session's open transaction added a masked column
	// (maskderived.go), so a column the catalog does not know is masked.
	maskUnknown bool
	// maskTables: the tables (lower-case names) of which the session's
	// open transaction renamed a column to a masked name: all their
	// columns are masked.
	maskTables map[string]bool
}

// colPlan is what one result column gets.
type colPlan struct {
	name     string // the column's name in the record
	whole    bool   // a column mask: replace the whole value
	with     string
	textual  bool // the value is text on the wire
	json     bool // json or jsonb in text format: a replacement must be a JSON string
	jsonb    bool // binary jsonb: a version byte, then JSON text
	detector bool // run detectors over the value
	nullHit  bool // a detector's match makes the whole value NULL (containers)
}

// newResultMasker compiles d's mask obligations, or returns nil when there are
// none. An obligation regate cannot honour is an error (the caller denies).
func newResultMasker(d decision.Decision) (*resultMasker, error) {
	if len(d.Mask) == 0 {
		return nil, nil
	}
	m := &resultMasker{src: d.Mask, counts: map[string]int64{}}
	var dets []decision.Mask
	for _, o := range d.Mask {
		switch {
		case o.Column != "":
			m.cols = append(m.cols, o)
		case o.Detector != "":
			dets = append(dets, o)
		case o.Field != "":
			// JSON-pointer masks address HTTP bodies; a SQL result has none.
		}
	}
	if len(dets) > 0 {
		det, err := mask.New(dets)
		if err != nil {
			return nil, err
		}
		m.det = det
	}
	return m, nil
}

// describe builds the column plan from a RowDescription. rels resolves the
// source tables of the fields.
func (m *resultMasker) describe(rd *pgproto3.RowDescription, rels map[uint32]*relation) {
	m.plan = make([]colPlan, len(rd.Fields))
	m.planned = true
	for i, f := range rd.Fields {
		name := string(f.Name)
		var table *relation
		src := ""
		if r := rels[f.TableOID]; r != nil {
			table, src = r, r.attrs[int16(f.TableAttributeNumber)].name
		}
		p := colPlan{name: name, textual: textualTypes[f.DataTypeOID] || f.Format == 0 && f.DataTypeOID >= firstUserOID}
		switch {
		case f.DataTypeOID == oidJSON:
			p.json = true
		case f.DataTypeOID == oidJSONB && f.Format == 0:
			p.textual, p.json = true, true
		case f.DataTypeOID == oidJSONB:
			p.jsonb = true
		}
		if table != nil && src != "" {
			p.name = table.name + "." + src
		}
		for _, o := range m.cols {
			if columnMatches(o.Column, name, table, src) {
				p.whole, p.with = true, o.With
				break
			}
		}
		if !p.whole && (m.maskUnknown && unknownColumn(f, rels) || table != nil && m.maskTables[strings.ToLower(table.name)]) {
			p.whole = true
		}
		container := containerTypes[f.DataTypeOID] || f.Format == 1 && f.DataTypeOID >= firstUserOID
		p.detector = m.det != nil && (p.textual || p.jsonb || container)
		p.nullHit = container
		m.plan[i] = p
	}
}

// columnMatches tells whether a column obligation names a result column:
// "col" matches the result name or the source column's name (so an alias does
// not escape a mask), "table.col" and "schema.table.col" match the source.
func columnMatches(want, resultName string, table *relation, src string) bool {
	if !strings.Contains(want, ".") {
		return strings.EqualFold(want, resultName) || src != "" && strings.EqualFold(want, src)
	}
	return table != nil && maskNames(want, table.schema, table.name, src)
}

// row rewrites a DataRow body. It returns the body unchanged when nothing was
// masked.
func (m *resultMasker) row(body []byte) ([]byte, error) {
	if len(body) < 2 {
		return nil, fmt.Errorf("malformed DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	if m.planned && n != len(m.plan) {
		return nil, fmt.Errorf("DataRow has %d columns, RowDescription %d", n, len(m.plan))
	}
	var out []byte
	pos := 2
	for i := 0; i < n; i++ {
		if pos+4 > len(body) {
			return nil, fmt.Errorf("malformed DataRow")
		}
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		start := pos + 4
		end := start
		if l > 0 {
			end += l
		}
		if end > len(body) {
			return nil, fmt.Errorf("malformed DataRow")
		}
		val, changed := m.value(i, l >= 0, body[start:end])
		if changed && out == nil {
			out = append(make([]byte, 0, len(body)+32), body[:pos]...)
		}
		if out != nil {
			out = appendValue(out, val)
		}
		pos = end
	}
	if out == nil {
		return body, nil
	}
	return out, nil
}

// value masks column i; a nil result with changed=true is SQL NULL.
func (m *resultMasker) value(i int, notNull bool, v []byte) ([]byte, bool) {
	if !m.planned || !notNull {
		return v, false
	}
	p := m.plan[i]
	switch {
	case p.whole:
		m.counts[p.name]++
		if !p.textual && !p.jsonb {
			return nil, true
		}
		r := mask.Replace(string(v), p.with)
		switch {
		case p.jsonb:
			return append([]byte{1}, jsonString(r)...), true
		case p.json:
			return []byte(jsonString(r)), true
		}
		return []byte(r), true
	case p.detector && p.nullHit:
		// Scanned as text (text format) or as raw bytes (binary format,
		// where text elements appear verbatim).
		if _, k := m.det.Bytes(v); k > 0 {
			m.counts[p.name] += int64(k)
			return nil, true
		}
		return v, false
	case p.detector:
		prefix := 0
		if p.jsonb && len(v) > 0 {
			prefix = 1
		}
		masked, k := m.det.Bytes(v[prefix:])
		if k == 0 {
			return v, false
		}
		m.counts[p.name] += int64(k)
		return append(append([]byte(nil), v[:prefix]...), masked...), true
	}
	return v, false
}

// jsonString quotes s as a JSON string, for json and jsonb columns.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func appendValue(out, v []byte) []byte {
	if v == nil {
		return binary.BigEndian.AppendUint32(out, 0xffffffff)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
	return append(out, v...)
}

// summary is the record of what was masked: column → number of values.
func (m *resultMasker) summary() map[string]int64 {
	if m == nil || len(m.counts) == 0 {
		return nil
	}
	return m.counts
}

// tableOIDs lists the source tables of a RowDescription.
func tableOIDs(rd *pgproto3.RowDescription) []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	for _, f := range rd.Fields {
		if f.TableOID != 0 && !seen[f.TableOID] {
			seen[f.TableOID] = true
			out = append(out, f.TableOID)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// plan resolves a RowDescription's tables and builds the masker's plan.
func (cn *conn) planMask(ctx context.Context, m *resultMasker, body []byte) error {
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return fmt.Errorf("malformed RowDescription: %w", err)
	}
	return cn.planDescription(ctx, m, &rd, false)
}

// planDescription resolves the source tables of rd's fields in the catalog
// (when column masks or dropGenerated need them) and builds the masker's
// plan. dropGenerated first removes the fields of generated columns (a COPY
// table without a column list writes none, its probe's SELECT * has them).
func (cn *conn) planDescription(ctx context.Context, m *resultMasker, rd *pgproto3.RowDescription, dropGenerated bool) error {
	rels := map[uint32]*relation{}
	if len(m.cols) > 0 || dropGenerated {
		var err error
		oids := tableOIDs(rd)
		if rels, err = cn.s.catalog.relations(ctx, cn.database, oids); err != nil {
			return err
		}
		if slices.ContainsFunc(rd.Fields, func(f pgproto3.FieldDescription) bool { return unknownColumn(f, rels) }) {
			// The cache may predate the column (or the table): look again.
			cn.s.catalog.forget(cn.database, oids)
			if rels, err = cn.s.catalog.relations(ctx, cn.database, oids); err != nil {
				return err
			}
		}
	}
	if dropGenerated {
		kept := rd.Fields[:0]
		for _, f := range rd.Fields {
			if r := rels[f.TableOID]; r == nil || !r.attrs[int16(f.TableAttributeNumber)].generated {
				kept = append(kept, f)
			}
		}
		rd.Fields = kept
	}
	m.describe(rd, rels)
	return nil
}

// unknownColumn reports whether f is a table's column (not a system column)
// that rels does not know: one created after rels was loaded, or in a
// transaction regate's catalog connection cannot see.
func unknownColumn(f pgproto3.FieldDescription, rels map[uint32]*relation) bool {
	if f.TableOID == 0 || f.TableAttributeNumber <= 0 {
		return false
	}
	r := rels[f.TableOID]
	if r == nil {
		return true
	}
	_, ok := r.attrs[int16(f.TableAttributeNumber)]
	return !ok
}

// redactNotice withholds the texts of an ErrorResponse or NoticeResponse body
// that may quote a masked value; the severity, SQLSTATE, position and the
// names of schema, table, column and constraint stay.
func redactNotice(body []byte) []byte {
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil {
		e = pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX000"}
	}
	e.Message = fmt.Sprintf("regate: the server's message is withheld: the statement reads a masked column, "+
		"and the message may quote its value (SQLSTATE %s)", e.Code)
	e.Detail, e.Hint, e.Where, e.InternalQuery, e.Routine = "", "", "", "", ""
	e.InternalPosition, e.UnknownFields = 0, nil
	enc, err := e.Encode(nil)
	if err != nil || len(enc) < 5 {
		enc, _ = (&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX000",
			Message: "regate: the server's message is withheld"}).Encode(nil)
	}
	return enc[5:] // the body, without the type byte and length
}
