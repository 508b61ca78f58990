package recorder

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/regate/regate/policies/decision"
)

const selectRecords = `SELECT seq, id, time, type, session_id, target, subject, ref, body, prev_hash, hash
	FROM events`

// summaryColumns are what SessionSummarizer needs of each event.
const summaryColumns = `SELECT seq, id, time, type, session_id, target, subject, ref,
		json_extract(body, '$.protocol'), json_extract(body, '$.session.client_addr'),
		json_extract(body, '$.decision.allow'), json_extract(body, '$.outcome.status')
	FROM events`

// filteredSessions selects the events of the newest sessions (?2, -1 for all)
// that started at or after ?1; SessionSummarizer applies the same filter.
const filteredSessions = ` WHERE session_id IN (
		SELECT session_id FROM events WHERE session_id <> ''
		GROUP BY session_id HAVING MIN(time) >= ?1
		ORDER BY MIN(time) DESC, MIN(seq) DESC LIMIT ?2)
	ORDER BY seq`

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

// eachEvent calls fn, in chain order, for every event of the snapshot tx
// selected by where (with args), then for every event of the journal's tail
// that the same selection, in Go, keeps: keep looks at the record, match
// (when not nil) at the decoded event. It stops at fn's first error. what
// names the events in errors.
func eachEvent(ctx context.Context, tx *sql.Tx, tail []Record, what, where string, args []any,
	keep func(*Record) bool, match func(*Event) bool, fn func(*Event) error) error {
	rows, err := tx.QueryContext(ctx, selectRecords+where+` ORDER BY seq`, args...)
	if err != nil {
		return fmt.Errorf("recorder: query %s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Record
		if err := scanRecord(rows, &r, &r.Body); err != nil {
			return fmt.Errorf("recorder: read %s: %w", what, err)
		}
		ev, err := r.Event()
		if err != nil {
			return err
		}
		if err := fn(&ev); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recorder: read %s: %w", what, err)
	}
	for i := range tail {
		if !keep(&tail[i]) {
			continue
		}
		ev, err := tail[i].Event()
		if err != nil {
			return err
		}
		if match != nil && !match(&ev) {
			continue
		}
		if err := fn(&ev); err != nil {
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
		rows, err := tx.QueryContext(ctx, selectRecords+` ORDER BY seq`)
		if err != nil {
			return fmt.Errorf("recorder: query events to verify: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var r Record
			var body sql.RawBytes // valid until the next row; the verifier keeps no reference
			if err := scanRecord(rows, &r, &body); err != nil {
				return fmt.Errorf("recorder: read event after seq %d to verify: %w", v.next-1, err)
			}
			r.Body = body
			if !v.Add(r) {
				return nil
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("recorder: read events to verify: %w", err)
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

func scanRecord(rows *sql.Rows, r *Record, body any) error {
	return rows.Scan(&r.Seq, &r.ID, &r.Time, &r.Type, &r.SessionID, &r.Target, &r.Subject, &r.Ref,
		body, &r.PrevHash, &r.Hash)
}

// Sessions summarizes the sessions selected by f, newest first.
func (s *sqliteStore) Sessions(ctx context.Context, f SessionFilter) ([]SessionSummary, error) {
	sum := NewSessionSummarizer()
	err := s.readSnapshot(ctx, func(tx *sql.Tx, tail []Record) error {
		filtered := !f.Since.IsZero() || f.Limit > 0
		seen := map[string]bool{}
		add := func(q string, args ...any) error {
			rows, err := tx.QueryContext(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("recorder: query sessions: %w", err)
			}
			defer rows.Close()
			for rows.Next() {
				ev, err := scanSummaryEvent(rows)
				if err != nil {
					return fmt.Errorf("recorder: read sessions: %w", err)
				}
				seen[ev.SessionID] = true
				sum.Add(ev)
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("recorder: read sessions: %w", err)
			}
			return nil
		}
		if !filtered {
			if err := add(summaryColumns + ` WHERE session_id <> '' ORDER BY seq`); err != nil {
				return err
			}
		} else {
			since, limit := "", -1
			if !f.Since.IsZero() {
				since = f.Since.UTC().Format(TimeFormat)
			}
			if f.Limit > 0 {
				limit = f.Limit
			}
			if err := add(summaryColumns+filteredSessions, since, limit); err != nil {
				return err
			}
			// Sessions the journal continues that the filter left out (it
			// only saw the database) are read whole, so that the summarizer
			// filters them by their real start.
			var more []any
			for _, r := range tail {
				if r.SessionID != "" && !seen[r.SessionID] {
					seen[r.SessionID] = true
					more = append(more, r.SessionID)
				}
			}
			if len(more) > 0 {
				q := summaryColumns + ` WHERE session_id IN (?` + strings.Repeat(",?", len(more)-1) + `) ORDER BY seq`
				if err := add(q, more...); err != nil {
					return err
				}
			}
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

// scanSummaryEvent reads a summaryColumns row into a partial event.
func scanSummaryEvent(rows *sql.Rows) (*Event, error) {
	var ev Event
	var tm string
	var protocol, clientAddr, status sql.NullString
	var allow sql.NullBool
	err := rows.Scan(&ev.Seq, &ev.ID, &tm, &ev.Type, &ev.SessionID, &ev.Target, &ev.Subject, &ev.Ref,
		&protocol, &clientAddr, &allow, &status)
	if err != nil {
		return nil, err
	}
	if ev.Time, err = time.Parse(TimeFormat, tm); err != nil {
		return nil, fmt.Errorf("event seq %d: time column: %w", ev.Seq, err)
	}
	ev.Protocol = protocol.String
	if clientAddr.Valid {
		ev.Session = &SessionInfo{ClientAddr: clientAddr.String}
	}
	if allow.Valid {
		ev.Decision = &decision.Decision{Allow: allow.Bool}
	}
	if status.Valid {
		ev.Outcome = &Outcome{Status: status.String}
	}
	return &ev, nil
}
