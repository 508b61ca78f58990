package recorder

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// A store opened read-only while a gateway appends to it (the CLI's) sees the
// database as of a moment plus the events of the journal that the database
// does not hold yet, so that it reads every event appended so far, not just
// those already copied. (The appending process itself waits for its copy
// instead: see catchUp.)

// snapshotTries bounds the retries of readSnapshot when the journal moved on
// (was copied and emptied) between the database snapshot and reading it.
const snapshotTries = 5

// readSnapshot calls fn with one read transaction of the database and the
// journal's records that follow that transaction's chain head, in chain order
// (none in the appending process, which waits for its copy first).
func (s *sqliteStore) readSnapshot(ctx context.Context, fn func(tx *sql.Tx, tail []Record) error) error {
	s.catchUp(ctx)
	for try := 1; ; try++ {
		tx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return err
		}
		tail, ok, err := s.journalTail(ctx, tx)
		if err == nil && !ok && try < snapshotTries {
			_ = tx.Rollback()
			continue
		}
		if err == nil {
			err = fn(tx, tail)
		}
		return errors.Join(err, tx.Rollback())
	}
}

// journalTail reads the records of the journal after tx's chain head. ok is
// false when the journal does not continue that head (it was copied and
// emptied after tx's snapshot was taken, and new events followed): a newer
// snapshot is needed.
func (s *sqliteStore) journalTail(ctx context.Context, tx *sql.Tx) (tail []Record, ok bool, err error) {
	if s.journal != nil {
		return nil, true, nil
	}
	var seq int64
	var hash string
	if err := tx.QueryRowContext(ctx, headSQL).Scan(&seq, &hash); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("recorder: read the chain head of %q: %w", s.path, err)
	}
	f, err := os.Open(s.path + ".journal")
	if errors.Is(err, os.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("recorder: read the event journal of %q: %w", s.path, err)
	}
	defer f.Close()
	// A last line still being written is left out (scanJournal's torn).
	_, err = scanJournal(f.Name(), f, func(_ int64, line []byte) error {
		if n, ok := bodySeq(line); ok && n <= seq {
			return nil
		}
		r, err := recordFromBody(line)
		if err != nil {
			return fmt.Errorf("recorder: event journal of %q: %w", s.path, err)
		}
		if r.Seq != seq+1 || r.PrevHash != hash {
			return errMovedOn
		}
		tail = append(tail, r)
		seq, hash = r.Seq, r.Hash
		return nil
	})
	switch {
	case errors.Is(err, errMovedOn):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return tail, true, nil
}

// errMovedOn stops journalTail at a line that does not continue the chain.
var errMovedOn = errors.New("recorder: the journal does not continue the snapshot")

// bodySeq reads the seq a body starts with ({"seq":N,...).
func bodySeq(body []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(body, seqKey)
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}
