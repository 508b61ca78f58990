package postgres

import (
	"fmt"
	"sort"
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// Column masks are applied to result columns: RowDescription names each
// column and, for a column that is a table's column passed through (also
// through subqueries and WITH queries, which PostgreSQL follows), its source
// table and attribute. A value computed from a masked column (lower(email),
// email || '', string_agg(email, ','), a scalar subquery, ARRAY(SELECT email
// …)), a whole-row value (SELECT p FROM people p, row_to_json(p), p.to_json)
// or a column PostgreSQL reports without a source (a set operation's, a FULL
// JOIN's merged one) under another name has neither, so no column mask could
// find it. checkColumnMasks refuses such statements before they run, from
// their syntax trees: a statement returns a masked column only as itself.
// Nor may it write a masked value where no mask follows it (another table's
// column, a new table or view, a file), from where it could be read under
// another name: only back into a column the mask covers (write, storeHow).
//
// The check is by name and errs on the side of refusing: a column mask names
// a column ("email", "customers.email"), and every column of that name, in
// any table, counts as masked, as do the names a subquery, a WITH query or a
// column alias list gives a masked column (any alias in such a list, since
// positions are not tracked). What statements read in WHERE, JOIN, GROUP BY,
// HAVING and ORDER BY is not output and is not checked. Views' and generated
// columns, and the database's functions that return masked values, are
// followed through the catalog (maskviews.go, maskderived.go, maskfuncs.go).

// opaqueQueryFuncs are PostgreSQL's built-in functions (and those of its
// contrib extensions dblink, tablefunc, pageinspect and pg_walinspect) that
// run SQL given as text, or read whole tables, schemas, databases, open
// cursors, their pages or the changes logged to them
// (query_to_xml('SELECT email FROM customers', …), cursor_to_xml of a cursor
// declared over a masked column, ts_stat, crosstab('SELECT … email …'),
// dblink(…, 'SELECT email …'), heap_page_items(get_raw_page('customers', 0)),
// pg_logical_slot_get_changes): their results come from columns the
// statement does not name, unmasked. The default library blocks them too
// (query_functions and value_export_functions in postgres.rego); this holds
// under any policy, whatever schema the call names.
var opaqueQueryFuncs = map[string]bool{
	"connectby": true, "crosstab": true, "crosstab2": true, "crosstab3": true, "crosstab4": true,
	"dblink": true, "dblink_fetch": true, "dblink_get_result": true,
	"pg_logical_slot_get_changes": true, "pg_logical_slot_peek_changes": true,
	"pg_logical_slot_get_binary_changes": true, "pg_logical_slot_peek_binary_changes": true,
	"get_raw_page": true, "heap_page_items": true, "heap_page_item_attrs": true, "tuple_data_split": true,
	"bt_page_items": true, "brin_page_items": true, "gist_page_items": true, "gist_page_items_bytea": true,
	"hash_page_items": true, "gin_leafpage_items": true, "pg_get_wal_block_info": true,
	"cursor_to_xml": true, "database_to_xml": true, "database_to_xml_and_xmlschema": true,
	"query_to_xml": true, "query_to_xml_and_xmlschema": true, "query_to_xmlschema": true,
	"schema_to_xml": true, "schema_to_xml_and_xmlschema": true,
	"table_to_xml": true, "table_to_xml_and_xmlschema": true,
	"ts_rewrite": true, "ts_stat": true,
}

// outMode is where a select list's values go.
type outMode int

const (
	outTop   outMode = iota // to the client, through RowDescription
	outInner                // to the select around it (FROM subquery, WITH query)
	outExpr                 // into an expression (scalar or ARRAY subquery)
	outCopy                 // to the client through COPY, which names no columns
	outStore                // into a table, a view or a file: where no mask follows
)

// storeHow says where a value written out of a mask's reach goes (in a
// refusal's text).
const storeHow = "into a table, a view or a file, where no mask follows it " +
	"(a masked column may be written only back into a column the mask covers)"

// maskCheck is the state of checkColumnMasks.
type maskCheck struct {
	cols    []decision.Mask // the policy's column masks
	derived []decision.Mask // regate's, on generated and view columns
	// scoped: the columns derived masks name, by table or view (lower
	// case): masked where a FROM item names that table.
	scoped map[string]map[string]bool
	masked map[string]bool // masked column names, lower case (last part of each mask)
	byName map[string]bool // names an unqualified mask matches by result name alone
	funcs  rowFuncs
	// relCols, when set, holds the columns of the relations a statement
	// may name (lower case, by relation name): a relation it knows has
	// only its own masked columns, not every masked name (maskfuncs.go).
	relCols map[string]map[string]bool
}

// taint maps the names that carry masked values to whether the value is
// sourceless: a column RowDescription reports without its source table (a
// set operation's, a FULL JOIN's merged column), which only its name can
// match to a mask.
type taint map[string]bool

func (t taint) add(o taint) {
	for k, v := range o {
		t[k] = t[k] || v
	}
}

// seed adds the names t does not have yet, as carrying a masked value with
// a source: names a relation may have as columns.
func (t taint) seed(names map[string]bool) {
	for k := range names {
		if _, ok := t[k]; !ok {
			t[k] = false
		}
	}
}

// statsValueColumns are the columns of PostgreSQL's statistics (views and
// catalogs) that hold sample values of a table's columns, masked ones too:
// histogram_bounds of pg_stats lists emails when email is masked. They have
// no mask to follow them, so under column masks a statement may not return
// them (their other columns, counts and fractions, are free).
var statsValueColumns = map[string]map[string]bool{
	"pg_stats":              {"most_common_vals": true, "histogram_bounds": true, "most_common_elems": true},
	"pg_stats_ext":          {"most_common_vals": true},
	"pg_stats_ext_exprs":    {"most_common_vals": true, "histogram_bounds": true, "most_common_elems": true},
	"pg_statistic":          {"stavalues1": true, "stavalues2": true, "stavalues3": true, "stavalues4": true, "stavalues5": true},
	"pg_statistic_ext_data": {"stxdmcv": true, "stxdexpr": true},
}

// maskEscape is a way a masked column leaves a statement unmasked.
type maskEscape struct {
	columns string // the masked column's name, or the masked names
	how     string
}

func (e *maskEscape) Error() string {
	if strings.Contains(e.how, storeHow) {
		return fmt.Sprintf("the policy masks column %s, which this statement writes %s", e.columns, e.how)
	}
	if e.how == renameHow {
		return fmt.Sprintf("the policy masks column %s, which this statement %s", e.columns, e.how)
	}
	return fmt.Sprintf("the policy masks column %s, which this statement returns %s, where regate cannot mask it "+
		"(a column mask applies to a column returned as itself)", e.columns, e.how)
}

func (c *maskCheck) escape(column, how string) *maskEscape {
	if column != "" {
		return &maskEscape{columns: fmt.Sprintf("%q", column), how: how}
	}
	names := make([]string, 0, len(c.masked))
	for n := range c.masked {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	return &maskEscape{columns: strings.Join(names, ", "), how: how}
}

// checkColumnMasks refuses statements that would return a value from a
// column named by a column mask in a form the mask cannot reach.
func checkColumnMasks(cols []decision.Mask, stmts []parse.Statement, funcs rowFuncs) (err error) {
	return checkMasks(cols, nil, stmts, funcs)
}

// checkMasks is checkColumnMasks with derived masks: those regate added on
// generated columns and view columns (maskderived.go, maskviews.go), which
// name a table's (or view's) column and count in the FROM items that name
// that table, not as a name in every table as the policy's masks do.
func checkMasks(cols, derived []decision.Mask, stmts []parse.Statement, funcs rowFuncs) (err error) {
	return checkMasksIn(cols, derived, stmts, funcs, nil)
}

// checkMasksIn is checkMasks knowing the columns of the relations stmts name
// (relCols, lower case, by relation name; nil: not known): a relation named
// there has only its own masked columns, and its whole row is clean when it
// has none (maskCheck.relCols).
func checkMasksIn(cols, derived []decision.Mask, stmts []parse.Statement, funcs rowFuncs,
	relCols map[string]map[string]bool) (err error) {
	if len(cols) == 0 {
		return nil
	}
	defer func() {
		// A tree shape the walk does not expect must not end the process:
		// the statement is refused (the panic is a bug to report).
		if r := recover(); r != nil {
			err = fmt.Errorf("regate could not check this statement against the column masks (internal error: %v)", r)
		}
	}()
	c := newMaskCheck(cols, derived, funcs)
	c.relCols = relCols
	for _, st := range stmts {
		for _, fn := range st.Functions {
			if opaqueQueryFuncs[fn] {
				return c.escape("", fmt.Sprintf("through %s(), which runs a query or reads a table that is not in "+
					"the statement", fn))
			}
		}
		if err := c.statement(st.AST, nil); err != nil {
			return err
		}
	}
	return nil
}

func newMaskCheck(cols, derived []decision.Mask, funcs rowFuncs) *maskCheck {
	c := &maskCheck{funcs: funcs, cols: cols, derived: derived, scoped: scopedNames(derived)}
	c.masked, c.byName = maskedNames(cols)
	return c
}

// scopedNames returns the columns derived masks name, by table (lower case;
// nil for none).
func scopedNames(derived []decision.Mask) map[string]map[string]bool {
	var scoped map[string]map[string]bool
	for _, o := range derived {
		parts := strings.Split(strings.ToLower(o.Column), ".")
		if n := len(parts); n >= 2 {
			if scoped == nil {
				scoped = map[string]map[string]bool{}
			}
			if scoped[parts[n-2]] == nil {
				scoped[parts[n-2]] = map[string]bool{}
			}
			scoped[parts[n-2]][parts[n-1]] = true
		}
	}
	return scoped
}

// maskedNames returns the column names column masks name (the last part of
// each, lower case), and those an unqualified mask matches by result name.
func maskedNames(cols []decision.Mask) (masked, byName map[string]bool) {
	masked, byName = map[string]bool{}, map[string]bool{}
	for _, o := range cols {
		parts := strings.Split(strings.ToLower(o.Column), ".")
		masked[parts[len(parts)-1]] = true
		if len(parts) == 1 {
			byName[parts[0]] = true
		}
	}
	return masked, byName
}

func (c *maskCheck) newScope(outer *scope) *scope {
	sc := &scope{tainted: taint{}, items: map[string]bool{}, clean: map[string]bool{}, ctes: map[string]taint{},
		funcs: map[string]bool{}, outer: outer}
	if c.relCols == nil { // any name may be a column of a relation in scope
		sc.tainted.seed(c.masked)
	}
	return sc
}

func (c *maskCheck) statement(ast map[string]any, outer *scope) error {
	for node, v := range ast {
		b, _ := v.(map[string]any)
		switch node {
		case "SelectStmt":
			if b["intoClause"] != nil { // SELECT … INTO a new table
				_, err := c.sel(b, outer, outStore)
				return err
			}
			_, err := c.sel(b, outer, outTop)
			return err
		case "DeclareCursorStmt", "PrepareStmt":
			// A cursor's and a prepared statement's rows come back later,
			// through FETCH and EXECUTE, described as their query's are.
			q, _ := b["query"].(map[string]any)
			return c.statement(q, outer)
		case "ExplainStmt":
			// EXPLAIN returns a plan, not its query's rows; but EXPLAIN
			// ANALYZE runs the query, and what that writes is checked.
			q, _ := b["query"].(map[string]any)
			if sb, ok := q["SelectStmt"].(map[string]any); ok && sb["intoClause"] == nil {
				return nil
			}
			return c.statement(q, outer)
		case "CreateTableAsStmt", "ViewStmt":
			// CREATE TABLE AS, CREATE MATERIALIZED VIEW, CREATE VIEW: the
			// output goes into a relation no mask names.
			q, _ := b["query"].(map[string]any)
			if sb, ok := q["SelectStmt"].(map[string]any); ok {
				_, err := c.sel(sb, outer, outStore)
				return err
			}
			// CREATE TABLE … AS EXECUTE: what the prepared statement
			// returns is not in this statement.
			return c.escape("", "through a prepared statement's rows "+storeHow)
		case "RuleStmt":
			// A rule's actions run later, with what NEW and OLD hold.
			actions, _ := b["actions"].([]any)
			for _, a := range actions {
				if am, ok := a.(map[string]any); ok {
					if err := c.statement(am, outer); err != nil {
						return err
					}
				}
			}
			return nil
		case "CopyStmt":
			if is, _ := b["is_from"].(bool); is {
				return nil
			}
			toFile := b["filename"] != nil || b["is_program"] == true
			if q, ok := b["query"].(map[string]any); ok {
				mode := outCopy
				if toFile {
					mode = outStore
				}
				_, err := c.sel(selectBody(q), outer, mode)
				return err
			}
			if toFile {
				// Which of the table's columns are masked is not in the
				// statement: any may be.
				return c.escape("", "through COPY table "+storeHow)
			}
			return nil
		case "InsertStmt", "UpdateStmt", "DeleteStmt":
			return c.write(b, outer)
		case "RenameStmt", "AlterObjectSchemaStmt":
			return c.rename(node, b)
		case "MergeStmt":
			return c.merge(b, outer)
		case "CallStmt":
			// A procedure's INOUT and OUT parameters come back as a row.
			return c.expr(map[string]any{"FuncCall": b["funccall"]}, c.newScope(outer), "through CALL")
		}
	}
	return nil
}

// selectBody returns the fields of a SelectStmt, wrapped or not.
func selectBody(v any) map[string]any {
	m, _ := v.(map[string]any)
	if inner, ok := m["SelectStmt"].(map[string]any); ok {
		return inner
	}
	return m
}

// child returns v's member key as a map (nil when v is not a map or has none).
func child(v any, key string) map[string]any {
	m, _ := v.(map[string]any)
	c, _ := m[key].(map[string]any)
	return c
}

// firstName returns the smallest name of t, for a stable message.
func firstName(t taint) string {
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// with reads a WITH clause into a new scope below outer.
func (c *maskCheck) with(v any, outer *scope) (*scope, error) {
	sc := c.newScope(outer)
	w, _ := v.(map[string]any)
	if inner, ok := w["WithClause"].(map[string]any); ok {
		w = inner
	}
	ctes, _ := w["ctes"].([]any)
	for _, x := range ctes {
		cte := child(x, "CommonTableExpr")
		name, _ := cte["ctename"].(string)
		q, _ := cte["ctequery"].(map[string]any)
		var out taint // nil for a data-modifying WITH query: its output is not tracked
		if sb, ok := q["SelectStmt"].(map[string]any); ok {
			var err error
			if out, err = c.sel(sb, sc, outInner); err != nil {
				return nil, err
			}
			if out == nil {
				out = taint{}
			}
		} else if err := c.statement(q, sc); err != nil { // a data-modifying WITH query
			return nil, err
		}
		sc.ctes[strings.ToLower(name)] = renamed(out, cte["aliascolnames"], false)
	}
	return sc, nil
}

// renamed applies a column alias list to tainted output names. Positions are
// not tracked: when any output is tainted, every alias is (sourceless when
// any output is, or when sourceless is set).
func renamed(out taint, aliases any, sourceless bool) taint {
	list, _ := aliases.([]any)
	if len(out) == 0 || len(list) == 0 {
		return out
	}
	res := taint{}
	res.add(out)
	for _, v := range out {
		sourceless = sourceless || v
	}
	for _, a := range list {
		if s := stringNode(a); s != "" {
			res[strings.ToLower(s)] = res[strings.ToLower(s)] || sourceless
		}
	}
	return res
}

func stringNode(v any) string {
	s := child(v, "String")
	sv, _ := s["sval"].(string)
	return sv
}

// readsMasked reports whether stmts name a masked column anywhere (also in
// WHERE, JOIN, ORDER BY …), a star, a whole row or a function that returns
// masked values (maskfuncs.go): PostgreSQL's error and
// notice texts may then quote a masked value (`invalid input syntax for type
// integer: "ann@example.com"`, a unique violation's key), so they are
// withheld (redactNotice).
func readsMasked(cols, derived []decision.Mask, stmts []parse.Statement, funcs rowFuncs) bool {
	masked, _ := maskedNames(cols)
	items := map[string]bool{}
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				collect(x)
			}
		case map[string]any:
			for k, x := range v {
				if k == "RangeVar" || k == "alias" {
					xm, _ := x.(map[string]any)
					for _, key := range []string{"relname", "aliasname"} {
						if n, _ := xm[key].(string); n != "" {
							items[strings.ToLower(n)] = true
						}
					}
				}
				collect(x)
			}
		}
	}
	found := false
	var find func(v any)
	find = func(v any) {
		if found {
			return
		}
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				find(x)
			}
		case map[string]any:
			if fc, ok := v["FuncCall"].(map[string]any); ok {
				if _, ok := funcs.calls[funcCallName(fc)]; ok { // a function that returns masked values
					found = true
					return
				}
			}
			if f := refFields(v); f != nil {
				last := strings.ToLower(f[len(f)-1])
				found = last == "*" || masked[last] || len(f) == 1 && items[last] ||
					len(f) >= 2 && funcs.has(last) && items[strings.ToLower(f[len(f)-2])]
				return
			}
			for _, x := range v {
				find(x)
			}
		}
	}
	for _, st := range stmts {
		collect(st.AST)
	}
	for _, scoped := range []map[string]map[string]bool{scopedNames(derived), statsValueColumns} {
		for table, cols := range scoped { // a derived mask's columns count where their table is named
			if items[table] {
				for col := range cols {
					masked[col] = true
				}
			}
		}
	}
	for _, st := range stmts {
		find(st.AST)
	}
	return found
}
