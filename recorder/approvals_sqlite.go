package recorder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// stateApproved is the state ReusableApproval looks for (proxy/approval's
// Approved).
const stateApproved = "approved"

const (
	approvalColumns = `id, state, fingerprint, created_at, expires_at, used, body`
	selectApprovals = `SELECT ` + approvalColumns + ` FROM approvals`
	insertApproval  = `INSERT INTO approvals (` + approvalColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?)`
	// updateApproval is the compare-and-set: it changes the row only while it
	// is still in the state (and Used flag) the caller read.
	updateApproval = `UPDATE approvals
		SET state = ?, fingerprint = ?, created_at = ?, expires_at = ?, used = ?, body = ?
		WHERE id = ? AND state = ? AND used = ?`
	// newestFirst orders approvals by creation, ties broken by id so the order
	// is stable.
	newestFirst = ` ORDER BY created_at DESC, id DESC`
)

// Approval writes go straight to the write connection pool (s.writer, one
// connection). An appender committing a batch (writer.go) takes that
// connection only for the duration of one batch transaction and never waits on
// anything an approval write holds, so an approval write just queues for the
// connection between batches. s.mu is read-locked around the write so that Close cannot close
// the database underneath it; Close waits for it instead.

// CreateApproval stores a new request. A request whose ID is already stored
// is rejected with an error wrapping ErrConflict.
func (s *sqliteStore) CreateApproval(ctx context.Context, r ApprovalRecord) error {
	args, err := approvalArgs(r)
	if err != nil {
		return fmt.Errorf("recorder: create approval %q: %w", r.ID, err)
	}
	err = s.withWriter(func(db *sql.DB) error {
		_, err := db.ExecContext(ctx, insertApproval, args...)
		return err
	})
	switch {
	case err == nil:
		return nil
	case isConstraint(err):
		return fmt.Errorf("recorder: create approval %q: ID already stored: %w", r.ID, ErrConflict)
	default:
		return fmt.Errorf("recorder: create approval %q: %w", r.ID, err)
	}
}

// UpdateApproval replaces the request if it is still in fromState with Used
// equal to fromUsed.
func (s *sqliteStore) UpdateApproval(ctx context.Context, fromState string, fromUsed bool, r ApprovalRecord) error {
	args, err := approvalArgs(r)
	if err != nil {
		return fmt.Errorf("recorder: update approval %q: %w", r.ID, err)
	}
	// SET takes every column but id, then WHERE id, state, used.
	args = append(args[1:len(args):len(args)], r.ID, fromState, fromUsed)
	err = s.withWriter(func(db *sql.DB) error {
		res, err := db.ExecContext(ctx, updateApproval, args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("count updated rows: %w", err)
		}
		if n > 0 {
			return nil
		}
		// Requests are never deleted, so an id seen missing here was never
		// stored, and one seen present was changed by someone else.
		var one int
		err = db.QueryRowContext(ctx, `SELECT 1 FROM approvals WHERE id = ?`, r.ID).Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return fmt.Errorf("look up after a failed compare-and-set: %w", err)
		}
		return fmt.Errorf("not %s with used=%t: %w", fromState, fromUsed, ErrConflict)
	})
	if err != nil {
		return fmt.Errorf("recorder: update approval %q: %w", r.ID, err)
	}
	return nil
}

// withWriter runs fn with the write pool unless the store is closed.
func (s *sqliteStore) withWriter(fn func(db *sql.DB) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return fn(s.writer)
}

// Approval returns the request with id, or an error wrapping ErrNotFound.
func (s *sqliteStore) Approval(ctx context.Context, id string) (ApprovalRecord, error) {
	r, err := scanApproval(s.reader.QueryRowContext(ctx, selectApprovals+` WHERE id = ?`, id))
	if err != nil {
		return ApprovalRecord{}, fmt.Errorf("recorder: read approval %q: %w", id, err)
	}
	return r, nil
}

// ReusableApproval returns the newest approved, unused, unexpired request
// with the fingerprint, or an error wrapping ErrNotFound.
func (s *sqliteStore) ReusableApproval(ctx context.Context, fingerprint string, now time.Time) (ApprovalRecord, error) {
	row := s.reader.QueryRowContext(ctx, selectApprovals+
		` WHERE state = ? AND used = 0 AND fingerprint = ? AND expires_at > ?`+newestFirst+` LIMIT 1`,
		stateApproved, fingerprint, formatApprovalTime(now))
	r, err := scanApproval(row)
	if err != nil {
		return ApprovalRecord{}, fmt.Errorf("recorder: find reusable approval for %q: %w", fingerprint, err)
	}
	return r, nil
}

// Approvals lists the requests in state ("" for all), newest first.
func (s *sqliteStore) Approvals(ctx context.Context, state string) ([]ApprovalRecord, error) {
	query, args := selectApprovals+newestFirst, []any(nil)
	if state != "" {
		query, args = selectApprovals+` WHERE state = ?`+newestFirst, []any{state}
	}
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("recorder: query approvals in state %q: %w", state, err)
	}
	defer rows.Close()
	out := []ApprovalRecord{}
	for rows.Next() {
		r, err := scanApproval(rows)
		if err != nil {
			return nil, fmt.Errorf("recorder: read approvals in state %q: %w", state, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recorder: read approvals in state %q: %w", state, err)
	}
	return out, nil
}

// approvalArgs are r's column values in approvalColumns order.
func approvalArgs(r ApprovalRecord) ([]any, error) {
	if r.ID == "" {
		return nil, errors.New("empty ID")
	}
	for _, t := range []time.Time{r.CreatedAt, r.ExpiresAt} {
		// Outside these years the text is not fixed-width and would not sort.
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			return nil, fmt.Errorf("time %v out of range", t)
		}
	}
	return []any{r.ID, r.State, r.Fingerprint, formatApprovalTime(r.CreatedAt),
		formatApprovalTime(r.ExpiresAt), r.Used, string(r.Body)}, nil // body as TEXT, not BLOB
}

func formatApprovalTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// scanApproval reads one row of approvalColumns; sql.ErrNoRows becomes
// ErrNotFound.
func scanApproval(row interface{ Scan(...any) error }) (ApprovalRecord, error) {
	var r ApprovalRecord
	var created, expires string
	err := row.Scan(&r.ID, &r.State, &r.Fingerprint, &created, &expires, &r.Used, &r.Body)
	if errors.Is(err, sql.ErrNoRows) {
		return ApprovalRecord{}, ErrNotFound
	}
	if err != nil {
		return ApprovalRecord{}, fmt.Errorf("scan: %w", err)
	}
	if r.CreatedAt, err = time.Parse(TimeFormat, created); err != nil {
		return ApprovalRecord{}, fmt.Errorf("approval %q: created_at: %w", r.ID, err)
	}
	if r.ExpiresAt, err = time.Parse(TimeFormat, expires); err != nil {
		return ApprovalRecord{}, fmt.Errorf("approval %q: expires_at: %w", r.ID, err)
	}
	return r, nil
}
