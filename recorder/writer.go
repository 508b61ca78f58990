package recorder

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const (
	// queueSize bounds the appends waiting for the writer.
	queueSize = 4096
	// maxBatch bounds the events written in one transaction.
	maxBatch = 1024
	// maxDefer is how long the writer holds back a batch of deferred appends
	// only (AppendDeferred), waiting for an append that must be written now to
	// share their commit.
	maxDefer = 5 * time.Millisecond
	// yieldRounds bounds how often the writer yields to let more appends
	// join a batch (see run).
	yieldRounds = 2
)

const (
	insertSQL = `INSERT INTO events
		(seq, id, time, type, session_id, target, subject, ref, body, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	headSQL = `SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1`
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

// Append queues ev for the writer goroutine and waits until its batch is
// committed (or failed). The body is encoded here, on the caller's goroutine,
// so that encoding runs in parallel; the writer only splices in Seq and
// PrevHash and hashes.
func (s *sqliteStore) Append(ctx context.Context, ev *Event) error {
	return s.append(ctx, ev, false)
}

// AppendDeferred queues ev for an append that nobody waits on to go ahead
// (the outcome of a command already forwarded) and returns; then is called
// with the append's result, exactly once, from the writer goroutine (so it
// must be quick), or before AppendDeferred returns when ev cannot be queued.
// The writer may hold the event back up to maxDefer so that it shares the
// commit of the next Append rather than costing one of its own. Events enter
// the chain in the order they are queued.
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
	p := &pending{draft: draft, ev: ev, then: then, deferred: true}
	if err := s.enqueue(ctx, p); err != nil {
		then(err)
	}
}

func (s *sqliteStore) append(ctx context.Context, ev *Event, deferred bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recorder: append: %w", err)
	}
	draft, err := Encode(ev)
	if err != nil {
		return err
	}
	p := &pending{draft: draft, ev: ev, done: make(chan error, 1), deferred: deferred}
	if err := s.enqueue(ctx, p); err != nil {
		return err
	}
	return <-p.done
}

func (s *sqliteStore) enqueue(ctx context.Context, p *pending) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.queue <- p:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("recorder: append event %q: %w", p.draft.ID(), ctx.Err())
	}
}

// run is the writer goroutine: it takes what is queued, up to maxBatch, and
// writes it in one transaction, until the queue is closed and drained. A
// batch of deferred appends only waits up to maxDefer for an undeferred one
// (which is then written at once, with them).
func (s *sqliteStore) run() {
	defer close(s.done)
	batch := make([]*pending, 0, maxBatch)
	var timer *time.Timer
	for p := range s.queue {
		batch = append(batch[:0], p)
		urgent := !p.deferred
	fill:
		for len(batch) < maxBatch {
			select {
			case p, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
				urgent = urgent || !p.deferred
			default:
				break fill
			}
		}
		if !urgent && len(batch) < maxBatch {
			if timer == nil {
				timer = time.NewTimer(maxDefer)
			} else {
				timer.Reset(maxDefer)
			}
		wait:
			for len(batch) < maxBatch {
				select {
				case p, ok := <-s.queue:
					if !ok {
						break wait
					}
					batch = append(batch, p)
					if !p.deferred {
						break wait
					}
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		// Before committing, let goroutines that are ready to run (sessions
		// about to append a command) run first, and take what they queue:
		// commits have a high fixed cost (transaction, chain head, WAL
		// header pages), and on a busy gateway this makes batches larger.
		// When nothing else is runnable, Gosched returns at once.
		for range yieldRounds {
			n := len(batch)
			runtime.Gosched()
		more:
			for len(batch) < maxBatch {
				select {
				case p, ok := <-s.queue:
					if !ok {
						break more
					}
					batch = append(batch, p)
				default:
					break more
				}
			}
			if len(batch) == n {
				break
			}
		}
		s.commitBatch(batch)
		clear(batch)
	}
}

// commitBatch writes batch and tells every waiter the result. An event that
// violates a constraint (a duplicate ID) fails alone and the rest is retried;
// any other failure fails the whole batch. The chain head is read from the
// database inside each transaction, so a failed batch never advances it.
func (s *sqliteStore) commitBatch(batch []*pending) {
	for len(batch) > 0 {
		recs, bad, err := s.writeTx(batch)
		if err == nil {
			for i, p := range batch {
				p.ev.Seq, p.ev.PrevHash, p.ev.Hash = recs[i].Seq, recs[i].PrevHash, recs[i].Hash
				p.finish(nil)
			}
			return
		}
		if bad >= 0 && isConstraint(err) {
			s.logger.Warn("event rejected", "id", batch[bad].draft.ID(), "error", err)
			batch[bad].finish(err)
			batch = slices.Delete(batch, bad, bad+1)
			continue
		}
		s.logger.Error("append failed", "events", len(batch), "error", err)
		for _, p := range batch {
			p.finish(err)
		}
		return
	}
}

// writeTx writes batch in one transaction after the current chain head. On an
// insert error it returns the index of the failing event, else -1.
func (s *sqliteStore) writeTx(batch []*pending) (recs []Record, bad int, err error) {
	// The writer serves many callers, so no caller's context applies here.
	ctx := context.Background()
	bad = -1
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return nil, -1, fmt.Errorf("recorder: append %d events: %w", len(batch), err)
	}
	defer conn.Close()
	rerr := conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("recorder: append: driver connection %T", dc)
		}
		if err := s.raw.prepare(ctx, c); err != nil {
			return fmt.Errorf("recorder: append %d events: %w", len(batch), err)
		}
		recs, bad, err = s.writeRaw(ctx, batch)
		return nil
	})
	if rerr != nil {
		return nil, -1, rerr
	}
	return recs, bad, err
}

// writeRaw is writeTx on the prepared statements of s.raw.
func (s *sqliteStore) writeRaw(ctx context.Context, batch []*pending) ([]Record, int, error) {
	st := &s.raw
	if err := execRaw(ctx, st.begin, nil); err != nil {
		return nil, -1, fmt.Errorf("recorder: append %d events: begin transaction: %w", len(batch), err)
	}
	seq, prev, err := headRaw(ctx, st.head)
	if err != nil {
		return nil, -1, s.rollbackRaw(ctx, fmt.Errorf("recorder: append %d events: read chain head: %w", len(batch), err))
	}
	recs := make([]Record, len(batch))
	args := make([]driver.NamedValue, 11)
	for i := range args {
		args[i].Ordinal = i + 1
	}
	for i, p := range batch {
		seq++
		r, err := p.draft.Seal(seq, prev)
		if err == nil {
			for j, v := range []any{r.Seq, r.ID, r.Time, r.Type, r.SessionID,
				r.Target, r.Subject, r.Ref, string(r.Body), r.PrevHash, r.Hash} { // body: TEXT, not BLOB
				args[j].Value = v
			}
			err = execRaw(ctx, st.insert, args)
		}
		if err != nil {
			return nil, i, s.rollbackRaw(ctx, fmt.Errorf("recorder: append event %q (seq %d): %w", p.draft.ID(), seq, err))
		}
		recs[i], prev = r, r.Hash
	}
	if err := execRaw(ctx, st.commit, nil); err != nil {
		return nil, -1, s.rollbackRaw(ctx, fmt.Errorf("recorder: append %d events: commit: %w", len(batch), err))
	}
	return recs, -1, nil
}

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
