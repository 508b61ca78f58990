package recorder

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const (
	// maxBatch bounds the events written to the journal in one write.
	maxBatch = 1024
	// maxDefer is how long deferred appends (AppendDeferred) are held back,
	// waiting for an append that must be written now to share their commit.
	maxDefer = 5 * time.Millisecond
	// yieldRounds bounds how often a leader yields to let more appends join
	// its batch (see lead).
	yieldRounds = 2
)

// pending is one queued append.
type pending struct {
	draft    Draft
	ev       *Event
	done     chan error  // buffered: the writer never blocks on it
	then     func(error) // instead of done, for AppendDeferred
	deferred bool        // may wait up to maxDefer for company (AppendDeferred)
}

// finish reports the result of the append.
func (p *pending) finish(err error) {
	if p.then != nil {
		p.then(err)
		return
	}
	p.done <- err
}

// Appends are group-committed without a writer goroutine: the appender that
// finds no commit in progress becomes the leader and commits, on its own
// goroutine, everything queued (its own event included); appenders arriving
// meanwhile queue and wait. When the leader's batch is done and undeferred
// appends are waiting, it hands the lead to the oldest of them (whose own
// event is then in the next batch), so that no caller serves the others for
// long. On an idle gateway an append thus costs no hand-off between
// goroutines. Deferred appends alone never start a commit: a timer commits
// them after maxDefer unless an undeferred append takes them along first.

// errLead, sent to a waiting appender, makes it the leader.
var errLead = errors.New("recorder: internal: lead")

// Append queues ev and waits until its batch is committed (or failed),
// committing it itself when no commit is in progress. The body is encoded on
// the caller's goroutine before the event is queued.
func (s *sqliteStore) Append(ctx context.Context, ev *Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recorder: append: %w", err)
	}
	draft, err := Encode(ev)
	if err != nil {
		return err
	}
	p := &pending{draft: draft, ev: ev, done: make(chan error, 1)}
	lead, err := s.enqueue(p)
	if err != nil {
		return err
	}
	for {
		if lead {
			s.lead(false)
		}
		err := <-p.done
		if err != errLead {
			return err
		}
		lead = true
	}
}

// AppendDeferred queues ev for an append that nobody waits on to go ahead
// (the outcome of a command already forwarded) and returns; then is called
// with the append's result, exactly once, from the goroutine that commits it
// (so it must be quick), or before AppendDeferred returns when ev cannot be
// queued. The event is held back up to maxDefer so that it shares the commit
// of the next Append rather than costing one of its own.
func (s *sqliteStore) AppendDeferred(ctx context.Context, ev *Event, then func(error)) {
	if err := ctx.Err(); err != nil {
		then(fmt.Errorf("recorder: append: %w", err))
		return
	}
	draft, err := Encode(ev)
	if err != nil {
		then(err)
		return
	}
	if _, err := s.enqueue(&pending{draft: draft, ev: ev, then: then, deferred: true}); err != nil {
		then(err)
	}
}

// enqueue queues p and reports whether the caller must lead (p is undeferred
// and no commit is in progress).
func (s *sqliteStore) enqueue(p *pending) (lead bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	if s.journal == nil {
		return false, s.errReadOnly()
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.q = append(s.q, p)
	if p.deferred {
		if !s.writing && !s.timerArmed {
			s.armTimer()
		}
		return false, nil
	}
	s.urgent++
	if s.writing {
		return false, nil
	}
	s.writing = true
	return true, nil
}

// armTimer makes sure the deferred appends are committed within maxDefer.
// s.qmu is held.
func (s *sqliteStore) armTimer() {
	s.timerArmed = true
	if s.timer == nil {
		s.timer = time.AfterFunc(maxDefer, s.flushDeferred)
	} else {
		s.timer.Reset(maxDefer)
	}
}

// flushDeferred commits what is queued unless a commit is in progress (whose
// leader then sees to the deferred appends).
func (s *sqliteStore) flushDeferred() {
	s.qmu.Lock()
	s.timerArmed = false
	if s.writing || len(s.q) == 0 {
		s.qmu.Unlock()
		return
	}
	s.writing = true
	s.qmu.Unlock()
	s.lead(true)
}

// take removes up to maxBatch-len(batch) queued appends and adds them to
// batch; undeferred is how many of them are undeferred. s.qmu is held.
func (s *sqliteStore) take(batch []*pending) (_ []*pending, undeferred int) {
	n := min(len(s.q), maxBatch-len(batch))
	for _, p := range s.q[:n] {
		if !p.deferred {
			undeferred++
		}
	}
	s.urgent -= undeferred
	batch = append(batch, s.q[:n]...)
	clear(s.q[:n])
	s.q = s.q[n:]
	if len(s.q) == 0 {
		s.q = nil
	}
	return batch, undeferred
}

// lead commits one batch of what is queued (force: even when it holds only
// deferred appends), then hands the lead to the oldest waiting undeferred
// append or, when there is none, stops leading (arming the timer for the
// deferred appends left).
func (s *sqliteStore) lead(force bool) {
	s.qmu.Lock()
	if s.urgent == 0 && !force || len(s.q) == 0 {
		s.stopLeading()
		return
	}
	batch, undeferred := s.take(make([]*pending, 0, min(len(s.q), maxBatch)))
	company := s.lastUrgent > 1 || undeferred > 1
	s.qmu.Unlock()
	// Before committing, let goroutines that are ready to run (sessions
	// about to append a command) run first, and take what they queue: a
	// commit is a system call (and an fsync with synchronous=full), and on
	// a busy gateway this makes batches larger. Only when appends have
	// company (this batch or the last one had more than one undeferred
	// append): a lone appender would wait for nobody, and Gosched wakes an
	// idle thread (a futex call, and on a VM an interprocessor interrupt)
	// on the way to every forwarded command.
	for range yieldRounds {
		if len(batch) == maxBatch || !company {
			break
		}
		runtime.Gosched()
		s.qmu.Lock()
		n := len(batch)
		var more int
		batch, more = s.take(batch)
		undeferred += more
		s.qmu.Unlock()
		if len(batch) == n {
			break
		}
	}
	s.commitBatch(batch)
	s.qmu.Lock()
	s.lastUrgent = undeferred
	for _, p := range s.q {
		if !p.deferred {
			// The lead passes to p, which stays queued: its own event is
			// in the next batch.
			s.qmu.Unlock()
			p.done <- errLead
			return
		}
	}
	s.stopLeading()
}

// stopLeading ends the lead; s.qmu is held and is released.
func (s *sqliteStore) stopLeading() {
	s.writing = false
	if len(s.q) > 0 && !s.timerArmed {
		s.armTimer()
	}
	s.idle.Broadcast()
	s.qmu.Unlock()
}

// flushAll commits everything queued; Close uses it after refusing new
// appends.
func (s *sqliteStore) flushAll() {
	s.qmu.Lock()
	for {
		for s.writing {
			s.idle.Wait()
		}
		if len(s.q) == 0 {
			break
		}
		s.writing = true
		s.qmu.Unlock()
		s.lead(true)
		s.qmu.Lock()
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timerArmed = false
	}
	s.qmu.Unlock()
}

// commitBatch makes batch durable and tells every waiter the result: it
// seals the events onto the chain after the current head and writes them to
// the journal in one write (journal.go), then hands the records to the
// ingester (ingest.go), which copies them into the database. An event whose ID
// is already taken fails alone; a failed journal write fails the batch and
// leaves the chain head where it was.
func (s *sqliteStore) commitBatch(batch []*pending) {
	batch = s.rejectDuplicates(batch)
	if len(batch) == 0 {
		return
	}
	recs := make([]Record, len(batch))
	err := s.waitBacklog(len(batch))
	s.jmu.Lock()
	if err == nil {
		seq, prev := s.headSeq, s.headHash
		for i, p := range batch {
			seq++
			if recs[i], err = p.draft.Seal(seq, prev); err != nil {
				break
			}
			prev = recs[i].Hash
		}
		if err == nil {
			err = s.journal.write(recs)
		}
		if err == nil {
			s.headSeq, s.headHash = seq, prev
			s.headAtomic.Store(seq)
			s.queueIngest(recs)
			ids := make([]string, len(recs))
			for i := range recs {
				ids[i] = recs[i].ID
			}
			s.filter.add(ids...)
			s.bound()
		}
	}
	s.jmu.Unlock()
	if err != nil {
		s.logger.Error("append failed", "events", len(batch), "error", err)
	}
	for i, p := range batch {
		if err == nil {
			p.ev.Seq, p.ev.PrevHash, p.ev.Hash = recs[i].Seq, recs[i].PrevHash, recs[i].Hash
		}
		p.finish(err)
	}
}

// rejectDuplicates fails the appends whose event ID is taken (by an earlier
// event of the batch, one waiting to be copied into the database, or one in
// the database) and returns the others. The waiting IDs are checked before
// the database: an ID leaves the waiting set only after its copy committed,
// so it cannot slip between the two checks. Only IDs the store's filter may
// hold are looked up in the database.
func (s *sqliteStore) rejectDuplicates(batch []*pending) []*pending {
	kept := batch[:0]
	s.imu.Lock()
	seen := make(map[string]bool, len(batch))
	for _, p := range batch {
		id := p.draft.ID()
		if _, waiting := s.ingestIDs[id]; waiting || seen[id] {
			s.rejectDuplicate(p)
			continue
		}
		seen[id] = true
		kept = append(kept, p)
	}
	s.imu.Unlock()
	var maybe []*pending // IDs the filter may hold: looked up in the database
	for _, p := range kept {
		if s.filter.mayContain(p.draft.ID()) {
			maybe = append(maybe, p)
		}
	}
	if len(maybe) == 0 {
		return kept
	}
	taken, err := s.ids.stored(maybe)
	if err != nil {
		err = fmt.Errorf("recorder: append %d events: check their IDs: %w", len(kept), err)
		s.logger.Error("append failed", "events", len(kept), "error", err)
		for _, p := range kept {
			p.finish(err)
		}
		return nil
	}
	if len(taken) == 0 {
		return kept
	}
	out := kept[:0]
	for _, p := range kept {
		if taken[p.draft.ID()] {
			s.rejectDuplicate(p)
			continue
		}
		out = append(out, p)
	}
	return out
}

func (s *sqliteStore) rejectDuplicate(p *pending) {
	err := fmt.Errorf("recorder: append event %q: %w", p.draft.ID(), ErrDuplicateID)
	s.logger.Warn("event rejected", "id", p.draft.ID(), "error", err)
	p.finish(err)
}

// ErrDuplicateID is returned by Append for an event whose ID is taken.
var ErrDuplicateID = errors.New("an event with this ID is already recorded")

// rollbackRaw rolls the open transaction back and returns cause, joined with
// a rollback failure other than "no transaction is active" (a failed COMMIT
// may have ended it already).
func (s *sqliteStore) rollbackRaw(ctx context.Context, cause error) error {
	if err := execRaw(ctx, s.raw.rollback, nil); err != nil && !noTransaction(err) {
		return errors.Join(cause, fmt.Errorf("rollback: %w", err))
	}
	return cause
}

// noTransaction reports whether err says that no transaction was open.
func noTransaction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no transaction is active")
}

// isConstraint reports whether err is an SQLite constraint violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}
