package postgres

import (
	"context"
	"fmt"
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
type catalog struct {
	s     *Server
	mu    sync.Mutex
	conns map[string]*pgconn.PgConn
	rels  map[catalogKey]*relation
}

type catalogKey struct {
	database string
	oid      uint32
}

const catalogTTL = time.Minute

// relations returns the relations of oids in database, querying the ones not
// cached. It fails closed: an error means masks cannot be resolved.
func (c *catalog) relations(ctx context.Context, database string, oids []uint32) (map[uint32]*relation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rels == nil {
		c.rels, c.conns = map[catalogKey]*relation{}, map[string]*pgconn.PgConn{}
	}
	out := map[uint32]*relation{}
	var missing []string
	for _, oid := range oids {
		if r, ok := c.rels[catalogKey{database, oid}]; ok && time.Since(r.loaded) < catalogTTL {
			out[oid] = r
		} else if oid != 0 {
			missing = append(missing, strconv.FormatUint(uint64(oid), 10))
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	if err := c.load(ctx, database, missing, out); err != nil {
		return nil, fmt.Errorf("cannot look up column names in the catalog: %w", err)
	}
	return out, nil
}

func (c *catalog) load(ctx context.Context, database string, oids []string, out map[uint32]*relation) error {
	conn, err := c.conn(ctx, database)
	if err != nil {
		return err
	}
	q := catalogQuery + `WHERE c.oid IN (` + strings.Join(oids, ",") + `)`
	res := conn.ExecParams(ctx, q, nil, nil, nil, nil).Read()
	if res.Err != nil {
		conn.Close(ctx)
		delete(c.conns, database)
		return res.Err
	}
	c.store(database, res.Rows, out)
	return nil
}

const catalogQuery = `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
`

// store caches catalog rows and adds them to out.
func (c *catalog) store(database string, rows [][][]byte, out map[uint32]*relation) {
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
		r.attrs[int16(attnum)] = attr{name: string(row[4]), typ: uint32(typ)}
		out[uint32(oid64)] = r
	}
}

// relationByName resolves a table named in a statement (schema "" means the
// first visible one on the default search_path).
func (c *catalog) relationByName(ctx context.Context, database, schema, name string) (*relation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rels == nil {
		c.rels, c.conns = map[catalogKey]*relation{}, map[string]*pgconn.PgConn{}
	}
	conn, err := c.conn(ctx, database)
	if err != nil {
		return nil, err
	}
	q := catalogQuery + `WHERE c.relname = $1 AND (n.nspname = $2 OR ($2 = '' AND pg_catalog.pg_table_is_visible(c.oid)))`
	res := conn.ExecParams(ctx, q, [][]byte{[]byte(name), []byte(schema)}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("cannot look up %q in the catalog: %w", name, res.Err)
	}
	out := map[uint32]*relation{}
	c.store(database, res.Rows, out)
	for _, r := range out {
		return r, nil
	}
	return nil, fmt.Errorf("table %q not found in the catalog", name)
}

func (c *catalog) conn(ctx context.Context, database string) (*pgconn.PgConn, error) {
	if conn := c.conns[database]; conn != nil && !conn.IsClosed() {
		return conn, nil
	}
	pc, err := c.s.upstreamConfig(database, map[string]string{"application_name": "regate-catalog"})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to target %q: %s", c.s.cfg.Target.Name, upstreamError(err))
	}
	c.conns[database] = conn
	return conn, nil
}

func (c *catalog) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		_ = conn.Close(context.Background())
	}
	c.conns = nil
}
