package recorder

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

const (
	// maxIngest bounds the records copied into the database in one
	// transaction.
	maxIngest = 8192
	// ingestGather is the least time between the starts of two copies
	// while fewer than ingestGatherBelow records are waiting: a transaction
	// has a high fixed cost, and every commit writes the index and interior
	// pages it touched again, so under load records accumulate for up to
	// this long (readers of the database file in other processes see them
	// this much later at most, plus the commit; the CLI reads the journal
	// too), while the first records after a quiet spell are copied at once.
	// Written per statement under pgbench -S (journal, WAL and checkpoint):
	// about 24 KB at 20 ms, 14 KB at 100 ms, 11 KB at 400 ms.
	ingestGather      = 400 * time.Millisecond
	ingestGatherBelow = 8192
	// defaultMaxBacklog bounds the records journaled but not yet in the
	// database (they wait in memory). Beyond it, appends wait for the copy
	// to catch up, up to backlogWait, and fail when it does not or when the
	// last copy failed (the database is full or broken): the journal alone
	// would grow without bound.
	defaultMaxBacklog = 20000
	backlogWait       = 10 * time.Second
	// closeIngestTries is how often Close tries to copy what is left before
	// it leaves it in the journal for the next open.
	closeIngestTries = 3
)

// The ingester's state is guarded by s.imu (see sqliteStore).

// queueIngest hands journaled records to the ingester; s.jmu is held.
func (s *sqliteStore) queueIngest(recs []Record) {
	s.imu.Lock()
	s.iq = append(s.iq, recs...)
	for i := range recs {
		s.ingestIDs[recs[i].ID] = struct{}{}
	}
	s.imu.Unlock()
	s.ingestWake()
}

func (s *sqliteStore) ingestWake() {
	select {
	case s.ingestKick <- struct{}{}:
	default:
	}
}

// waitBacklog waits until n more records fit in the backlog, and refuses them
// when the copy into the database is failing or does not catch up within
// backlogWait. Only the leader calls it, so waiting here holds back every
// appender.
func (s *sqliteStore) waitBacklog(n int) error {
	fits := func() bool {
		s.imu.Lock()
		defer s.imu.Unlock()
		return len(s.iq)+n <= s.maxBacklog
	}
	if s.awaitCopy(context.Background(), backlogWait, time.Millisecond, fits) {
		return nil
	}
	s.imu.Lock()
	queued, ingestErr := len(s.iq), s.ingestErr
	s.imu.Unlock()
	return fmt.Errorf("recorder: %d events are waiting to be copied into the event database %q "+
		"(the limit is %d); the last copy failed with: %v", queued, s.path, s.maxBacklog, ingestErr)
}

// awaitCopy waits, waking the ingester and checking every so often, until
// done holds (true), or until the copy into the database fails, ctx ends or
// wait has passed (false).
func (s *sqliteStore) awaitCopy(ctx context.Context, wait, every time.Duration, done func() bool) bool {
	deadline := time.Now().Add(wait)
	for !done() {
		s.imu.Lock()
		failing := s.ingestErr != nil
		s.imu.Unlock()
		if failing || ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		s.ingestWake()
		time.Sleep(every)
	}
	return true
}

// ingestLoop copies journaled records into the database until stopIngest.
// A failed copy is retried (the records stay queued and in the journal) with
// a growing pause; appends go on until the backlog limit.
func (s *sqliteStore) ingestLoop() {
	defer close(s.ingestDone)
	pause := 50 * time.Millisecond
	var last time.Time // when the last copy started
	for {
		stopping := false
		select {
		case <-s.ingestKick:
		case <-s.ingestStop:
			stopping = true
		}
		if wait := time.Until(last.Add(ingestGather)); !stopping && wait > 0 && s.queued() < ingestGatherBelow {
			// Let records accumulate, unless Close is waiting.
			select {
			case <-time.After(wait):
			case <-s.ingestStop:
				stopping = true
			}
		}
		last = time.Now()
		failures := 0
		for {
			n, err := s.ingestOnce()
			if err != nil {
				failures++
				s.logger.Error("cannot copy events into the event database; they are kept in the journal "+
					"and copied when it works again", "path", s.path, "error", err)
				if stopping && failures >= closeIngestTries {
					return
				}
				select {
				case <-time.After(pause):
				case <-s.ingestStop:
					stopping = true
				}
				pause = min(2*pause, 5*time.Second)
				continue
			}
			pause = 50 * time.Millisecond
			if n == 0 {
				break
			}
		}
		if stopping {
			return
		}
		s.maybeTruncate(journalTruncateAt)
	}
}

func (s *sqliteStore) queued() int {
	s.imu.Lock()
	defer s.imu.Unlock()
	return len(s.iq)
}

// ingestOnce copies up to maxIngest queued records in one transaction and
// reports how many.
func (s *sqliteStore) ingestOnce() (int, error) {
	s.imu.Lock()
	n := min(len(s.iq), maxIngest)
	batch := s.iq[:n:n]
	s.imu.Unlock()
	if n == 0 {
		return 0, nil
	}
	err := s.insertRecords(batch)
	s.imu.Lock()
	defer s.imu.Unlock()
	s.ingestErr = err
	if err != nil {
		s.copyFailures++
		return 0, err
	}
	for i := range batch {
		delete(s.ingestIDs, batch[i].ID)
	}
	s.ingested.Store(batch[n-1].Seq)
	clear(s.iq[:n]) // batch shares these elements
	s.iq = s.iq[n:]
	if len(s.iq) == 0 {
		s.iq = nil
	}
	return n, nil
}

// maybeTruncate empties the journal when the database holds all of it and it
// has reached min bytes.
func (s *sqliteStore) maybeTruncate(min int64) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.journal.size < min || s.ingested.Load() != s.headSeq {
		return
	}
	if err := s.journal.truncate(); err != nil {
		s.logger.Warn("cannot empty the event journal; will retry", "error", err)
	}
}

// bound empties a journal that has grown past journalMaxSize because the
// ingester, under a load that never lets up, was never found caught up: the
// leader calling it waits (so appends wait too) until the database holds all
// of it. A copy that fails or does not catch up within backlogWait leaves
// the journal as it is (appends then fail on the backlog). s.jmu is held,
// and released while waiting: the ingester takes it after each copy
// (maybeTruncate), and a wait holding it stalled the copy it waited for
// until backlogWait ran out. Nothing else writes the journal meanwhile: only
// the leader appends, and the head it sealed stays put.
func (s *sqliteStore) bound() {
	if s.journal.size < journalMaxSize {
		return
	}
	caughtUp := func() bool { return s.ingested.Load() == s.headSeq }
	s.jmu.Unlock()
	ok := s.awaitCopy(context.Background(), backlogWait, time.Millisecond, caughtUp)
	s.jmu.Lock()
	if !ok || s.journal.size < journalMaxSize { // or the ingester emptied it
		return
	}
	if err := s.journal.truncate(); err != nil {
		s.logger.Warn("cannot empty the event journal; will retry", "error", err)
	}
}

// insertRecords writes sealed records in one transaction.
func (s *sqliteStore) insertRecords(recs []Record) error {
	ctx := context.Background()
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("recorder: copy %d events into the database: %w", len(recs), err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("recorder: driver connection %T", dc)
		}
		if err := s.raw.prepare(ctx, c); err != nil {
			return fmt.Errorf("recorder: copy %d events into the database: %w", len(recs), err)
		}
		return s.insertRaw(ctx, recs)
	})
}

func (s *sqliteStore) insertRaw(ctx context.Context, recs []Record) error {
	st := &s.raw
	if err := execRaw(ctx, st.begin, nil); err != nil {
		return fmt.Errorf("recorder: copy %d events into the database: begin transaction: %w", len(recs), err)
	}
	if err := s.insertBlocks(ctx, recs); err != nil {
		return s.rollbackRaw(ctx, err)
	}
	if err := execRaw(ctx, st.commit, nil); err != nil {
		return s.rollbackRaw(ctx, fmt.Errorf("recorder: copy %d events into the database: commit: %w", len(recs), err))
	}
	return nil
}

// bodyText passes a body to SQLite as TEXT (a BLOB would be read as JSONB by
// SQLite's JSON functions) without copying it: the driver copies the bytes
// while binding, and a sealed body is never modified.
func bodyText(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// recover copies the records the journal holds beyond the database's chain
// head into the database, after checking that they continue the chain, and
// sets the store's head. A torn last line (a write cut short by a crash; its
// append never returned) is dropped.
func (s *sqliteStore) recover(ctx context.Context) error {
	var seq int64
	var hash string
	err := s.writer.QueryRowContext(ctx, headSQL).Scan(&seq, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("recorder: read the chain head of %q: %w", s.path, err)
	}
	lines, torn, err := s.journal.read()
	if err != nil {
		return err
	}
	if torn >= 0 {
		s.logger.Warn("dropping the incomplete last line of the event journal (a write cut short; "+
			"its append had not returned)", "path", s.journal.path, "offset", torn)
	}
	var missing []Record
	for i, l := range lines {
		r := l.rec
		// The journal's lines are consecutive events of the chain; those the
		// database holds already are skipped, the first one it lacks must
		// follow its head.
		if i > 0 && (r.Seq != lines[i-1].rec.Seq+1 || r.PrevHash != lines[i-1].rec.Hash) {
			return s.brokenJournal(l, lines[i-1].rec.Seq+1, lines[i-1].rec.Hash)
		}
		if r.Seq <= seq {
			continue
		}
		if r.Seq != seq+1 || r.PrevHash != hash {
			return s.brokenJournal(l, seq+1, hash)
		}
		missing = append(missing, r)
		seq, hash = r.Seq, r.Hash
	}
	for len(missing) > 0 {
		n := min(len(missing), maxIngest)
		if err := s.insertRecords(missing[:n]); err != nil {
			return fmt.Errorf("recorder: copy the events of the journal %q into %q: %w", s.journal.path, s.path, err)
		}
		missing = missing[n:]
	}
	if len(lines) > 0 || torn >= 0 {
		s.logger.Info("event journal recovered", "path", s.journal.path, "events", len(lines))
	}
	if err := s.journal.truncate(); err != nil {
		return err
	}
	s.headSeq, s.headHash = seq, hash
	s.headAtomic.Store(seq)
	s.ingested.Store(seq)
	s.openedAt = seq
	return nil
}

func (s *sqliteStore) brokenJournal(l journalLine, seq int64, prev string) error {
	return fmt.Errorf("recorder: the event journal %q does not continue the chain of %q: "+
		"the line at offset %d holds seq %d with prev_hash %q, expected seq %d after hash %q; "+
		"move the journal aside to open the database without the events it holds",
		s.journal.path, s.path, l.offset, l.rec.Seq, l.rec.PrevHash, seq, prev)
}

// Stats reports the write path of a store opened for appending (zero for a
// read-only one).
func (s *sqliteStore) Stats() Stats {
	if s.journal == nil {
		return Stats{}
	}
	s.jmu.Lock()
	head, size := s.headSeq, s.journal.size
	s.jmu.Unlock()
	s.imu.Lock()
	defer s.imu.Unlock()
	st := Stats{Appended: head - s.openedAt, Backlog: int64(len(s.iq)), JournalBytes: size,
		CopyFailures: s.copyFailures}
	if s.ingestErr != nil {
		st.LastCopyError = s.ingestErr.Error()
	}
	return st
}

// catchUp waits (up to a few seconds, or until ctx ends or a copy fails) until
// the database holds every event appended before the call, so that a read in
// this process sees its own appends.
func (s *sqliteStore) catchUp(ctx context.Context) {
	if s.journal == nil {
		return
	}
	target := s.headAtomic.Load()
	s.awaitCopy(ctx, 5*time.Second, 200*time.Microsecond, func() bool { return s.ingested.Load() >= target })
}
