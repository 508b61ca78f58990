package recorder

import (
	"bytes"
	"container/heap"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
)

// The database holds events in blocks: each copy from the journal (ingest.go)
// writes one row of event_blocks per session it holds events of (more when a
// session has more than blockMax of them), with the bodies of those events
// in chain order, each followed by a newline (a body, compact JSON, has
// none). A row costs SQLite about as much as an event row did (B-tree work
// and the driver's per-statement overhead, about 10 µs in modernc's SQLite,
// whatever the body), so a copy of N events from S sessions costs S rows
// instead of N; event_ids keeps every ID once (the duplicate check's lookups,
// the ID filter), with the seq of its event.
//
// A block's columns repeat what its bodies hold: session_id (every event's),
// first_seq and first_time (its first event's seq and time), last_seq (its
// last event's); hashes holds the events' hashes (64 hex digits each, in the
// bodies' order). Readers take the records' columns from the block where it
// has them, so that Verify, which checks every column against the hashed
// body and every hash against its body, also finds an edited block column
// and names the edited event.
// Blocks of one copy interleave (sessions' events alternate in the chain);
// blocks read in first_seq order are put back in chain order by chainOrder.
const (
	insertBlockSQL = `INSERT INTO event_blocks (first_seq, last_seq, session_id, first_time, hashes, bodies)
		VALUES (?, ?, ?, ?, ?, ?)`
	insertIDSQL = `INSERT INTO event_ids (id, seq) VALUES (?, ?)`
	// headSQL reads the chain head: the last event of the block that ends
	// highest.
	headSQL      = `SELECT last_seq, substr(hashes, -64) FROM event_blocks ORDER BY last_seq DESC LIMIT 1`
	selectBlocks = `SELECT first_seq, last_seq, session_id, first_time, hashes, bodies FROM event_blocks`
)

// blockMax bounds the events of one block, so that reading a session's
// events never needs much more than its own.
const blockMax = 256

// insertBlocks writes recs (consecutive events of the chain) as blocks, one
// per session (split every blockMax), and their IDs. A transaction is
// open.
func (s *sqliteStore) insertBlocks(ctx context.Context, recs []Record) error {
	st := &s.raw
	bargs := namedArgs(6)
	iargs := namedArgs(2)
	var order []string
	bySession := map[string][]int{}
	for i := range recs {
		sid := recs[i].SessionID
		if _, ok := bySession[sid]; !ok {
			order = append(order, sid)
		}
		bySession[sid] = append(bySession[sid], i)
	}
	var bodies, hashes []byte
	for _, sid := range order {
		idx := bySession[sid]
		for len(idx) > 0 {
			n := min(len(idx), blockMax)
			first, last := &recs[idx[0]], &recs[idx[n-1]]
			bodies, hashes = bodies[:0], hashes[:0]
			for _, i := range idx[:n] {
				bodies = append(bodies, recs[i].Body...)
				bodies = append(bodies, '\n')
				hashes = append(hashes, recs[i].Hash...)
			}
			for j, v := range []any{first.Seq, last.Seq, sid, first.Time, string(hashes), bodyText(bodies)} {
				bargs[j].Value = v
			}
			if err := execRaw(ctx, st.insert, bargs); err != nil {
				return fmt.Errorf("recorder: copy events %d to %d of session %q into the database: %w",
					first.Seq, last.Seq, sid, err)
			}
			idx = idx[n:]
		}
	}
	for i := range recs {
		iargs[0].Value, iargs[1].Value = recs[i].ID, recs[i].Seq
		if err := execRaw(ctx, st.insertID, iargs); err != nil {
			return fmt.Errorf("recorder: copy event %q (seq %d) into the database: %w", recs[i].ID, recs[i].Seq, err)
		}
	}
	return nil
}

func namedArgs(n int) []driver.NamedValue {
	args := make([]driver.NamedValue, n)
	for i := range args {
		args[i].Ordinal = i + 1
	}
	return args
}

// storedEvent is an event read from a block: its record, its body's fields,
// or why its body did not decode.
type storedEvent struct {
	Record
	fields bodyFields
	err    error
}

// bodyFields are the parts of a body that readers look at without decoding
// it whole: the chain's columns and what SessionSummarizer needs.
type bodyFields struct {
	chainFields
	Protocol string `json:"protocol"`
	Session  *struct {
		ClientAddr string `json:"client_addr"`
	} `json:"session"`
	Decision *struct {
		Allow *bool `json:"allow"`
	} `json:"decision"`
	Outcome *struct {
		Status string `json:"status"`
	} `json:"outcome"`
}

// blockEvents splits a block into events, decoding each body once. Each
// record's columns are its body's, except those the block holds: session_id
// for all, the hash of each, seq and time of the first, seq of the last (see
// the comment at the top). A body that does not decode still becomes an
// event (with the seq that follows the one before it), for Verify to report;
// so does a block whose hashes do not match its bodies in number (a missing
// hash is empty).
func blockEvents(first, last int64, sessionID, firstTime, hashes string, bodies []byte) []storedEvent {
	var evs []storedEvent
	bodies = bytes.Clone(bodies) // the caller's bytes are the driver's; the events share one copy
	for len(bodies) > 0 {
		line, rest, _ := bytes.Cut(bodies, []byte{'\n'})
		bodies = rest
		evs = append(evs, storedEvent{})
		e := &evs[len(evs)-1]
		e.Body = line
		if e.err = json.Unmarshal(line, &e.fields); e.err == nil {
			e.Record = e.fields.record(line)
		} else if e.Seq, _ = bodySeq(line); e.Seq == 0 {
			e.Seq = first + int64(len(evs)-1)
		}
		e.SessionID = sessionID
		if at := (len(evs) - 1) * 64; at+64 <= len(hashes) {
			e.Hash = hashes[at : at+64]
		}
	}
	if len(evs) > 0 {
		evs[0].Seq, evs[0].Time = first, firstTime
		evs[len(evs)-1].Seq = last
	}
	return evs
}

// eachRecord calls fn, in chain order, for every event of the blocks that
// where (with args) selects in the snapshot tx, and stops at fn's first error.
// what names the events in errors.
func eachRecord(ctx context.Context, tx *sql.Tx, what, where string, args []any, fn func(*storedEvent) error) error {
	rows, err := tx.QueryContext(ctx, selectBlocks+where+` ORDER BY first_seq`, args...)
	if err != nil {
		return fmt.Errorf("recorder: query %s: %w", what, err)
	}
	defer rows.Close()
	var o chainOrder
	for rows.Next() {
		var first, last int64
		var sid, firstTime, hashes string
		var bodies sql.RawBytes // valid until the next row; blockEvents copies
		if err := rows.Scan(&first, &last, &sid, &firstTime, &hashes, &bodies); err != nil {
			return fmt.Errorf("recorder: read %s: %w", what, err)
		}
		// Blocks come by first_seq: an event before this block's first
		// is in a block read already.
		if err := o.flush(first, fn); err != nil {
			return err
		}
		for _, e := range blockEvents(first, last, sid, firstTime, hashes, bodies) {
			heap.Push(&o, e)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recorder: read %s: %w", what, err)
	}
	return o.flush(-1, fn)
}

// chainOrder holds events read from blocks until every event before them
// has been read: a heap by Seq.
type chainOrder []storedEvent

func (o chainOrder) Len() int           { return len(o) }
func (o chainOrder) Less(i, j int) bool { return o[i].Seq < o[j].Seq }
func (o chainOrder) Swap(i, j int)      { o[i], o[j] = o[j], o[i] }
func (o *chainOrder) Push(x any)        { *o = append(*o, x.(storedEvent)) }
func (o *chainOrder) Pop() any {
	old := *o
	r := old[len(old)-1]
	old[len(old)-1] = storedEvent{}
	*o = old[:len(old)-1]
	return r
}

// flush passes on, in order, the held events before seq (all when seq < 0).
func (o *chainOrder) flush(seq int64, fn func(*storedEvent) error) error {
	for o.Len() > 0 && (seq < 0 || (*o)[0].Seq < seq) {
		e := heap.Pop(o).(storedEvent)
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}
