package postgres

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"slices"
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
// column other than as itself (checkColumnMasks). COPY … TO STDOUT names no
// columns. When it comes alone in a simple Query (simple, its text; ""
// otherwise), regate describes its table or query on the session's
// connection just before it runs (copyprobe.go). Otherwise COPY table is
// planned from the table's columns in the catalog (copyTable), and COPY
// (query) may return a masked column only when it selects from one table
// (copyQueryOutputs), planned the same way.
func (cn *conn) checkMaskable(ctx context.Context, m *resultMasker, stmts []parse.Statement, simple string) error {
	if m == nil {
		return nil
	}
	check := stmts // what checkColumnMasks reads
	// checkAsSelect makes checkColumnMasks read statement i's query as the
	// SELECT its output is planned like (from a description, or from its
	// one table's columns).
	checkAsSelect := func(i int, q map[string]any) {
		if &check[0] == &stmts[0] {
			check = slices.Clone(stmts)
		}
		check[i] = parse.Statement{Command: "SELECT", Node: "SelectStmt", AST: q}
	}
	var funcs rowFuncs
	var funcSet *rowFuncSet
	sessionDDL := false // the session's open transaction added columns (the verdict is not kept)
	if len(m.cols) > 0 {
		var err error
		if funcSet, err = cn.s.catalog.rowFuncs(ctx, cn.database); err != nil {
			return err
		}
		funcs = rowFuncs{db: funcSet.names, all: cn.changingFuncs() || changesFuncs(stmts)}
		funcs.countBuiltin = !funcSet.ownCount && !funcs.all
		// Generated columns computed from a masked column, the masked
		// columns of partitions and child tables, and view columns that
		// return a masked column are masked too (maskderived.go,
		// maskviews.go).
		pending, own := cn.pendingColumns(), columnDDL(stmts)
		sessionDDL = len(pending) > 0
		m.nPolicy = len(m.cols)
		m.cols, funcs.calls = funcSet.derivedMasks(m.cols, funcs)
		m.cols = withDerived(m.cols, pending, own)
		m.maskUnknown, m.maskTables = pendingMasks(m.cols, pending, own)
	}
	for i, st := range stmts {
		if st.Node != "CopyStmt" {
			continue
		}
		cs, _ := st.AST["CopyStmt"].(map[string]any)
		if from, _ := cs["is_from"].(bool); from {
			continue
		}
		if cs["filename"] != nil || cs["is_program"] == true {
			// To a file or program: nothing comes back to mask, and
			// checkColumnMasks refuses a masked column going there.
			continue
		}
		if _, binary := copyOptions(st); binary {
			return errors.New("the policy requires masking, which regate cannot apply to COPY in binary format")
		}
		if len(m.cols) == 0 {
			continue // detectors only: they read the whole line
		}
		if rv, ok := cs["relation"].(map[string]any); ok {
			attlist, _ := cs["attlist"].([]any)
			if text, ok := cn.probeTable(simple, len(stmts), rv, attlist); ok {
				m.addProbe(i, &copyProbe{text: text, allColumns: attlist == nil})
				continue
			}
			if err := cn.copyTable(ctx, m, i, len(stmts), rv); err != nil {
				return err
			}
			continue
		}
		q, _ := cs["query"].(map[string]any)
		if checkMasks(m.cols[:m.nPolicy], m.cols[m.nPolicy:], stmts[i:i+1], funcs) == nil {
			if m.copyClean == nil {
				m.copyClean = map[int]bool{}
			}
			m.copyClean[i] = true
			continue // no masked column in the output: nothing to look up
		}
		if text, ok := cn.probeText(simple, len(stmts), q); ok {
			m.addProbe(i, &copyProbe{text: text}) // described before it runs
			checkAsSelect(i, q)
			continue
		}
		rv, outs, ok := copyQueryOutputs(q)
		if !ok {
			continue // another shape: checked (and refused) as COPY (query) below
		}
		if err := cn.copyTable(ctx, m, i, len(stmts), rv); err != nil {
			return err
		}
		rel := m.copyRels[i]
		for _, o := range outs {
			if _, ok := rel.column(o.col); o.col != "" && !ok {
				// A whole row (the table's name) or a system column.
				return fmt.Errorf("the policy masks columns, and COPY (query) returns %q, which is not a column "+
					"of %s.%s: regate cannot tell where its values go (select the table's columns)", o.col, rel.schema, rel.name)
			}
		}
		if m.copyOuts == nil {
			m.copyOuts = map[int][]copyOutput{}
		}
		m.copyOuts[i] = outs
		checkAsSelect(i, q) // planned from the table's columns
	}
	cacheable := len(stmts) > 0 && len(m.cols) > 0 && !funcs.all && !sessionDDL
	if cacheable && cn.maskOK.same(stmts, m.src, funcSet) {
		m.redact = cn.maskOK.redact
		return nil
	}
	if err := checkMasks(m.cols[:m.nPolicy], m.cols[m.nPolicy:], check, funcs); err != nil {
		if err := cn.recheckWithColumns(ctx, m, check, funcs, sessionDDL, err); err != nil {
			return err
		}
		// Passed on what the relations' columns are now: not kept.
		cacheable = false
	}
	m.redact = len(m.cols) > 0 && readsMasked(m.cols[:m.nPolicy], m.cols[m.nPolicy:], stmts, funcs)
	// A verdict that relied on describing a COPY (its query checked as the
	// SELECT it is described as) is not kept: the same statements may come
	// again where no description can be made (the extended protocol, a
	// batch open), and must then pass the stricter check. A verdict kept
	// without one is valid for a described COPY too.
	if cacheable && len(m.copyProbes) == 0 {
		cn.maskOK = maskChecked{stmt: checkedKey(stmts), nStmts: len(stmts), masks: m.src, funcs: funcSet, redact: m.redact}
	}
	return nil
}

// recheckWithColumns runs the check that refused check (with refused) again knowing the
// columns of the relations it names (from the catalog, checkMasksIn): a
// whole row, or *, of a relation without masked columns holds no masked
// value (CREATE TABLE b AS SELECT * FROM orders, row_to_json(o) of orders o).
// Not while the session's open transaction changed columns or functions,
// which the catalog's connection cannot see yet. It returns nil when check
// passes, else the more exact refusal.
func (cn *conn) recheckWithColumns(ctx context.Context, m *resultMasker, check []parse.Statement, funcs rowFuncs,
	sessionDDL bool, refused error) error {
	if funcs.all || sessionDDL {
		return refused
	}
	trees := make([]map[string]any, len(check))
	for i, st := range check {
		trees[i] = st.AST
	}
	names := relationNames(trees...)
	if len(names) == 0 {
		return refused
	}
	relCols, err := cn.s.catalog.relColumns(ctx, cn.database, names)
	if err != nil {
		cn.s.log.Warn("cannot look up the columns of the statement's relations; the mask check's refusal stands",
			"session_id", cn.sess.ID, "error", err)
		return refused
	}
	return checkMasksIn(m.cols[:m.nPolicy], m.cols[m.nPolicy:], check, funcs, relCols)
}

// copyOutput is one output column of COPY (SELECT … FROM table): a column of
// the table, all of them (*), or an expression (which checkColumnMasks makes
// sure reads no masked column).
type copyOutput struct {
	star bool
	col  string // a column of the table
	expr string // an expression's name in the record
}

// copyQueryOutputs recognizes a COPY's query that selects from one table
// (no set operation, WITH, VALUES, join or subquery in FROM, no column alias
// list) and returns the table and the query's output columns in order. A
// column reference is one of the table's when it is unqualified or qualified
// by the table's name (or alias); any other qualified reference (a field of a
// composite column) makes the shape unknown.
func copyQueryOutputs(q map[string]any) (rv map[string]any, outs []copyOutput, ok bool) {
	b := child(q, "SelectStmt")
	if b == nil {
		return nil, nil, false
	}
	if op, _ := b["op"].(string); op != "" && op != "SETOP_NONE" {
		return nil, nil, false
	}
	for _, k := range []string{"withClause", "valuesLists", "intoClause", "larg", "rarg"} {
		if _, has := b[k]; has {
			return nil, nil, false
		}
	}
	from, _ := b["fromClause"].([]any)
	if len(from) != 1 {
		return nil, nil, false
	}
	if rv = child(from[0], "RangeVar"); rv == nil {
		return nil, nil, false
	}
	schema, _ := rv["schemaname"].(string)
	qual, _ := rv["relname"].(string)
	if a, ok := rv["alias"].(map[string]any); ok {
		if _, renamed := a["colnames"]; renamed {
			return nil, nil, false
		}
		qual, _ = a["aliasname"].(string)
		schema = ""
	}
	ours := func(f []string) bool { // f qualifies a column with this table
		switch len(f) {
		case 0:
			return true
		case 1:
			return f[0] == qual
		case 2:
			return schema != "" && f[0] == schema && f[1] == qual
		}
		return false
	}
	targets, _ := b["targetList"].([]any)
	for _, t := range targets {
		rt := child(t, "ResTarget")
		f := refFields(rt["val"])
		switch {
		case f == nil:
			name, _ := rt["name"].(string)
			if name == "" {
				name = "?column?"
			}
			outs = append(outs, copyOutput{expr: name})
		case !ours(f[:len(f)-1]):
			return nil, nil, false
		case f[len(f)-1] == "*":
			outs = append(outs, copyOutput{star: true})
		default:
			outs = append(outs, copyOutput{col: f[len(f)-1]})
		}
	}
	return rv, outs, len(outs) > 0
}

// copyTable resolves, before it runs, the table of statement i (of n), a
// COPY … TO STDOUT under column masks, so that its rows are masked by the
// columns the target will read. regate looks the name up on a connection of
// its own, which sees neither the session's search_path nor what the session
// has not committed (a temporary table created in the same transaction or
// query string), so an unqualified name is taken only when it is the only
// statement of its query, the session is outside a transaction block with
// nothing else in flight, and the name is unique in the database.
func (cn *conn) copyTable(ctx context.Context, m *resultMasker, i, n int, rv map[string]any) error {
	schema, _ := rv["schemaname"].(string)
	name, _ := rv["relname"].(string)
	if schema == "" && (n > 1 || !cn.idle()) {
		return fmt.Errorf("the policy masks columns, and regate cannot resolve the unqualified table %q "+
			"inside a transaction block, next to other statements or behind statements in flight "+
			"(it looks tables up on a connection of its own): qualify it with its schema (public.%s)",
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
func (cn *conn) planCopy(ctx context.Context, m *resultMasker, idx int, st parse.Statement) error {
	opts, _ := copyOptions(st)
	if p := m.copyProbes[idx]; p != nil {
		if err := cn.planProbed(ctx, m, p); err != nil {
			return err
		}
		m.copy = &opts
		return nil
	}
	m.copy = &opts
	m.planned = true
	cs, _ := st.AST["CopyStmt"].(map[string]any)
	rel := m.copyRels[idx]
	if _, isQuery := cs["query"]; isQuery && rel == nil || len(m.cols) == 0 {
		// Detectors only, or COPY (query), whose output checkColumnMasks
		// found free of masked columns: detectors read the whole line.
		if len(m.cols) > 0 && !m.copyClean[idx] {
			return errors.New("COPY (query) whose columns were neither checked nor planned before it ran")
		}
		m.plan = nil
		return nil
	}
	if rel == nil {
		return errors.New("COPY of a table that was not looked up before it ran")
	}
	m.plan = nil
	if outs, ok := m.copyOuts[idx]; ok {
		for _, o := range outs {
			switch {
			case o.star:
				for _, c := range rel.columns() {
					m.plan = append(m.plan, m.copyColumn(rel, c))
				}
			case o.col != "":
				c, ok := rel.column(o.col)
				if !ok { // checkMaskable refused it before it ran
					return fmt.Errorf("COPY (query) returns %q, which is not a column of %s.%s", o.col, rel.schema, rel.name)
				}
				m.plan = append(m.plan, m.copyColumn(rel, c))
			default: // reads no masked column: detectors only
				m.plan = append(m.plan, colPlan{name: o.expr, textual: true, detector: m.det != nil})
			}
		}
		return nil
	}
	var cols []attr
	if list, ok := cs["attlist"].([]any); ok {
		for _, a := range list {
			if c, ok := rel.column(defString(a)); ok {
				cols = append(cols, c)
			}
		}
	} else {
		// Without a column list COPY writes every column but the
		// generated ones.
		for _, c := range rel.columns() {
			if !c.generated {
				cols = append(cols, c)
			}
		}
	}
	for _, c := range cols {
		m.plan = append(m.plan, m.copyColumn(rel, c))
	}
	return nil
}

// copyColumn is the plan of a table's column in COPY output.
func (m *resultMasker) copyColumn(rel *relation, c attr) colPlan {
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
	return p
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
