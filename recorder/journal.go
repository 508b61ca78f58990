package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// The journal is where an append becomes durable: the leader of a batch
// (writer.go) seals the batch's events onto the chain and writes their bodies
// to PATH.journal with one write(2) (plus one fdatasync with
// synchronous=full), and the appenders return. A background ingester
// (ingest.go) then copies the sealed records into the SQLite database in large
// transactions, where they are indexed and queried; once the database holds
// everything the journal holds, the journal is emptied. At open, events found
// in the journal but not in the database (regate stopped before they were
// copied) are checked against the chain and copied.
//
// The journal is one body per line: the body (the event's canonical JSON,
// which json.Marshal writes without newlines) holds every column, and its
// sha256 is the event's hash, so a line is all a record is.
//
// The process that appends holds an exclusive flock on the journal for as long
// as the store is open; a second appending open fails. A read-only open (the
// CLI's) never waits for it: when the journal holds events and nobody holds
// the lock (regate stopped before copying them), it takes the lock just long
// enough to copy them into the database.

// journalTruncateAt is the size from which a fully copied journal is emptied;
// journalMaxSize the size at which appends wait for the copy to catch up so
// that it can be emptied (see sqliteStore.bound).
const journalTruncateAt = 1 << 20

var journalMaxSize int64 = 256 << 20 // a variable for tests

// errJournalLocked is returned by openJournal when another process appends.
var errJournalLocked = errors.New("recorder: the event journal is locked by another process")

// lockWait is how long an appending open waits for another process to
// release the journal (a reader recovering it holds it briefly).
var lockWait = 10 * time.Second

type journal struct {
	path string
	f    *os.File // O_APPEND
	size int64    // bytes written (and kept) so far
	sync bool     // fdatasync after every write (synchronous=full)
	buf  []byte   // the batch being written, reused
	// broken is set when a failed write could not be undone: the file may
	// end in part of a batch that was never acknowledged, so nothing more is
	// written to it.
	broken error
}

// openJournal opens (creating) the journal at path and locks it, waiting up to
// wait for another process to release it.
func openJournal(path string, sync bool, wait time.Duration) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recorder: open event journal: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errJournalLocked
		}
		return nil, fmt.Errorf("recorder: lock event journal %q: %w", path, err)
	}
	return &journal{path: path, f: f, sync: sync}, nil
}

// journalLine is one record read back from the journal.
type journalLine struct {
	offset int64
	rec    Record
}

// read reads the records of the journal in order. A last line without its
// newline is a write that never completed (its append was never
// acknowledged): it is reported by torn (its offset), not as an error. Any
// other line that is not an event body is an error naming its offset.
func (j *journal) read() (lines []journalLine, torn int64, err error) {
	if _, err := j.f.Seek(0, io.SeekStart); err != nil {
		return nil, -1, fmt.Errorf("recorder: read event journal %q: %w", j.path, err)
	}
	torn, err = scanJournal(j.path, j.f, func(off int64, line []byte) error {
		rec, err := recordFromBody(line)
		if err != nil {
			return fmt.Errorf("recorder: event journal %q, line at offset %d: %w", j.path, off, err)
		}
		lines = append(lines, journalLine{offset: off, rec: rec})
		return nil
	})
	if err != nil {
		return nil, -1, err
	}
	return lines, torn, nil
}

// scanJournal calls fn with each complete line (without its newline) of the
// journal at path, read from r, and the line's offset, and stops at fn's
// first error, returning it. A last line without its newline (a write cut
// short or still in progress) is not passed: torn is its offset, or -1 when
// there is none.
func scanJournal(path string, r io.Reader, fn func(off int64, line []byte) error) (torn int64, err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: read the rest of it.
			long := bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return off, nil
			}
			return -1, nil
		}
		if err != nil {
			return -1, fmt.Errorf("recorder: read event journal %q: %w", path, err)
		}
		if err := fn(off, line[:len(line)-1]); err != nil {
			return -1, err
		}
		off += int64(len(line))
	}
}

// recordFromBody rebuilds a record from its body: the columns are the body's
// values and the hash is the body's sha256.
func recordFromBody(body []byte) (Record, error) {
	var c chainFields
	if err := json.Unmarshal(body, &c); err != nil {
		return Record{}, fmt.Errorf("not an event body: %w", err)
	}
	if c.Seq <= 0 || c.ID == "" || c.Type == "" {
		return Record{}, fmt.Errorf("not an event body (seq %d, id %q, type %q)", c.Seq, c.ID, c.Type)
	}
	r := c.record(bytes.Clone(body))
	r.Hash = hashBody(r.Body)
	return r, nil
}

// write appends the bodies of recs, one per line, in one write. On failure it
// cuts the file back to its size before the write, so that the journal never
// holds a batch whose appends failed; when that fails too, the journal is
// broken and refuses every later write.
func (j *journal) write(recs []Record) error {
	if j.broken != nil {
		return j.broken
	}
	j.buf = j.buf[:0]
	for i := range recs {
		j.buf = append(j.buf, recs[i].Body...)
		j.buf = append(j.buf, '\n')
	}
	n, err := j.append(j.buf)
	if err == nil && j.sync {
		err = fdatasync(j.f)
	}
	if err == nil {
		j.size += int64(n)
		if cap(j.buf) > 4<<20 {
			j.buf = nil // one huge batch does not pin its buffer
		}
		return nil
	}
	err = fmt.Errorf("recorder: write %d events to the journal %q: %w", len(recs), j.path, err)
	if n > 0 {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken = fmt.Errorf("recorder: the event journal %q holds part of a failed write "+
				"and cannot be cut back (%v); no more events can be recorded until regate restarts "+
				"(the partial line is dropped then): %w", j.path, terr, err)
			return j.broken
		}
	}
	return err
}

// append writes b at the end of the journal. Without synchronous=full, and
// when Go may run on more than one processor, it makes the write(2) call raw
// (syscall.RawSyscall), as proxy.RawTCP does for sockets: Go enters an
// ordinary system call through its scheduler, and when every processor was
// idle (a gateway between two statements at 1 client) that wakes the
// runtime's monitor thread (sysmon), which then polls every 20 µs for up to
// a millisecond on the cores the clients and the database need. The raw call
// keeps its processor for as long as the write takes: a write to the page
// cache returns in microseconds, but one the kernel throttles (dirty pages
// over their limit) can sleep for up to a few hundred milliseconds, and
// meanwhile this processor runs nothing else. Every statement waits for the
// journal then anyway (write before forward); with one processor (GOMAXPROCS=1)
// everything else would stop too, so the ordinary call is kept there. With
// synchronous=full the fdatasync that follows is an ordinary call regardless.
func (j *journal) append(b []byte) (int, error) {
	if j.sync || runtime.GOMAXPROCS(0) < 2 {
		return j.f.Write(b)
	}
	rc, err := j.f.SyscallConn()
	if err != nil {
		return j.f.Write(b)
	}
	var n int
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		m, e := rawWrite(fd, b[n:])
		n += m
		if e == syscall.EAGAIN {
			return false // a descriptor in non-blocking mode: wait until writable
		}
		werr = e
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		err = &os.PathError{Op: "write", Path: j.f.Name(), Err: err}
	}
	return n, err
}

// rawWrite writes all of b to fd with raw write(2) calls, up to the first
// error.
func rawWrite(fd uintptr, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n))
		switch {
		case e == syscall.EINTR:
			continue
		case e != 0:
			return n, e
		case r == 0:
			return n, io.ErrShortWrite
		}
		n += int(r)
	}
	return n, nil
}

// truncate empties the journal (every record in it is in the database).
func (j *journal) truncate() error {
	if j.broken != nil {
		return j.broken
	}
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("recorder: empty the event journal %q: %w", j.path, err)
	}
	j.size = 0
	return nil
}

// close unlocks and closes the journal.
func (j *journal) close() error {
	return j.f.Close() // closing the descriptor releases the flock
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
