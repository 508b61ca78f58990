package postgres

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"strings"

	"github.com/regate/regate/parse"
)

// copyOut describes a COPY … TO STDOUT whose rows must be masked.
type copyOut struct {
	csv        bool
	delim      rune
	null       string
	header     bool
	headerSeen bool
}

// copyOptions reads the format options of a COPY statement's AST.
func copyOptions(st parse.Statement) (opts copyOut, binary bool) {
	opts = copyOut{delim: '\t', null: `\N`}
	cs, _ := st.AST["CopyStmt"].(map[string]any)
	list, _ := cs["options"].([]any)
	for _, o := range list {
		de, _ := o.(map[string]any)["DefElem"].(map[string]any)
		name, _ := de["defname"].(string)
		val := defString(de["arg"])
		switch name {
		case "format":
			switch strings.ToLower(val) {
			case "csv":
				opts.csv, opts.delim, opts.null = true, ',', ""
			case "binary":
				binary = true
			}
		case "delimiter":
			if r := []rune(val); len(r) == 1 {
				opts.delim = r[0]
			}
		case "null":
			opts.null = val
		case "header":
			opts.header = val == "" || !strings.EqualFold(val, "false") && val != "0" && !strings.EqualFold(val, "off")
		}
	}
	return opts, binary
}

func defString(arg any) string {
	m, _ := arg.(map[string]any)
	if s, ok := m["String"].(map[string]any); ok {
		v, _ := s["sval"].(string)
		return v
	}
	if b, ok := m["Boolean"].(map[string]any); ok {
		if v, _ := b["boolval"].(bool); v {
			return "true"
		}
		return "false"
	}
	return ""
}

// checkMaskable refuses, before anything runs, a statement whose output regate
// could not mask: a COPY in binary format, a COPY of a table regate cannot be
// sure to resolve as the target will (copyTable), or one that returns a masked
// column other than as itself (checkColumnMasks; for COPY (query), which
// names no columns, at all).
func (cn *conn) checkMaskable(ctx context.Context, m *resultMasker, stmts []parse.Statement) error {
	if m == nil {
		return nil
	}
	for i, st := range stmts {
		if st.Node != "CopyStmt" {
			continue
		}
		cs, _ := st.AST["CopyStmt"].(map[string]any)
		if from, _ := cs["is_from"].(bool); from {
			continue
		}
		if _, binary := copyOptions(st); binary {
			return errors.New("the policy requires masking, which regate cannot apply to COPY in binary format")
		}
		if err := cn.copyTable(ctx, m, i, len(stmts), cs); err != nil {
			return err
		}
	}
	cacheable := len(stmts) > 0 && len(m.cols) > 0
	if cacheable && cn.maskOK.same(stmts, m.src) {
		m.redact = cn.maskOK.redact
		return nil
	}
	if err := checkColumnMasks(m.cols, stmts); err != nil {
		return err
	}
	m.redact = len(m.cols) > 0 && readsMasked(m.cols, stmts)
	if cacheable {
		cn.maskOK = maskChecked{stmt: checkedKey(stmts), nStmts: len(stmts), masks: m.src, redact: m.redact}
	}
	return nil
}

// copyTable resolves, before it runs, the table of statement i (of n), a
// COPY … TO STDOUT under column masks, so that its rows are masked by the
// columns the target will read. regate looks the name up on a connection of
// its own, which sees neither the session's search_path nor what the session
// has not committed (a temporary table created in the same transaction or
// query string), so an unqualified name is taken only when it is the only
// statement of its query, the session is outside a transaction block with
// nothing else in flight, and the name is unique in the database.
func (cn *conn) copyTable(ctx context.Context, m *resultMasker, i, n int, cs map[string]any) error {
	rv, ok := cs["relation"].(map[string]any)
	if !ok || len(m.cols) == 0 {
		return nil // COPY (query), or detectors only: they read the whole line
	}
	schema, _ := rv["schemaname"].(string)
	name, _ := rv["relname"].(string)
	if schema == "" && (n > 1 || !cn.idle()) {
		return fmt.Errorf("the policy masks columns, and regate cannot resolve the unqualified table %q "+
			"inside a transaction block, next to other statements or behind statements in flight "+
			"(it looks tables up on a connection of its own): qualify it with its schema (COPY public.%s …)",
			name, name)
	}
	rel, err := cn.s.catalog.relationByName(ctx, cn.database, schema, name)
	if err != nil {
		return err
	}
	if m.copyRels == nil {
		m.copyRels = map[int]*relation{}
	}
	m.copyRels[i] = rel
	return nil
}

// planCopy builds the column plan of statement idx, a COPY … TO STDOUT.
func (cn *conn) planCopy(m *resultMasker, idx int, st parse.Statement) error {
	opts, _ := copyOptions(st)
	m.copy = &opts
	m.planned = true
	cs, _ := st.AST["CopyStmt"].(map[string]any)
	if _, isQuery := cs["query"]; isQuery || len(m.cols) == 0 {
		// Detectors only, or COPY (query), whose output checkColumnMasks
		// found free of masked columns: detectors read the whole line.
		m.plan = nil
		return nil
	}
	rel := m.copyRels[idx]
	if rel == nil {
		return errors.New("COPY of a table that was not looked up before it ran")
	}
	cols := rel.columns()
	if list, ok := cs["attlist"].([]any); ok {
		cols = cols[:0:0]
		for _, a := range list {
			want := defString(a)
			for _, c := range rel.columns() {
				if c.name == want {
					cols = append(cols, c)
				}
			}
		}
	}
	m.plan = make([]colPlan, len(cols))
	for i, c := range cols {
		p := colPlan{name: rel.name + "." + c.name, textual: textualTypes[c.typ] || c.typ >= firstUserOID,
			json: c.typ == oidJSON || c.typ == oidJSONB}
		p.textual = p.textual || p.json
		for _, o := range m.cols {
			if columnMatches(o.Column, c.name, rel, c.name) {
				p.whole, p.with = true, o.With
				break
			}
		}
		p.detector = m.det != nil && (p.textual || containerTypes[c.typ])
		p.nullHit = containerTypes[c.typ]
		m.plan[i] = p
	}
	return nil
}

// copyRow masks one CopyData row of COPY … TO STDOUT in text or CSV format.
func (m *resultMasker) copyRow(row []byte) ([]byte, error) {
	c := m.copy
	if c.header && !c.headerSeen {
		c.headerSeen = true
		return row, nil
	}
	if len(m.plan) == 0 { // detectors only: the whole line is text
		masked, k := m.det.Bytes(row)
		if k > 0 {
			m.counts["(copy)"] += int64(k)
		}
		return masked, nil
	}
	fields, err := c.split(row)
	if err != nil {
		return nil, err
	}
	if len(fields) != len(m.plan) {
		return nil, fmt.Errorf("COPY row has %d fields, expected %d", len(fields), len(m.plan))
	}
	for i, f := range fields {
		if f == nil {
			continue
		}
		v, changed := m.value(i, true, f)
		if changed {
			fields[i] = v
		}
	}
	return c.join(fields), nil
}

// split cuts a row into fields; a nil field is NULL.
func (c *copyOut) split(row []byte) ([][]byte, error) {
	row = bytes.TrimSuffix(row, []byte("\n"))
	if !c.csv {
		parts := splitEscaped(row, byte(c.delim))
		for i, p := range parts {
			if string(p) == c.null {
				parts[i] = nil
			} else {
				parts[i] = []byte(unescapeCopy(string(p)))
			}
		}
		return parts, nil
	}
	r := csv.NewReader(bytes.NewReader(row))
	r.Comma, r.LazyQuotes, r.FieldsPerRecord = c.delim, true, -1
	rec, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("cannot read a CSV row of COPY: %w", err)
	}
	out := make([][]byte, len(rec))
	for i, f := range rec {
		if f != c.null || c.null != "" {
			out[i] = []byte(f)
		}
	}
	return out, nil
}

func (c *copyOut) join(fields [][]byte) []byte {
	if !c.csv {
		parts := make([]string, len(fields))
		for i, f := range fields {
			if f == nil {
				parts[i] = c.null
			} else {
				parts[i] = escapeCopy(string(f))
				if c.delim != '\t' {
					parts[i] = strings.ReplaceAll(parts[i], string(c.delim), `\`+string(c.delim))
				}
			}
		}
		return []byte(strings.Join(parts, string(c.delim)) + "\n")
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Comma = c.delim
	rec := make([]string, len(fields))
	for i, f := range fields {
		rec[i] = string(f)
	}
	_ = w.Write(rec)
	w.Flush()
	return b.Bytes()
}

var copyEscapes = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

func escapeCopy(s string) string { return copyEscapes.Replace(s) }

// splitEscaped cuts a text-format COPY row at delim, skipping a delimiter
// escaped with a backslash (PostgreSQL writes a delimiter inside a value so).
func splitEscaped(row []byte, delim byte) [][]byte {
	var parts [][]byte
	start := 0
	for i := 0; i < len(row); i++ {
		switch row[i] {
		case '\\':
			i++
		case delim:
			parts = append(parts, row[start:i])
			start = i + 1
		}
	}
	return append(parts, row[start:])
}

func unescapeCopy(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
