package recorder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Store is the event log: the proxy appends to it, the CLI lists and verifies.
type Store interface {
	// Appender.Append durably writes the event before it returns. It sets a
	// zero ev.Time to the current time and converts ev.Time to UTC; on success
	// it sets ev.Seq, ev.PrevHash and ev.Hash. ev.ID and ev.Type must be set and
	// IDs must be unique. If ctx is done before the event is queued, Append
	// returns ctx's error; once queued it waits for the write. After Close it
	// returns ErrClosed.
	Appender
	// Sessions summarizes sessions, newest first (see SessionSummarizer for
	// how each field is computed).
	Sessions(ctx context.Context, f SessionFilter) ([]SessionSummary, error)
	// Events returns the session's events in chain order (by Seq), with Hash
	// set. A session without events gives an empty slice.
	Events(ctx context.Context, sessionID string) ([]Event, error)
	// Commands calls fn for every command event f selects, in chain order, and
	// stops at fn's first error, returning it.
	Commands(ctx context.Context, f CommandFilter, fn func(*Event) error) error
	// Verify walks the chain up to its first bad event, if any. A
	// verification failure is reported in the result, not as an error; the
	// error is for failing to read the store.
	Verify(ctx context.Context) (VerifyResult, error)
	// ApprovalStore keeps approval requests in the same database.
	ApprovalStore
	// Close writes the appends already queued, then releases the store.
	Close() error
}

// ErrClosed is returned by Append on a closed store.
var ErrClosed = errors.New("recorder: store is closed")

// SessionFilter selects sessions. The zero value selects all.
type SessionFilter struct {
	// Since keeps sessions that started at or after it.
	Since time.Time
	// Limit keeps the newest Limit sessions.
	Limit int
}

// SessionSummary describes one session, computed from its events.
type SessionSummary struct {
	ID         string     `json:"id"`
	Protocol   string     `json:"protocol"`
	Target     string     `json:"target"`
	Subject    string     `json:"subject"`
	ClientAddr string     `json:"client_addr"`
	Start      time.Time  `json:"start"`
	End        *time.Time `json:"end,omitempty"`
	Commands   int64      `json:"commands"`
	Allowed    int64      `json:"allowed"`
	Blocked    int64      `json:"blocked"`
	Errors     int64      `json:"errors"`
}

// VerifyResult is the outcome of walking the chain.
type VerifyResult struct {
	// Events is the number of events verified good: every event when OK,
	// else those before FirstBad (verification stops there).
	Events int64 `json:"events"`
	// OK is true when every event is intact and correctly chained.
	OK bool `json:"ok"`
	// Head is the hash of the last event verified good: the chain head when
	// OK ("" for an empty store). Deleting the newest events cannot be
	// detected from the chain alone: anchor Head outside the store and check
	// later that it is still in the chain.
	Head string `json:"head"`
	// FirstBad is the first event that failed verification, nil when OK.
	FirstBad *BadEvent `json:"first_bad,omitempty"`
}

// BadEvent names the first event that failed verification.
type BadEvent struct {
	Seq    int64  `json:"seq"`
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// acceptedURLs names the store URL forms for error messages.
const acceptedURLs = "sqlite://./relative/path.db or sqlite:///absolute/path.db " +
	"(optionally ?synchronous=full|normal)"

// Open opens the store named by url:
//
//	sqlite://./regate.db         a SQLite file relative to the working directory
//	sqlite:///var/lib/regate.db  a SQLite file at an absolute path
//	sqlite://...?synchronous=normal
//
// PATH is used as written (no percent-decoding) and cannot contain '?'. The
// file is created when missing, its directory is not. postgres:// URLs are
// recognized but not supported yet. logger may be nil.
//
// The opening process appends: it holds the store's journal (PATH.journal)
// until Close, and a second Open of the same store fails (after waiting up to
// ten seconds for the other process to let go). Readers use OpenReadOnly.
func Open(ctx context.Context, url string, logger hclog.Logger) (Store, error) {
	return open(ctx, url, logger, false)
}

// OpenReadOnly opens the store named by url for reading while another process
// may append to it (the CLI's sessions, replay, verify, export): Append fails.
// Reads see every event appended so far: the database, and the events of the
// journal that the appending process has not copied into it yet. When no
// process holds the store and its journal still holds events (regate stopped
// before copying them into the database), they are copied first.
func OpenReadOnly(ctx context.Context, url string, logger hclog.Logger) (Store, error) {
	return open(ctx, url, logger, true)
}

func open(ctx context.Context, url string, logger hclog.Logger, readOnly bool) (Store, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("recorder: store URL %q has no scheme; use %s", url, acceptedURLs)
	}
	switch strings.ToLower(scheme) {
	case "sqlite":
		opts, err := parseSQLiteURL(rest)
		if err != nil {
			return nil, fmt.Errorf("recorder: store URL %q: %w; use %s", url, err, acceptedURLs)
		}
		opts.readOnly = readOnly
		return openSQLite(ctx, opts, logger)
	case "postgres", "postgresql":
		return nil, fmt.Errorf("recorder: postgres stores are not supported yet; use %s", acceptedURLs)
	default:
		return nil, fmt.Errorf("recorder: unsupported store URL scheme %q; use %s", scheme, acceptedURLs)
	}
}

// Stats describes a store's write path for monitoring.
type Stats struct {
	// Appended counts the events appended since the store was opened.
	Appended int64 `json:"appended"`
	// Backlog is the number of events in the journal not yet copied into
	// the database.
	Backlog int64 `json:"backlog"`
	// JournalBytes is the size of the journal.
	JournalBytes int64 `json:"journal_bytes"`
	// CopyFailures counts failed copies into the database (each is retried).
	CopyFailures int64 `json:"copy_failures"`
	// LastCopyError is the error of the last copy when it failed, else "".
	LastCopyError string `json:"last_copy_error,omitempty"`
}

// StatsReporter is implemented by stores that report Stats (the SQLite
// store opened for appending).
type StatsReporter interface {
	Stats() Stats
}
