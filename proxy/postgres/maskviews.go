package postgres

import (
	"context"
	"fmt"

	"github.com/regate/regate/policies/decision"
)

// A view's column is reported in RowDescription as the view's own (its OID
// and attribute number), not as the column it reads: with email masked,
// SELECT contact FROM contacts, for a view contacts AS SELECT email AS contact
// FROM customers, would come back unmasked, and so would a view column
// computed from email. checkMaskable therefore adds, for the views and
// materialized views of the database (their definitions from its catalog,
// loaded and refreshed with the function set of a row), a mask on every view
// column that returns a masked column as itself or a value computed from one
// (checkColumnMasks's own analysis, column by column), repeated for views of
// views until nothing changes. A view the check cannot follow column by
// column (a set operation, a FROM item that computes from a masked column,
// a definition regate cannot parse) has all its columns masked.

// viewDef is a view or materialized view of the database.
type viewDef struct {
	schema, name string
	cols         []string       // its columns, in order
	query        map[string]any // its SelectStmt's fields; nil: its definition did not parse
}

// viewSet is the views of a database.
type viewSet struct {
	views       []*viewDef
	fingerprint string // of what the definitions were loaded from (viewListQuery)
}

// viewListQuery lists the columns of the database's views with what changes
// when a view is created, replaced, renamed or altered: comparing its rows
// with the last load tells whether the definitions must be read again.
const viewListQuery = `SELECT c.oid, n.nspname, c.relname, r.xmin, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY c.oid, a.attnum`

const viewDefQuery = `SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')`

// loadViews reads database's views (db.mu held), reusing prev's parsed
// definitions when nothing changed.
func (c *catalog) loadViews(ctx context.Context, db *catalogDB, database string, prev *viewSet) (*viewSet, error) {
	rows, err := c.query(ctx, db, database, viewListQuery, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot look up the database's views in the catalog: %w", err)
	}
	fp := fingerprint(rows)
	if prev != nil && prev.fingerprint == fp {
		return prev, nil
	}
	vs := &viewSet{fingerprint: fp}
	if len(rows) == 0 {
		return vs, nil
	}
	byOID := map[string]*viewDef{}
	for _, row := range rows {
		oid := string(row[0])
		v := byOID[oid]
		if v == nil {
			v = &viewDef{schema: string(row[1]), name: string(row[2])}
			byOID[oid] = v
			vs.views = append(vs.views, v)
		}
		v.cols = append(v.cols, string(row[4]))
	}
	defs, err := c.query(ctx, db, database, viewDefQuery, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot read the database's view definitions from the catalog: %w", err)
	}
	for _, row := range defs {
		v := byOID[string(row[0])]
		if v == nil {
			continue // created between the two queries: seen at the next load
		}
		if stmts, err := c.s.cfg.Parser.Parse(string(row[1])); err == nil && len(stmts) == 1 {
			if sb, ok := stmts[0].AST["SelectStmt"].(map[string]any); ok {
				v.query = sb
			}
		}
	}
	return vs, nil
}

// withViews returns cols (the policy's nPolicy masks, then derived ones) and
// a mask for every view column that returns a value of a column cols mask
// (see above).
func (vs *viewSet) withViews(cols []decision.Mask, nPolicy int, funcs rowFuncs) []decision.Mask {
	if vs == nil || len(vs.views) == 0 || len(cols) == 0 {
		return cols
	}
	return deriveViewMasks(cols[:nPolicy], cols, vs.views, funcs)
}

// deriveViewMasks adds masks for the view columns that carry masked values,
// round after round, since a view's column is masked once a view it reads
// has one; each round adds at least one, so there are at most as many rounds
// as view columns.
func deriveViewMasks(policy, cols []decision.Mask, views []*viewDef, funcs rowFuncs) []decision.Mask {
	out := cols[:len(cols):len(cols)]
	have := map[string]bool{}
	for {
		c := newMaskCheck(policy, out[len(policy):], funcs)
		added := false
		for _, v := range views {
			for _, col := range v.maskedColumns(c) {
				name := v.schema + "." + v.name + "." + col
				if !have[name] {
					have[name] = true
					out = append(out, decision.Mask{Column: name})
					added = true
				}
			}
		}
		if !added {
			return out
		}
	}
}

// maskedColumns returns the columns of v that carry a value of a column c
// masks, as itself or computed; all of them when it cannot tell which.
func (v *viewDef) maskedColumns(c *maskCheck) (masked []string) {
	defer func() {
		// A tree shape the walk does not expect must not end the process:
		// every column is masked (the panic is a bug to report).
		if r := recover(); r != nil {
			masked = v.cols
		}
	}()
	if v.query == nil {
		return v.cols
	}
	pos, ok := c.positions(v.query, nil)
	if !ok || len(pos) != len(v.cols) {
		return v.cols
	}
	for i, m := range pos {
		if m {
			masked = append(masked, v.cols[i])
		}
	}
	return masked
}
