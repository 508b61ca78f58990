// Package recorder keeps the tamper-evident record of everything regate
// decides: session starts and ends, authentication failures, every command with
// its input document and decision (written before the command is forwarded),
// and every outcome. Events form a hash chain: each carries the hash of the
// previous event, and its own hash is sha256 over its canonical JSON encoding,
// which includes that previous hash, so an edit, insertion or deletion is
// detected by Verify.
//
// # The chain
//
// Events are numbered by Seq = 1, 2, 3, ... without gaps. The canonical
// encoding (the body) of an event is json.Marshal of the Event with Seq and
// PrevHash set (Hash is not part of it: its tag is json:"-"), with Time in UTC,
// as encoding/json writes it (RFC 3339 with nanoseconds, trailing zeros
// dropped). Then
//
//	hash(e)     = lowercase hex(sha256(body(e)))
//	e.PrevHash  = hash of event e.Seq-1, or "" (the genesis value) for Seq 1
//
// Verify recomputes sha256 over the stored body bytes (it never re-encodes),
// compares it with the stored hash, decodes the body and checks that the
// columns stored beside it (those of its block: session_id, the first event's
// seq and time, the last one's seq; see blocks.go) hold the body's values,
// that prev_hash equals the previous event's hash and that Seq runs from 1
// without gaps. It stops at the first event that fails and reports it, with the
// number of events verified before it and Head, the hash of the last of them
// (on success, the chain head).
//
// # Limits
//
// The chain has no secret: it detects edits, insertions and deletions in the
// middle of the log, but someone who can write the database can delete the
// newest events (truncation), or rewrite the log from some event on and
// recompute every later hash, and the chain still verifies. To detect that,
// anchor the head: export VerifyResult.Head (or the hash of any event)
// regularly to a place the database's writers cannot change (a ticket, a
// write-once bucket, another system's log) and check later that the event with
// that hash is still in the chain.
//
// # Storage
//
// Open("sqlite://PATH") stores events in SQLite (modernc.org/sqlite, pure Go)
// in WAL mode, behind a journal (journal.go, ingest.go). Appends are
// group-committed: the appender that finds no write in progress seals
// everything queued onto the chain and writes it to PATH.journal in one write
// (then hands on to the oldest waiting appender, if any), and Append returns
// once that write is done. A background ingester copies the journaled records
// into the database in large transactions (a row per session and copy:
// blocks.go), and the journal is emptied when
// the database holds all of it; at open, records left in the journal are
// checked against the chain and copied. By default (synchronous=NORMAL) an
// event is in the operating system before the command is forwarded, so a
// crash or kill of regate loses nothing; an OS crash or power loss can lose
// the last events. "sqlite://PATH?synchronous=full" also fdatasyncs the
// journal before Append returns (and the database on every copy), which
// survives power loss and costs one fsync per batch. One process appends to a
// store at a time (it holds an flock on the journal); OpenReadOnly serves
// readers in other processes.
//
// Package recordertest has an in-memory Store for tests, sharing the chain
// code.
package recorder
