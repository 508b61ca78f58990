package recorder

import (
	"context"
	"database/sql"
	"time"
)

// CommandFilter selects command events (what-if, fixtures, decision export).
// The zero value selects every command.
type CommandFilter struct {
	// Since and Until bound the event time: Since <= time < Until (zero: unbounded).
	Since, Until time.Time
	// Target keeps one target's commands ("" for all).
	Target string
	// SessionID keeps one session's commands ("" for all).
	SessionID string
}

// Match tells whether ev is a command event selected by f.
func (f CommandFilter) Match(ev *Event) bool {
	return ev.Type == TypeCommand &&
		(f.Since.IsZero() || !ev.Time.Before(f.Since)) &&
		(f.Until.IsZero() || ev.Time.Before(f.Until)) &&
		(f.Target == "" || ev.Target == f.Target) &&
		(f.SessionID == "" || ev.SessionID == f.SessionID)
}

// Commands calls fn for every command event f selects, in chain order,
// reading in one snapshot while appends continue. It stops at fn's first error
// and returns it.
func (s *sqliteStore) Commands(ctx context.Context, f CommandFilter, fn func(*Event) error) error {
	where, args := "", []any(nil)
	if f.SessionID != "" {
		where, args = ` WHERE session_id = ?`, []any{f.SessionID}
	}
	since, until := f.Since.UTC().Format(TimeFormat), f.Until.UTC().Format(TimeFormat)
	keep := func(r *Record) bool {
		return r.Type == TypeCommand && (f.Since.IsZero() || r.Time >= since) &&
			(f.Until.IsZero() || r.Time < until) && (f.Target == "" || r.Target == f.Target) &&
			(f.SessionID == "" || r.SessionID == f.SessionID)
	}
	return s.readSnapshot(ctx, func(tx *sql.Tx, tail []Record) error {
		return eachEvent(ctx, tx, tail, "commands", where, args, keep, f.Match, fn)
	})
}
