package postgres

import (
	"fmt"
	"strings"

	"github.com/regate/regate/policies/decision"
)

// The write side of checkColumnMasks (maskscope.go): what INSERT, UPDATE,
// DELETE and MERGE write, and renames, may not take a masked value out of
// its mask's reach.

// write checks INSERT, UPDATE and DELETE: a value read from a masked column
// may be written only into a column the mask covers (where it stays masked:
// UPDATE customers SET email = lower(email)), and what RETURNING gives back is
// checked as a select list.
func (c *maskCheck) write(b map[string]any, outer *scope) error {
	sc, rel, err := c.targetScope(b, outer)
	if err != nil {
		return err
	}
	for _, key := range []string{"fromClause", "usingClause"} {
		list, _ := b[key].([]any)
		for _, it := range list {
			if err := c.fromItem(it, sc); err != nil {
				return err
			}
		}
	}
	if src, ok := b["selectStmt"].(map[string]any); ok {
		cols, _ := b["cols"].([]any)
		if err := c.insertSource(selectBody(src), cols, rel, sc); err != nil {
			return err
		}
	}
	sets, _ := b["targetList"].([]any)
	if oc, ok := b["onConflictClause"].(map[string]any); ok {
		more, _ := oc["targetList"].([]any)
		sets = append(append([]any(nil), sets...), more...)
	}
	if err := c.sets(sets, rel, sc); err != nil {
		return err
	}
	return c.returning(b, sc)
}

// targetScope reads the WITH clause and the target table of a statement that
// writes (INSERT, UPDATE, DELETE, MERGE) into a new scope below outer.
func (c *maskCheck) targetScope(b map[string]any, outer *scope) (*scope, map[string]any, error) {
	sc, err := c.with(b["withClause"], outer)
	if err != nil {
		return nil, nil, err
	}
	rel, _ := b["relation"].(map[string]any)
	if rel != nil {
		if err := c.fromItem(map[string]any{"RangeVar": rel}, sc); err != nil {
			return nil, nil, err
		}
	}
	return sc, rel, nil
}

// returning checks a RETURNING list (PostgreSQL 17 for MERGE) as a select
// list.
func (c *maskCheck) returning(b map[string]any, sc *scope) error {
	ret, _ := b["returningList"].([]any)
	if len(ret) == 0 {
		return nil
	}
	_, err := c.targets(ret, sc, outTop)
	return err
}

// sets checks the SET list of an UPDATE (or ON CONFLICT DO UPDATE, or a
// MERGE's UPDATE): each value goes into the column its target names.
func (c *maskCheck) sets(list []any, rel map[string]any, sc *scope) error {
	for _, t := range list {
		rt := child(t, "ResTarget")
		name, _ := rt["name"].(string)
		if c.covers(rel, name) {
			continue
		}
		if err := c.expr(rt["val"], sc, storeHow); err != nil {
			return err
		}
	}
	return nil
}

// insertSource checks the rows an INSERT writes: a plain select's outputs
// go, by position, into the listed columns; VALUES, a set operation, * or
// an INSERT without a column list may not carry a masked value at all.
func (c *maskCheck) insertSource(sb map[string]any, cols []any, rel map[string]any, sc *scope) error {
	if vals, ok := sb["valuesLists"].([]any); ok {
		if err := c.expr(vals, sc, storeHow); err != nil {
			return err
		}
	}
	out, err := c.sel(sb, sc, outInner)
	if err != nil || len(out) == 0 {
		return err
	}
	if isSetOp(sb) || len(cols) == 0 {
		return c.escape(firstName(out), storeHow)
	}
	list, _ := sb["targetList"].([]any)
	for i, t := range list {
		rt := child(t, "ResTarget")
		f := refFields(rt["val"])
		if len(f) == 0 {
			continue // an expression: sel refused it if it reads a masked value
		}
		name := strings.ToLower(f[len(f)-1])
		if name == "*" {
			return c.escape(firstName(out), "through * "+storeHow)
		}
		if alias, _ := rt["name"].(string); alias != "" {
			name = strings.ToLower(alias)
		}
		if _, tainted := out[name]; !tainted {
			continue
		}
		if i >= len(cols) || !c.coversTarget(rel, cols[i]) {
			return c.escape(name, storeHow)
		}
	}
	return nil
}

// merge checks MERGE: its UPDATE and INSERT actions write values read from
// the source (and the target) into the target's columns.
func (c *maskCheck) merge(b map[string]any, outer *scope) error {
	sc, rel, err := c.targetScope(b, outer)
	if err != nil {
		return err
	}
	if err := c.fromItem(b["sourceRelation"], sc); err != nil {
		return err
	}
	clauses, _ := b["mergeWhenClauses"].([]any)
	for _, w := range clauses {
		wc := child(w, "MergeWhenClause")
		targets, _ := wc["targetList"].([]any)
		if wc["commandType"] != "CMD_INSERT" {
			if err := c.sets(targets, rel, sc); err != nil {
				return err
			}
			continue
		}
		values, _ := wc["values"].([]any)
		for i, v := range values {
			if i < len(targets) && c.coversTarget(rel, targets[i]) {
				continue
			}
			if err := c.expr(v, sc, storeHow); err != nil {
				return err
			}
		}
	}
	return c.returning(b, sc)
}

// renameHow is how a rename takes a column out of its mask (in a refusal's
// text).
const renameHow = "would take out of the mask's reach by renaming it, its table or its schema (a mask names them)"

// relationKinds are the objects whose columns RowDescription reports.
var relationKinds = map[any]bool{"OBJECT_TABLE": true, "OBJECT_VIEW": true, "OBJECT_MATVIEW": true,
	"OBJECT_FOREIGN_TABLE": true}

// rename refuses renaming a column a mask covers, or the table or schema a
// qualified mask names, or moving such a table to another schema: the
// column would be out of the mask's reach once the change is committed.
func (c *maskCheck) rename(node string, b map[string]any) error {
	rel, _ := b["relation"].(map[string]any)
	schema, table := relName(rel)
	schema, table = strings.ToLower(schema), strings.ToLower(table)
	sub := strings.ToLower(stringOf(b["subname"]))
	for _, o := range c.cols {
		parts := strings.Split(strings.ToLower(o.Column), ".")
		n := len(parts)
		var hit bool
		switch {
		case node == "RenameStmt" && b["renameType"] == "OBJECT_COLUMN":
			hit = table != "" && maskNames(o.Column, schema, table, sub)
		case node == "RenameStmt" && relationKinds[b["renameType"]]:
			hit = n >= 2 && parts[n-2] == table && (n == 2 || schema == "" || parts[0] == schema)
		case node == "AlterObjectSchemaStmt" && relationKinds[b["objectType"]]:
			hit = n == 3 && parts[1] == table && (schema == "" || parts[0] == schema)
		case node == "RenameStmt" && b["renameType"] == "OBJECT_SCHEMA":
			hit = n == 3 && parts[0] == sub
		}
		if hit {
			return &maskEscape{columns: fmt.Sprintf("%q", o.Column), how: renameHow}
		}
	}
	return nil
}

// covers reports whether a column mask covers column col of the table rel (a
// RangeVar) names: a mask of that name in any table, or of rel's table by
// name ("table.col"), or, when rel names its schema, by schema too.
func (c *maskCheck) covers(rel map[string]any, col string) bool {
	schema, table := relName(rel)
	if col == "" || table == "" {
		return false
	}
	for _, list := range [][]decision.Mask{c.cols, c.derived} {
		for _, o := range list {
			if maskNames(o.Column, schema, table, col) && (schema != "" || strings.Count(o.Column, ".") < 2) {
				return true
			}
		}
	}
	return false
}

// coversTarget is covers for the column a ResTarget of an INSERT's column
// list names.
func (c *maskCheck) coversTarget(rel map[string]any, t any) bool {
	return c.covers(rel, stringOf(child(t, "ResTarget")["name"]))
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
