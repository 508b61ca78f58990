package recorder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/regate/regate/policies/decision"
)

// filteredSessions selects the newest sessions (?2, -1 for all) that started
// at or after ?1; SessionSummarizer applies the same filter.
const filteredSessions = `SELECT session_id FROM event_blocks WHERE session_id <> ''
	GROUP BY session_id HAVING MIN(first_time) >= ?1
	ORDER BY MIN(first_time) DESC, MIN(first_seq) DESC LIMIT ?2`

// errStop ends a walk over the records early.
var errStop = errors.New("recorder: internal: stop")

// Events returns the session's events in chain order.
func (s *sqliteStore) Events(ctx context.Context, sessionID string) ([]Event, error) {
	events := []Event{}
	err := s.readSnapshot(ctx, func(tx *sql.Tx, tail []Record) error {
		return eachEvent(ctx, tx, tail, fmt.Sprintf("events of session %q", sessionID),
			` WHERE session_id = ?`, []any{sessionID},
			func(r *Record) bool { return r.SessionID == sessionID }, nil,
			func(ev *Event) error { events = append(events, *ev); return nil })
	})
	if err != nil {
		return nil, err
	}
	return events, nil
}

// eachEvent calls fn, in chain order, for every event of the snapshot tx in
// the blocks where (with args) selects, then of the journal's tail, that keep
// (looking at the record) and match (when not nil, at the decoded event)
// keep. It stops at fn's first error. what names the events in errors.
func eachEvent(ctx context.Context, tx *sql.Tx, tail []Record, what, where string, args []any,
	keep func(*Record) bool, match func(*Event) bool, fn func(*Event) error) error {
	each := func(r *Record) error {
		if !keep(r) {
			return nil
		}
		ev, err := r.Event()
		if err != nil {
			return err
		}
		if match != nil && !match(&ev) {
			return nil
		}
		return fn(&ev)
	}
	err := eachRecord(ctx, tx, what, where, args, func(e *storedEvent) error {
		if e.err != nil { // a body Verify would report: not skipped as another type
			return fmt.Errorf("recorder: read %s: event seq %d: %w", what, e.Seq, e.err)
		}
		return each(&e.Record)
	})
	if err != nil {
		return err
	}
	for i := range tail {
		if err := each(&tail[i]); err != nil {
			return err
		}
	}
	return nil
}

// Verify walks the whole chain in one read transaction (a consistent snapshot
// while appends continue).
func (s *sqliteStore) Verify(ctx context.Context) (VerifyResult, error) {
	v := NewChainVerifier()
	err := s.readSnapshot(ctx, func(tx *sql.Tx, tail []Record) error {
		err := eachRecord(ctx, tx, "events to verify", "", nil, func(e *storedEvent) error {
			if !v.addDecoded(e.Record, &e.fields.chainFields, e.err) {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			// A body that did not decode names no ID: the ID index may.
			if bad := v.res.FirstBad; bad != nil && bad.ID == "" {
				_ = tx.QueryRowContext(ctx, `SELECT id FROM event_ids WHERE seq = ?`, bad.Seq).Scan(&bad.ID)
			}
			return nil
		}
		if err != nil {
			return err
		}
		for _, r := range tail {
			if !v.Add(r) {
				break
			}
		}
		return nil
	})
	if err != nil {
		return VerifyResult{}, err
	}
	return v.Result(), nil
}

// Sessions summarizes the sessions selected by f, newest first.
func (s *sqliteStore) Sessions(ctx context.Context, f SessionFilter) ([]SessionSummary, error) {
	sum := NewSessionSummarizer()
	add := func(e *storedEvent) error { // the blocks read are sessions'
		if e.err != nil {
			return fmt.Errorf("recorder: decode event seq %d: %w", e.Seq, e.err)
		}
		ev, err := summaryEvent(&e.Record, &e.fields)
		if err != nil {
			return err
		}
		sum.Add(ev)
		return nil
	}
	err := s.readSnapshot(ctx, func(tx *sql.Tx, tail []Record) error {
		where, args := ` WHERE session_id <> ''`, []any(nil)
		if !f.Since.IsZero() || f.Limit > 0 {
			since, limit := "", -1
			if !f.Since.IsZero() {
				since = f.Since.UTC().Format(TimeFormat)
			}
			if f.Limit > 0 {
				limit = f.Limit
			}
			ids, err := selectedSessions(ctx, tx, since, limit)
			if err != nil {
				return err
			}
			// Sessions the journal continues that the filter left out (it
			// only saw the database) are read whole, so that the summarizer
			// filters them by their real start.
			seen := map[string]bool{}
			for _, id := range ids {
				seen[id.(string)] = true
			}
			for _, r := range tail {
				if r.SessionID != "" && !seen[r.SessionID] {
					seen[r.SessionID] = true
					ids = append(ids, r.SessionID)
				}
			}
			if len(ids) == 0 {
				return nil // nothing selected, in the database or the journal
			}
			where, args = ` WHERE session_id IN (?`+strings.Repeat(",?", len(ids)-1)+`)`, ids
		}
		if err := eachRecord(ctx, tx, "sessions", where, args, add); err != nil {
			return err
		}
		for _, r := range tail {
			if r.SessionID == "" {
				continue
			}
			ev, err := r.Event()
			if err != nil {
				return err
			}
			sum.Add(&ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sum.Summaries(f), nil
}

// selectedSessions lists the IDs of the sessions filteredSessions selects.
func selectedSessions(ctx context.Context, tx *sql.Tx, since string, limit int) ([]any, error) {
	rows, err := tx.QueryContext(ctx, filteredSessions, since, limit)
	if err != nil {
		return nil, fmt.Errorf("recorder: query sessions: %w", err)
	}
	defer rows.Close()
	var ids []any
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("recorder: read sessions: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recorder: read sessions: %w", err)
	}
	return ids, nil
}

// summaryEvent makes the partial event SessionSummarizer needs of a record
// and its body's fields.
func summaryEvent(r *Record, f *bodyFields) (*Event, error) {
	ev := Event{Seq: r.Seq, ID: r.ID, Type: r.Type, SessionID: r.SessionID, Target: r.Target,
		Subject: r.Subject, Ref: r.Ref, Hash: r.Hash, Protocol: f.Protocol}
	var err error
	if ev.Time, err = time.Parse(TimeFormat, r.Time); err != nil {
		return nil, fmt.Errorf("recorder: event seq %d: time: %w", r.Seq, err)
	}
	if f.Session != nil && f.Session.ClientAddr != "" {
		ev.Session = &SessionInfo{ClientAddr: f.Session.ClientAddr}
	}
	if f.Decision != nil && f.Decision.Allow != nil {
		ev.Decision = &decision.Decision{Allow: *f.Decision.Allow}
	}
	if f.Outcome != nil && f.Outcome.Status != "" {
		ev.Outcome = &Outcome{Status: f.Outcome.Status}
	}
	return &ev, nil
}
