package postgres

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// relation is what the catalog knows of a table: its schema, name and
// columns by attribute number.
type relation struct {
	schema, name string
	attrs        map[int16]attr
	loaded       time.Time
}

type attr struct {
	name string
	typ  uint32
	// generated: a generated column, which COPY table without a column
	// list leaves out.
	generated bool
}

// column returns the column named name (exactly, as the catalog spells it).
func (r *relation) column(name string) (attr, bool) {
	for _, a := range r.attrs {
		if a.name == name {
			return a, true
		}
	}
	return attr{}, false
}

// columns lists the relation's columns in attribute order.
func (r *relation) columns() []attr {
	nums := make([]int, 0, len(r.attrs))
	for n := range r.attrs {
		nums = append(nums, int(n))
	}
	sort.Ints(nums)
	out := make([]attr, len(nums))
	for i, n := range nums {
		out[i] = r.attrs[int16(n)]
	}
	return out
}

// catalog resolves the table OIDs and attribute numbers of RowDescription
// fields to names, so that `table.column` masks (and column masks on aliased
// columns) find their columns. It keeps one side connection per database,
// logged in with regate's credentials, and caches what it learns for a
// minute.
//
// Locking: mu guards the cache and is never held during I/O, so a cache hit
// never waits for a lookup in progress. Each database's side connection has
// a lock of its own, held across its query: misses on one database queue
// behind each other (they share the connection), misses on other databases
// do not.
type catalog struct {
	s    *Server
	mu   sync.Mutex
	rels map[catalogKey]*relation
	dbs  map[string]*catalogDB
	// funcs: each database's functions of a whole row (rowFuncs), and a
	// count of invalidations, which a lookup that ran meanwhile must not
	// overwrite.
	funcs    map[string]*rowFuncSet
	funcsGen map[string]uint64
	// refreshing: databases whose function set is being reloaded in the
	// background; closed: close ran (no more background reloads).
	refreshing map[string]bool
	closed     bool
	bg         sync.WaitGroup // background reloads; close waits for them
	// byName: the columns of relations by name (relColumns).
	byName map[nameKey]nameCols
}

// catalogDB is the side connection to one database.
type catalogDB struct {
	mu   sync.Mutex // held across a query on conn
	conn *pgconn.PgConn
}

type catalogKey struct {
	database string
	oid      uint32
}

const (
	catalogTTL = time.Minute
	// rowFuncTTL is how long a database's functions of a whole row are
	// cached: a function created by a connection that does not go through
	// regate is seen this much later at most (those created through regate
	// invalidate the cache, see conn.funcDDL).
	rowFuncTTL = 10 * time.Second
	// rowFuncRefresh is the age from which a function set is reloaded in
	// the background while still being served (rowFuncs).
	rowFuncRefresh = rowFuncTTL / 2
	// catalogTimeout bounds one catalog connect or query.
	catalogTimeout = 10 * time.Second
)

// cached returns the cached relations of oids and the OIDs not cached.
func (c *catalog) cached(database string, oids []uint32, out map[uint32]*relation) (missing []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, oid := range oids {
		if r, ok := c.rels[catalogKey{database, oid}]; ok && time.Since(r.loaded) < catalogTTL {
			out[oid] = r
		} else if oid != 0 {
			missing = append(missing, strconv.FormatUint(uint64(oid), 10))
		}
	}
	return missing
}

// forget drops the cached relations of oids in database.
func (c *catalog) forget(database string, oids []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, oid := range oids {
		delete(c.rels, catalogKey{database, oid})
	}
}

// relations returns the relations of oids in database, querying the ones not
// cached. It fails closed: an error means masks cannot be resolved.
func (c *catalog) relations(ctx context.Context, database string, oids []uint32) (map[uint32]*relation, error) {
	out := map[uint32]*relation{}
	if len(c.cached(database, oids, out)) == 0 {
		return out, nil
	}
	db := c.db(database)
	db.mu.Lock()
	defer db.mu.Unlock()
	// Another session may have loaded them while this one waited.
	missing := c.cached(database, oids, out)
	if len(missing) == 0 {
		return out, nil
	}
	q := catalogQuery + `WHERE c.oid IN (` + strings.Join(missing, ",") + `)`
	rows, err := c.query(ctx, db, database, q, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot look up column names in the catalog: %w", err)
	}
	c.store(database, rows, out)
	return out, nil
}

// db returns the side-connection holder of database.
func (c *catalog) db(database string) *catalogDB {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dbs == nil {
		c.dbs = map[string]*catalogDB{}
	}
	db := c.dbs[database]
	if db == nil {
		db = &catalogDB{}
		c.dbs[database] = db
	}
	return db
}

// query runs q on database's side connection (db.mu held), connecting
// first when needed; a failed query drops the connection.
func (c *catalog) query(ctx context.Context, db *catalogDB, database, q string, params [][]byte) ([][][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	if db.conn == nil || db.conn.IsClosed() {
		pc, err := c.s.upstreamConfig(database, map[string]string{"application_name": "regate-catalog"})
		if err != nil {
			return nil, err
		}
		conn, err := pgconn.ConnectConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("cannot connect to target %q: %s", c.s.cfg.Target.Name, upstreamError(err))
		}
		db.conn = conn
	}
	res := db.conn.ExecParams(ctx, q, params, nil, nil, nil).Read()
	if res.Err != nil {
		db.conn.Close(context.Background())
		db.conn = nil
		return nil, res.Err
	}
	return res.Rows, nil
}

const catalogQuery = `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid, a.attgenerated <> ''
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
`

// store caches catalog rows and adds them to out.
func (c *catalog) store(database string, rows [][][]byte, out map[uint32]*relation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rels == nil {
		c.rels = map[catalogKey]*relation{}
	}
	now := time.Now()
	for _, row := range rows {
		oid64, _ := strconv.ParseUint(string(row[0]), 10, 32)
		attnum, _ := strconv.ParseInt(string(row[3]), 10, 16)
		typ, _ := strconv.ParseUint(string(row[5]), 10, 32)
		key := catalogKey{database, uint32(oid64)}
		r := c.rels[key]
		if r == nil || r.loaded != now {
			r = &relation{schema: string(row[1]), name: string(row[2]), attrs: map[int16]attr{}, loaded: now}
			c.rels[key] = r
		}
		r.attrs[int16(attnum)] = attr{name: string(row[4]), typ: uint32(typ), generated: string(row[6]) == "t"}
		out[uint32(oid64)] = r
	}
}

// relationByName resolves the table of a COPY … TO STDOUT: schema.name when
// schema is set, else the one relation of that name in any schema (temporary
// ones included), for regate's side connection cannot see the client's
// search_path: a name that several schemas hold is an error, so is one that
// none does.
func (c *catalog) relationByName(ctx context.Context, database, schema, name string) (*relation, error) {
	db := c.db(database)
	db.mu.Lock()
	defer db.mu.Unlock()
	q := catalogQuery + `WHERE c.relname = $1 AND ($2 = '' OR n.nspname = $2)`
	rows, err := c.query(ctx, db, database, q, [][]byte{[]byte(name), []byte(schema)})
	if err != nil {
		return nil, fmt.Errorf("cannot look up %q in the catalog: %w", name, err)
	}
	out := map[uint32]*relation{}
	c.store(database, rows, out)
	switch len(out) {
	case 0:
		if schema != "" {
			name = schema + "." + name
		}
		return nil, fmt.Errorf("table %q not found in the catalog (regate looks tables up on a connection of its own: "+
			"name the table by its schema, and not as pg_temp)", name)
	case 1:
		for _, r := range out {
			return r, nil
		}
	}
	var schemas []string
	for _, r := range out {
		schemas = append(schemas, r.schema)
	}
	sort.Strings(schemas)
	return nil, fmt.Errorf("%q names a relation in more than one schema (%s): qualify the table with its schema",
		name, strings.Join(schemas, ", "))
}

// rowFuncSet is the names of the functions of one database that attribute
// notation (c.f, meaning f(c) when c has no column f) can apply to a whole
// row, lower case: those callable with one argument of a composite type or of
// type record, "any", anyelement, anynonarray, anycompatible or
// anycompatiblenonarray (the others defaulted, or variadic of those), less
// the built-in ones that give nothing of the row's values. Window and
// ordered-set functions cannot be called so and are left out.
type rowFuncSet struct {
	names    map[string]bool
	ownCount bool // the database has a function named count of its own
	// derived: the database's generated columns and the columns they read
	// (maskderived.go), loaded with the functions.
	derived []derivedCol
	// children: its inheritance and partition edges (maskderived.go).
	children []inheritEdge
	// views: its views (maskviews.go).
	views *viewSet
	// fns: its functions written in SQL and other languages (maskfuncs.go).
	fns    *funcSet
	loaded time.Time // guarded by catalog.mu
	// masks: the policy's column masks seen (the key) with the masks
	// derived from the catalog for them (derivedMasks).
	mu    sync.Mutex
	masks map[string]derivedSet
}

const rowFuncQuery = `SELECT DISTINCT p.proname, p.oid < 16384, true
FROM pg_catalog.pg_proc p
LEFT JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
LEFT JOIN pg_catalog.pg_aggregate ag ON ag.aggfnoid = p.oid
WHERE p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
  AND p.prokind IN ('f', 'a') AND COALESCE(ag.aggkind, 'n') = 'n'
  AND (p.proargtypes[0] IN ('pg_catalog.record'::pg_catalog.regtype, 'pg_catalog."any"'::pg_catalog.regtype,
      'pg_catalog.anyelement'::pg_catalog.regtype, 'pg_catalog.anynonarray'::pg_catalog.regtype,
      'pg_catalog.anycompatible'::pg_catalog.regtype, 'pg_catalog.anycompatiblenonarray'::pg_catalog.regtype)
    OR p.provariadic IN ('pg_catalog.record'::pg_catalog.regtype, 'pg_catalog."any"'::pg_catalog.regtype,
      'pg_catalog.anyelement'::pg_catalog.regtype, 'pg_catalog.anycompatible'::pg_catalog.regtype)
    OR t.typtype = 'c' OR b.typtype = 'c')
UNION ALL
SELECT p.proname, false, false FROM pg_catalog.pg_proc p WHERE p.proname = 'count' AND p.oid >= 16384`

// harmlessRowFuncs are built-in functions of any row that give nothing of
// its values: a count, how many are null, its type, collation or
// compression. Functions of the database's own with these names count.
var harmlessRowFuncs = map[string]bool{
	"count": true, "num_nulls": true, "num_nonnulls": true, "pg_typeof": true,
	"pg_collation_for": true, "pg_column_compression": true,
}

// rowFuncs returns the functions of a whole row that database has, from the
// cache when it is younger than rowFuncTTL. It fails closed: an error means
// attribute notation cannot be told from a column. A set older than
// rowFuncRefresh is still served, and reloaded in the background meanwhile,
// so that under steady traffic no statement waits for the reload (10–60 ms
// on a fresh PostgreSQL 15 database); only the first statement after a
// quiet spell of rowFuncTTL, or after an invalidation, waits for it.
func (c *catalog) rowFuncs(ctx context.Context, database string) (*rowFuncSet, error) {
	f, stale := c.cachedFuncs(database)
	if f != nil {
		if stale {
			c.refreshFuncs(database)
		}
		return f, nil
	}
	db := c.db(database)
	db.mu.Lock()
	defer db.mu.Unlock()
	return c.loadFuncs(ctx, db, database)
}

// refreshFuncs reloads database's function set in the background, unless a
// reload is in progress or the catalog is closed.
func (c *catalog) refreshFuncs(database string) {
	c.mu.Lock()
	if c.closed || c.refreshing[database] {
		c.mu.Unlock()
		return
	}
	if c.refreshing == nil {
		c.refreshing = map[string]bool{}
	}
	c.refreshing[database] = true
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.refreshing, database)
			c.mu.Unlock()
		}()
		db := c.db(database)
		db.mu.Lock()
		defer db.mu.Unlock()
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return // checked under db.mu, which close takes: no connection outlives close
		}
		if _, err := c.loadFuncs(context.Background(), db, database); err != nil {
			// The set stays as it was; the statement that finds it past
			// rowFuncTTL loads it itself and fails closed.
			c.s.log.Warn("cannot reload the database's functions of a row from the catalog",
				"database", database, "error", err)
		}
	}()
}

// loadFuncs queries database's function set (db.mu held) and caches it,
// unless a fresh one was cached while the caller waited for db.mu.
func (c *catalog) loadFuncs(ctx context.Context, db *catalogDB, database string) (*rowFuncSet, error) {
	for try := 1; ; try++ {
		if f, stale := c.cachedFuncs(database); f != nil && !stale {
			return f, nil
		}
		c.mu.Lock()
		gen := c.funcsGen[database]
		c.mu.Unlock()
		rows, err := c.query(ctx, db, database, rowFuncQuery, nil)
		if err != nil {
			return nil, fmt.Errorf("cannot look up the database's functions in the catalog: %w", err)
		}
		names, ownCount := map[string]bool{}, false
		for _, row := range rows {
			n := strings.ToLower(string(row[0]))
			switch {
			case string(row[2]) != "t": // a count of the database's own
				ownCount = true
			case string(row[1]) != "t" || !harmlessRowFuncs[n]:
				names[n] = true
			}
		}
		rows, err = c.query(ctx, db, database, generatedQuery, nil)
		if err != nil {
			return nil, fmt.Errorf("cannot look up the database's generated columns in the catalog: %w", err)
		}
		derived := make([]derivedCol, len(rows))
		for i, row := range rows {
			derived[i] = derivedCol{schema: string(row[0]), table: string(row[1]), column: string(row[2]), source: string(row[3])}
		}
		if rows, err = c.query(ctx, db, database, inheritQuery, nil); err != nil {
			return nil, fmt.Errorf("cannot look up the database's partitions and inheritance in the catalog: %w", err)
		}
		children := make([]inheritEdge, len(rows))
		for i, row := range rows {
			children[i] = inheritEdge{string(row[0]), string(row[1]), string(row[2]), string(row[3])}
		}
		// The views' and functions' definitions are parsed again only
		// when they changed since the set cached.
		c.mu.Lock()
		prev := c.funcs[database]
		c.mu.Unlock()
		var prevViews *viewSet
		var prevFns *funcSet
		if prev != nil {
			prevViews, prevFns = prev.views, prev.fns
		}
		views, err := c.loadViews(ctx, db, database, prevViews)
		if err != nil {
			return nil, err
		}
		fns, err := c.loadFunctions(ctx, db, database, prevFns)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if c.funcsGen[database] != gen {
			// Invalidated while the query ran: it may predate the change.
			c.mu.Unlock()
			if try < 3 {
				continue
			}
			// Sessions keep changing functions: use this answer once,
			// uncached (rowFuncs.all covers changes still uncommitted).
			return &rowFuncSet{names: names, ownCount: ownCount, derived: derived, children: children, views: views,
				fns: fns}, nil
		}
		if c.funcs == nil {
			c.funcs = map[string]*rowFuncSet{}
		}
		f := c.funcs[database]
		if f == nil || f.ownCount != ownCount || !maps.Equal(f.names, names) || !slices.Equal(f.derived, derived) ||
			!slices.Equal(f.children, children) || f.views != views || f.fns != fns {
			// A new set (a new pointer) makes sessions check their
			// statements again (maskChecked).
			f = &rowFuncSet{names: names, ownCount: ownCount, derived: derived, children: children, views: views,
				fns: fns}
			c.funcs[database] = f
		}
		f.loaded = time.Now()
		c.mu.Unlock()
		return f, nil
	}
}

// cachedFuncs returns database's cached function set if it is younger than
// rowFuncTTL, and whether it is older than rowFuncRefresh (due for a reload).
func (c *catalog) cachedFuncs(database string) (f *rowFuncSet, stale bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.funcs[database]; f != nil {
		if age := time.Since(f.loaded); age < rowFuncTTL {
			return f, age >= rowFuncRefresh
		}
	}
	return nil, false
}

// invalidate makes the next lookups of database look again: a session
// changed functions or columns (and its transaction ended). The function
// set is reloaded by the next rowFuncs, the relations by the next relations.
func (c *catalog) invalidate(database string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.funcs[database]; f != nil {
		f.loaded = time.Time{}
	}
	if c.funcsGen == nil {
		c.funcsGen = map[string]uint64{}
	}
	c.funcsGen[database]++
	maps.DeleteFunc(c.rels, func(k catalogKey, _ *relation) bool { return k.database == database })
	maps.DeleteFunc(c.byName, func(k nameKey, _ nameCols) bool { return k.database == database })
}

func (c *catalog) close() {
	c.mu.Lock()
	c.closed = true
	dbs := c.dbs
	c.dbs = nil
	c.mu.Unlock()
	for _, db := range dbs {
		db.mu.Lock()
		if db.conn != nil {
			_ = db.conn.Close(context.Background())
			db.conn = nil
		}
		db.mu.Unlock()
	}
	c.bg.Wait()
}
