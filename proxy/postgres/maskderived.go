package postgres

import (
	"strings"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// A generated column (GENERATED ALWAYS AS (expr) STORED, PostgreSQL 12+)
// holds a value computed from other columns of its row: email_domain from
// email, say. A column mask on email must cover it, or SELECT email_domain
// returns what the mask hides. RowDescription reports it as a column of its
// own, and in a statement it is a plain column reference, so neither the
// result plan nor checkColumnMasks could tell. checkMaskable therefore adds,
// for every column mask, a mask of the same replacement on each generated
// column whose expression reads a column the mask names: from the target's
// catalog (pg_attrdef and pg_depend, loaded and refreshed with the function
// set of a row, catalog.rowFuncs), and from the statements the session has
// run in a transaction not yet ended, which regate's catalog connection
// cannot see (columnDDL).
//
// That connection cannot resolve a column the session added in such a
// transaction either: RowDescription gives its table and attribute number,
// and the catalog has no such attribute (yet). planDescription looks again
// (the cache may be older than a committed change), and a column still
// unknown then is masked whole when the session's open transaction added a
// column a mask names or one computed from a masked column
// (resultMasker.maskUnknown): its alias could otherwise hide it. A column
// the open transaction renamed to a masked name is still known by its old
// name: every column of its table is masked until the transaction ends
// (resultMasker.maskTables).

// derivedCol is a column and one column its expression reads, when it is a
// generated column.
type derivedCol struct {
	schema string // "" when a statement named the table without its schema
	table  string
	column string // the generated (or, with no source, added) column
	source string // a column its expression reads ("": not generated)
	// renamed: column is the new name of a column (ALTER TABLE … RENAME).
	renamed bool
}

// generatedQuery lists the generated columns of the database with each
// column their expressions read. The column's default (pg_attrdef) depends
// on the columns its expression reads, and internally on the column itself.
const generatedQuery = `SELECT n.nspname, c.relname, g.attname, r.attname
FROM pg_catalog.pg_attrdef ad
JOIN pg_catalog.pg_attribute g ON g.attrelid = ad.adrelid AND g.attnum = ad.adnum
JOIN pg_catalog.pg_class c ON c.oid = ad.adrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
  AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ad.adrelid
  AND d.refobjsubid > 0 AND d.refobjsubid <> ad.adnum
JOIN pg_catalog.pg_attribute r ON r.attrelid = ad.adrelid AND r.attnum = d.refobjsubid
WHERE g.attgenerated <> '' AND NOT g.attisdropped AND NOT r.attisdropped
ORDER BY 1, 2, 3, 4`

// columnDDL returns the columns stmts create (CREATE TABLE, ALTER TABLE …
// ADD COLUMN), redefine (ALTER COLUMN … SET EXPRESSION) or rename: a
// generated one once per column its expression reads, another once without
// a source.
func columnDDL(stmts []parse.Statement) []derivedCol {
	var out []derivedCol
	for _, st := range stmts {
		b := child(st.AST, st.Node)
		switch st.Node {
		case "RenameStmt":
			name, _ := b["newname"].(string)
			if schema, table := relName(child(b, "relation")); b["renameType"] == "OBJECT_COLUMN" && table != "" {
				out = append(out, derivedCol{schema: schema, table: table, column: name, renamed: true})
			}
		case "CreateStmt":
			elts, _ := b["tableElts"].([]any)
			for _, e := range elts {
				out = appendColumnDef(out, child(b, "relation"), child(e, "ColumnDef"))
			}
		case "AlterTableStmt":
			cmds, _ := b["cmds"].([]any)
			for _, c := range cmds {
				cmd := child(c, "AlterTableCmd")
				switch cmd["subtype"] {
				case "AT_AddColumn":
					out = appendColumnDef(out, child(b, "relation"), child(cmd["def"], "ColumnDef"))
				case "AT_SetExpression":
					name, _ := cmd["name"].(string)
					out = appendDerived(out, child(b, "relation"), name, cmd["def"])
				}
			}
		}
	}
	return out
}

// appendColumnDef adds the column a ColumnDef (nil: none) creates in rel.
func appendColumnDef(out []derivedCol, rel, cd map[string]any) []derivedCol {
	name, _ := cd["colname"].(string)
	schema, table := relName(rel)
	if cd == nil || name == "" || table == "" {
		return out
	}
	cons, _ := cd["constraints"].([]any)
	n := len(out)
	for _, c := range cons {
		if k := child(c, "Constraint"); k["contype"] == "CONSTR_GENERATED" {
			out = appendDerived(out, rel, name, k["raw_expr"])
		}
	}
	if len(out) == n { // not generated, or from no column
		out = append(out, derivedCol{schema: schema, table: table, column: name})
	}
	return out
}

// appendDerived adds a derivedCol for column of rel for every column expr
// reads (the last name of each column reference).
func appendDerived(out []derivedCol, rel map[string]any, column string, expr any) []derivedCol {
	schema, table := relName(rel)
	if table == "" || column == "" {
		return out
	}
	walkColumnRefs(expr, func(fields []any) {
		if s := stringNode(fields[len(fields)-1]); s != "" {
			out = append(out, derivedCol{schema: schema, table: table, column: column, source: s})
		}
	})
	return out
}

// relName returns a RangeVar's schema and table names.
func relName(rel map[string]any) (schema, table string) {
	schema, _ = rel["schemaname"].(string)
	table, _ = rel["relname"].(string)
	return schema, table
}

// walkNodes calls f with the fields of every node of type node in the tree
// v (not looking inside those).
func walkNodes(v any, node string, f func(fields map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		if n, ok := x[node].(map[string]any); ok {
			f(n)
			return
		}
		for _, c := range x {
			walkNodes(c, node, f)
		}
	case []any:
		for _, c := range x {
			walkNodes(c, node, f)
		}
	}
}

// walkColumnRefs calls f with the fields of every column reference in v.
func walkColumnRefs(v any, f func(fields []any)) {
	walkNodes(v, "ColumnRef", func(cr map[string]any) {
		if fields, _ := cr["fields"].([]any); len(fields) > 0 {
			f(fields)
		}
	})
}

// withDerived returns cols and, for each generated column in derived whose
// expression reads a column some mask of cols names, a mask of that column
// with the first such mask's replacement.
func withDerived(cols []decision.Mask, derived ...[]derivedCol) []decision.Mask {
	out := cols
	for _, list := range derived {
		for _, g := range list {
			if g.source == "" {
				continue
			}
			for _, o := range cols {
				if maskNames(o.Column, g.schema, g.table, g.source) {
					name := g.table + "." + g.column
					if g.schema != "" {
						name = g.schema + "." + name
					}
					out = append(out, decision.Mask{Column: name, With: o.With})
					break
				}
			}
		}
	}
	return out
}

// maskNames reports whether the column mask want ("col", "table.col" or
// "schema.table.col") names column col of table in schema ("": a statement
// that did not write it, which any schema matches).
func maskNames(want, schema, table, col string) bool {
	parts := strings.Split(want, ".")
	switch len(parts) {
	case 1:
		return strings.EqualFold(parts[0], col)
	case 2:
		return strings.EqualFold(parts[0], table) && strings.EqualFold(parts[1], col)
	case 3:
		return (schema == "" || strings.EqualFold(parts[0], schema)) &&
			strings.EqualFold(parts[1], table) && strings.EqualFold(parts[2], col)
	}
	return false
}

// pendingMasks tells, from cols (expanded by withDerived) and the columns
// the session's open transaction added or renamed, whether it added a
// masked column (unknown: a column the catalog does not know is masked) and
// the tables of which it renamed a column to a masked name (every column of
// theirs is masked), by lower-case name.
func pendingMasks(cols []decision.Mask, added ...[]derivedCol) (unknown bool, tables map[string]bool) {
	for _, list := range added {
		for _, g := range list {
			for _, o := range cols {
				if !maskNames(o.Column, g.schema, g.table, g.column) {
					continue
				}
				if !g.renamed {
					unknown = true
				} else {
					if tables == nil {
						tables = map[string]bool{}
					}
					tables[strings.ToLower(g.table)] = true
				}
				break
			}
		}
	}
	return unknown, tables
}

// A partition, or a table that inherits from another, is a table of its own
// name: RowDescription reports SELECT … FROM customers_2026 as that table's
// columns, which a mask naming customers.email would not find (a mask by
// column name alone does). withInherited adds, for every mask naming a table,
// the same mask on each of its descendants (pg_inherits).

// inheritEdge is a table and one table that inherits from it (or one of its
// partitions).
type inheritEdge struct {
	parentSchema, parent, childSchema, child string
}

// inheritQuery lists the database's inheritance and partition edges.
const inheritQuery = `SELECT pn.nspname, p.relname, cn.nspname, c.relname
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
ORDER BY 1, 2, 3, 4`

// withInherited returns cols and, for each mask naming a table ("t.col",
// "s.t.col"), that mask on every table inheriting from it, at any depth.
func withInherited(cols []decision.Mask, edges []inheritEdge) []decision.Mask {
	if len(edges) == 0 {
		return cols
	}
	out := cols
	seen := map[string]bool{}
	for i := 0; i < len(out); i++ { // out grows: descendants of descendants
		parts := strings.Split(out[i].Column, ".")
		n := len(parts)
		if n < 2 {
			continue
		}
		for _, e := range edges {
			if !strings.EqualFold(parts[n-2], e.parent) || n == 3 && !strings.EqualFold(parts[0], e.parentSchema) {
				continue
			}
			name := e.childSchema + "." + e.child + "." + parts[n-1]
			if key := strings.ToLower(name); !seen[key] {
				seen[key] = true
				out = append(out, decision.Mask{Column: name, With: out[i].With})
			}
		}
	}
	return out
}

// derivedSet is what derivedMasks derives for one set of column masks.
type derivedSet struct {
	masks []decision.Mask
	calls map[string]funcTaint
}

// maxDerivedMasks bounds the derived mask lists a rowFuncSet keeps (one
// per set of column masks seen).
const maxDerivedMasks = 64

// derivedMasks returns cols (the policy's column masks) and the masks derived
// from the catalog for them: on generated columns computed from a masked
// column, on the masked columns of partitions and child tables, and on view
// columns that return a masked column (maskderived.go, maskviews.go); and the
// database's functions that return masked values (maskfuncs.go). The result
// is kept per cols unless funcs.all is set (the session's own function
// changes make the view analysis stricter than for others); its capacity is
// its length, so that a caller's append never writes into it.
func (f *rowFuncSet) derivedMasks(cols []decision.Mask, funcs rowFuncs) ([]decision.Mask, map[string]funcTaint) {
	if len(cols) == 0 || len(f.derived) == 0 && len(f.children) == 0 && (f.views == nil || len(f.views.views) == 0) &&
		(f.fns == nil || len(f.fns.funcs) == 0) {
		return cols, nil
	}
	var key strings.Builder
	for _, o := range cols {
		key.WriteString(o.Column)
		key.WriteByte(0)
		key.WriteString(o.With)
		key.WriteByte(0)
	}
	if !funcs.all {
		f.mu.Lock()
		d, ok := f.masks[key.String()]
		f.mu.Unlock()
		if ok {
			return d.masks, d.calls
		}
	}
	base := withDerived(cols[:len(cols):len(cols)], f.derived)
	base = withInherited(base, f.children)
	// Views may call functions that return masked values, and functions
	// may read views' masked columns: round after round until the
	// functions found stay the same (each round adds one at least).
	var out []decision.Mask
	var calls map[string]funcTaint
	for round := 0; ; round++ {
		fc := funcs
		fc.calls = calls
		out = f.views.withViews(base, len(cols), fc)
		next := f.fns.taint(cols, out[len(cols):], funcs, calls)
		if sameTaint(next, calls) || f.fns == nil || round > len(f.fns.funcs) {
			calls = next
			break
		}
		calls = next
	}
	if len(calls) == 0 {
		calls = nil
	}
	out = out[:len(out):len(out)]
	if !funcs.all {
		f.mu.Lock()
		if f.masks == nil || len(f.masks) >= maxDerivedMasks {
			f.masks = map[string]derivedSet{}
		}
		f.masks[key.String()] = derivedSet{out, calls}
		f.mu.Unlock()
	}
	return out, calls
}

// sameTaint reports whether a and b name the same functions alike.
func sameTaint(a, b map[string]funcTaint) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.hides != v.hides {
			return false
		}
	}
	return true
}
