package recorder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

const (
	busyTimeoutMillis = 10000
	readerConns       = 4
)

// sqliteOptions is a parsed sqlite:// URL.
type sqliteOptions struct {
	path        string // absolute
	synchronous string // FULL or NORMAL
	readOnly    bool   // OpenReadOnly
}

func parseSQLiteURL(rest string) (sqliteOptions, error) {
	path, query, _ := strings.Cut(rest, "?")
	switch {
	case path == "":
		return sqliteOptions{}, errors.New("empty database path")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return sqliteOptions{}, errors.New("in-memory and file: databases are not supported " +
			"(tests can use recordertest.NewMemory)")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return sqliteOptions{}, fmt.Errorf("resolve database path %q: %w", path, err)
	}
	opts := sqliteOptions{path: abs, synchronous: "NORMAL"}
	params, err := url.ParseQuery(query)
	if err != nil {
		return sqliteOptions{}, fmt.Errorf("parse query: %w", err)
	}
	for key, vals := range params {
		if key != "synchronous" {
			return sqliteOptions{}, fmt.Errorf("unknown parameter %q", key)
		}
		switch v := strings.ToUpper(vals[len(vals)-1]); v {
		case "FULL", "NORMAL":
			opts.synchronous = v
		default:
			return sqliteOptions{}, fmt.Errorf("synchronous=%q: want full or normal", vals[len(vals)-1])
		}
	}
	return opts, nil
}

// sqliteDSN is the modernc.org/sqlite DSN for path with the given parameters.
func sqliteDSN(path string, params ...string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?" + strings.Join(params, "&")
}

// sqliteStore is the SQLite Store: a single write connection, used by one
// committing appender at a time (see writer.go), and a pool of query-only
// connections.
type sqliteStore struct {
	logger hclog.Logger
	path   string
	writer *sql.DB   // MaxOpenConns(1): batches (one leader at a time) and approvals
	reader *sql.DB   // query_only connections for Sessions, Events, Verify
	raw    rawStmts  // the copy's statements, used by the ingester (rawtx.go)
	ids    idChecker // the leader's ID lookups (rawtx.go)

	mu     sync.RWMutex // guards closed; read-held while queueing
	closed bool

	// The append queue and its group commit (writer.go).
	qmu        sync.Mutex
	q          []*pending // queued appends, in order
	urgent     int        // undeferred appends in q
	lastUrgent int        // undeferred appends in the last batch committed
	writing    bool       // a leader is committing
	idle       *sync.Cond // on qmu: signalled when a leader stops
	timer      *time.Timer
	timerArmed bool

	// The journal and the chain head (journal.go). jmu is held by the
	// leader while it seals and writes a batch, and by the ingester while
	// it empties the journal; lock order: jmu, then imu. journal is nil when
	// another process holds it: the store is then read-only.
	jmu        sync.Mutex
	journal    *journal
	headSeq    int64
	headHash   string
	headAtomic atomic.Int64 // headSeq, for readers

	// The ingester (ingest.go): records journaled but not yet in the
	// database, in chain order, and their IDs.
	imu          sync.Mutex
	iq           []Record
	ingestIDs    map[string]struct{}
	ingestErr    error        // the last copy's error, nil once one succeeds
	copyFailures int64        // failed copies
	openedAt     int64        // the chain head at open (Stats.Appended counts from it)
	ingested     atomic.Int64 // seq of the last record in the database
	maxBacklog   int
	ingestKick   chan struct{}
	ingestStop   chan struct{}
	ingestDone   chan struct{}

	// filter holds every event ID of the store (idfilter.go), loaded by a
	// goroutine that stopFilter ends.
	filter     idFilter
	filterDone chan struct{}
	stopFilter context.CancelFunc

	ckpt     *sql.DB // background WAL checkpoints (checkpoint.go)
	ckptStop chan struct{}
	ckptDone chan struct{}
}

const (
	// pageSize is the page size of a new event database.
	pageSize = 32 << 10
	// writerCacheKiB is the writer connection's page cache: the index and
	// interior pages every copy touches stay in it.
	writerCacheKiB = 32 << 10
)

func openSQLite(ctx context.Context, o sqliteOptions, logger hclog.Logger) (Store, error) {
	dir := filepath.Dir(o.path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("recorder: directory %q of event database %q: %w (create it first)", dir, o.path, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("recorder: %q (directory of event database %q) is not a directory", dir, o.path)
	}
	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMillis)
	// A new database gets pages of pageSize bytes: a command's record is
	// about 2 KB, and with SQLite's default 4 KiB pages every copy wrote
	// (and every checkpoint copied) about two pages per record, each a
	// system call of its own. The page size must be set before the journal
	// mode: the driver runs _pragma settings in lexical order and
	// _journal_mode after them. An existing database keeps its page size.
	writer, err := openDB(ctx, sqliteDSN(o.path, busy, fmt.Sprintf("_pragma=page_size(%d)", pageSize),
		fmt.Sprintf("_pragma=cache_size(%d)", -writerCacheKiB), "_journal_mode=WAL",
		"_pragma=synchronous("+o.synchronous+")", "_pragma=wal_autocheckpoint(0)", "_txlock=immediate"), 1)
	if err != nil {
		return nil, fmt.Errorf("recorder: open event database %q for writing: %w", o.path, err)
	}
	s := &sqliteStore{logger: logger, path: o.path, writer: writer,
		ingestIDs: map[string]struct{}{}, maxBacklog: defaultMaxBacklog}
	s.idle = sync.NewCond(&s.qmu)
	if err := s.init(ctx, busy, o.readOnly); err != nil {
		return nil, errors.Join(err, s.closeDBs())
	}
	if o.readOnly {
		if err := s.recoverReadOnly(ctx); err != nil {
			return nil, errors.Join(err, s.closeDBs())
		}
		return s, nil
	}
	j, err := openJournal(o.path+".journal", o.synchronous == "FULL", lockWait)
	if errors.Is(err, errJournalLocked) {
		err = fmt.Errorf("recorder: another process appends to the event store %q (it holds %q): "+
			"only one regate may record into a store; the CLI opens it read-only", o.path, o.path+".journal")
	}
	if err != nil {
		return nil, errors.Join(err, s.closeDBs())
	}
	s.journal = j
	if err := s.recover(ctx); err != nil {
		return nil, errors.Join(err, j.close(), s.closeDBs())
	}
	if err := s.startCheckpointer(ctx, busy); err != nil {
		return nil, errors.Join(err, j.close(), s.closeDBs())
	}
	s.ingestKick = make(chan struct{}, 1)
	s.ingestStop = make(chan struct{})
	s.ingestDone = make(chan struct{})
	go s.ingestLoop()
	var fctx context.Context
	fctx, s.stopFilter = context.WithCancel(context.Background())
	s.filterDone = make(chan struct{})
	go s.loadIDs(fctx, s.headSeq)
	logger.Info("event store open", "path", o.path, "journal", j.path, "synchronous", o.synchronous,
		"schema_version", len(migrations))
	return s, nil
}

// recoverReadOnly copies what a journal left by a stopped regate holds into
// the database, unless a running regate holds the journal (it copies its own).
func (s *sqliteStore) recoverReadOnly(ctx context.Context) error {
	path := s.path + ".journal"
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return nil
	}
	j, err := openJournal(path, false, 0)
	if errors.Is(err, errJournalLocked) {
		return nil
	}
	if err != nil {
		return err
	}
	s.journal = j
	defer func() { s.journal = nil }()
	return errors.Join(s.recover(ctx), j.close())
}

// errReadOnly is returned by Append on a store opened read-only.
func (s *sqliteStore) errReadOnly() error {
	return fmt.Errorf("recorder: the event store %q is open read-only", s.path)
}

// init migrates the schema, opens the reader pool and prepares the writer's
// statements. A store opened read-only is not migrated while another process
// appends to it: that process, of an older regate, could not write to the
// migrated schema.
func (s *sqliteStore) init(ctx context.Context, busy string, readOnly bool) error {
	if readOnly && appenderRunning(s.path+".journal") {
		var v int
		err := s.writer.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
		if err == nil && v < len(migrations) {
			return fmt.Errorf("recorder: the event store %q has schema version %d and this regate reads version %d: "+
				"it is migrated when the regate appending to it (running now) is upgraded and restarted",
				s.path, v, len(migrations))
		}
	}
	if err := migrate(ctx, s.writer); err != nil {
		return fmt.Errorf("recorder: migrate event database %q: %w", s.path, err)
	}
	var mode string
	if err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("recorder: read journal mode of %q: %w", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		s.logger.Warn("event database is not in WAL mode; appends block readers", "path", s.path, "journal_mode", mode)
	}
	reader, err := openDB(ctx, sqliteDSN(s.path, busy, "_pragma=query_only(1)"), readerConns)
	if err != nil {
		return fmt.Errorf("recorder: open event database %q for reading: %w", s.path, err)
	}
	s.reader = reader
	if s.ids.db, err = openDB(ctx, sqliteDSN(s.path, busy, "_pragma=query_only(1)"), 1); err != nil {
		return fmt.Errorf("recorder: open event database %q for ID lookups: %w", s.path, err)
	}
	return nil
}

func openDB(ctx context.Context, dsn string, conns int) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}

// migrations[i] brings the schema from version i to i+1.
var migrations = [][]string{
	{
		`CREATE TABLE events (
			seq        INTEGER PRIMARY KEY,
			id         TEXT NOT NULL UNIQUE,
			time       TEXT NOT NULL,
			type       TEXT NOT NULL,
			session_id TEXT NOT NULL,
			target     TEXT NOT NULL,
			subject    TEXT NOT NULL,
			ref        TEXT NOT NULL,
			body       TEXT NOT NULL,
			prev_hash  TEXT NOT NULL,
			hash       TEXT NOT NULL
		)`,
		`CREATE INDEX events_session_id ON events (session_id)`,
	},
	{ // approval requests (approvals_sqlite.go)
		`CREATE TABLE approvals (
			id          TEXT PRIMARY KEY,
			state       TEXT NOT NULL,
			fingerprint TEXT NOT NULL,
			created_at  TEXT NOT NULL,
			expires_at  TEXT NOT NULL,
			used        INTEGER NOT NULL,
			body        TEXT NOT NULL
		)`,
		`CREATE INDEX approvals_state ON approvals (state)`,
		`CREATE INDEX approvals_fingerprint ON approvals (fingerprint)`,
	},
	{ // events in blocks, a row per session and copy (blocks.go); the rows
		// of version 1 become blocks of one event each
		`CREATE TABLE event_blocks (
			first_seq  INTEGER PRIMARY KEY,
			last_seq   INTEGER NOT NULL,
			session_id TEXT NOT NULL,
			first_time TEXT NOT NULL,
			hashes     TEXT NOT NULL,
			bodies     TEXT NOT NULL
		)`,
		`CREATE INDEX event_blocks_session ON event_blocks (session_id)`,
		`CREATE INDEX event_blocks_last_seq ON event_blocks (last_seq)`,
		`CREATE TABLE event_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID`,
		`INSERT INTO event_blocks (first_seq, last_seq, session_id, first_time, hashes, bodies)
			SELECT seq, seq, session_id, time, hash, body || char(10) FROM events ORDER BY seq`,
		`INSERT INTO event_ids (id, seq) SELECT id, seq FROM events ORDER BY id`,
		`DROP TABLE events`,
		// For SQL of one's own (not used by regate): a row per event, as in
		// version 1; body as SQLite's JSON functions render it.
		`CREATE VIEW events AS SELECT
			json_extract(j.value, '$.seq') AS seq, json_extract(j.value, '$.id') AS id,
			json_extract(j.value, '$.time') AS time, json_extract(j.value, '$.type') AS type,
			b.session_id AS session_id, json_extract(j.value, '$.target') AS target,
			json_extract(j.value, '$.subject') AS subject, json_extract(j.value, '$.ref') AS ref,
			j.value AS body, json_extract(j.value, '$.prev_hash') AS prev_hash,
			substr(b.hashes, 64 * j.key + 1, 64) AS hash
		FROM event_blocks AS b, json_each('[' || replace(rtrim(b.bodies, char(10)), char(10), ',') || ']') AS j`,
	},
}

// migrate applies the missing migrations in one transaction; it is idempotent.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this regate supports (%d)", current, len(migrations))
	}
	for v := current; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migration to version %d: %w", v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, v+1); err != nil {
			return fmt.Errorf("record schema version %d: %w", v+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Close writes the queued appends, stops the writer and closes the database.
func (s *sqliteStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.flushAll()
	if err := errors.Join(s.stopIngest(), s.stopCheckpointer(), s.closeDBs()); err != nil {
		return fmt.Errorf("recorder: close event database %q: %w", s.path, err)
	}
	s.logger.Debug("event store closed", "path", s.path)
	return nil
}

// stopIngest lets the ingester copy what is queued, empties the journal when
// the database holds all of it, and releases the journal.
func (s *sqliteStore) stopIngest() error {
	if s.journal == nil {
		return nil
	}
	s.stopFilter()
	<-s.filterDone
	close(s.ingestStop)
	<-s.ingestDone
	if s.ingested.Load() == s.headSeq {
		s.maybeTruncate(0)
	} else {
		s.logger.Error("events are left in the journal; they are copied into the database at the next open",
			"path", s.journal.path, "events", s.headSeq-s.ingested.Load())
	}
	return s.journal.close()
}

func (s *sqliteStore) closeDBs() error {
	var errs []error
	if s.raw.conn != nil && s.writer != nil {
		// Every batch is done: the statements are closed on their
		// connection.
		if conn, err := s.writer.Conn(context.Background()); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, conn.Raw(func(any) error { return s.raw.close() }), conn.Close())
		}
	}
	errs = append(errs, s.ids.close())
	for _, db := range []*sql.DB{s.reader, s.writer} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// appenderRunning reports whether a process holds the journal at path (appends
// to its store).
func appenderRunning(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}
