package recorder

import (
	"context"
	"database/sql"
	"fmt"
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
	s.catchUp(ctx)
	rows, err := s.reader.QueryContext(ctx, selectRecords+` WHERE session_id = ? ORDER BY seq`, sessionID)
	if err != nil {
		return nil, fmt.Errorf("recorder: query events of session %q: %w", sessionID, err)
	}
	defer rows.Close()
	events := []Event{}
	for rows.Next() {
		var r Record
		if err := scanRecord(rows, &r, &r.Body); err != nil {
			return nil, fmt.Errorf("recorder: read events of session %q: %w", sessionID, err)
		}
		ev, err := r.Event()
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recorder: read events of session %q: %w", sessionID, err)
	}
	return events, nil
}

// Verify walks the whole chain in one read transaction (a consistent snapshot
// while appends continue).
func (s *sqliteStore) Verify(ctx context.Context) (VerifyResult, error) {
	s.catchUp(ctx)
	rows, err := s.reader.QueryContext(ctx, selectRecords+` ORDER BY seq`)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("recorder: query events to verify: %w", err)
	}
	defer rows.Close()
	v := NewChainVerifier()
	for rows.Next() {
		var r Record
		var body sql.RawBytes // valid until the next row; the verifier keeps no reference
		if err := scanRecord(rows, &r, &body); err != nil {
			return VerifyResult{}, fmt.Errorf("recorder: read event after seq %d to verify: %w", v.next-1, err)
		}
		r.Body = body
		if !v.Add(r) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return VerifyResult{}, fmt.Errorf("recorder: read events to verify: %w", err)
	}
	return v.Result(), nil
}

func scanRecord(rows *sql.Rows, r *Record, body any) error {
	return rows.Scan(&r.Seq, &r.ID, &r.Time, &r.Type, &r.SessionID, &r.Target, &r.Subject, &r.Ref,
		body, &r.PrevHash, &r.Hash)
}

// Sessions summarizes the sessions selected by f, newest first.
func (s *sqliteStore) Sessions(ctx context.Context, f SessionFilter) ([]SessionSummary, error) {
	s.catchUp(ctx)
	var rows *sql.Rows
	var err error
	if f.Since.IsZero() && f.Limit <= 0 {
		rows, err = s.reader.QueryContext(ctx, summaryColumns+` WHERE session_id <> '' ORDER BY seq`)
	} else {
		since, limit := "", -1
		if !f.Since.IsZero() {
			since = f.Since.UTC().Format(TimeFormat)
		}
		if f.Limit > 0 {
			limit = f.Limit
		}
		rows, err = s.reader.QueryContext(ctx, summaryColumns+filteredSessions, since, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("recorder: query sessions: %w", err)
	}
	defer rows.Close()
	sum := NewSessionSummarizer()
	for rows.Next() {
		ev, err := scanSummaryEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("recorder: read sessions: %w", err)
		}
		sum.Add(ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recorder: read sessions: %w", err)
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
