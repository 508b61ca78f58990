package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The columns of relations by name, for the mask check (checkMasksIn) and
// the analysis of the database's functions (maskfuncs.go): a relation that
// has no masked column holds none in its whole row or *.

// nameKey is a relation name (lower case) in one database.
type nameKey struct{ database, name string }

// nameCols is the columns (lower case) of the relations of one name, in
// every schema.
type nameCols struct {
	cols   map[string]bool
	loaded time.Time
}

// maxByName bounds the relation names catalog.byName holds.
const maxByName = 4096

// relColumns returns the columns of the relations named names (lower case;
// of every schema, their names compared case-insensitively), from a cache
// younger than rowFuncTTL. A name no relation has is left out.
func (c *catalog) relColumns(ctx context.Context, database string, names []string) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	var missing []string
	now := time.Now()
	c.mu.Lock()
	for _, n := range names {
		e, ok := c.byName[nameKey{database, n}]
		if !ok || now.Sub(e.loaded) > rowFuncTTL {
			missing = append(missing, n)
		} else if e.cols != nil {
			out[n] = e.cols
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	db := c.db(database)
	db.mu.Lock()
	rows, err := c.query(ctx, db, database, relColsQuery, [][]byte{textArray(missing)})
	db.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cannot look up the columns of the statement's relations in the catalog: %w", err)
	}
	got := relColsOf(rows)
	c.mu.Lock()
	if c.byName == nil || len(c.byName) >= maxByName {
		c.byName = map[nameKey]nameCols{}
	}
	for _, n := range missing {
		if got[n] != nil { // a name no relation has yet is asked again
			c.byName[nameKey{database, n}] = nameCols{got[n], now}
			out[n] = got[n]
		}
	}
	c.mu.Unlock()
	return out, nil
}

// relColsQuery lists the columns of the relations named $1 (a text array of
// lower-case names), in every schema.
const relColsQuery = `SELECT c.relname, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_catalog.lower(c.relname::text) = ANY ($1::text[])
ORDER BY 1, 2`

// relColsOf reads relColsQuery's rows: columns by relation, lower case.
func relColsOf(rows [][][]byte) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, row := range rows {
		rel := strings.ToLower(string(row[0]))
		if out[rel] == nil {
			out[rel] = map[string]bool{}
		}
		out[rel][strings.ToLower(string(row[1]))] = true
	}
	return out
}

// arrayQuoter escapes an element of a PostgreSQL array literal.
var arrayQuoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// textArray is names as a PostgreSQL text array literal.
func textArray(names []string) []byte {
	var arr strings.Builder
	arr.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			arr.WriteByte(',')
		}
		arr.WriteByte('"')
		arr.WriteString(arrayQuoter.Replace(n))
		arr.WriteByte('"')
	}
	arr.WriteByte('}')
	return []byte(arr.String())
}
