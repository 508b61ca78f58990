package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bigEvent is a command event with an input of about 4 KiB.
func bigEvent(id string) *Event {
	sql := strings.Repeat("x", 4096)
	return &Event{ID: id, Type: TypeCommand, SessionID: "full",
		Input: json.RawMessage(fmt.Sprintf(`{"sql":%q}`, sql))}
}

// TestJournalDiskFull writes the journal to /dev/full, where every write
// fails with ENOSPC as on a full disk: appends fail (so the proxy refuses the
// command), concurrent ones too, the chain does not advance, and appends
// succeed again, without a gap, once there is room.
func TestJournalDiskFull(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx := context.Background()
	appendAll(t, s, []*Event{bigEvent("before")})
	full, err := os.OpenFile("/dev/full", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	s.jmu.Lock()
	real := s.journal.f
	s.journal.f = full
	s.jmu.Unlock()

	err = s.Append(ctx, bigEvent("lost"))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), ".journal") {
		t.Fatalf("Append with a full disk = %v, want ENOSPC naming the journal", err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Append(ctx, bigEvent(fmt.Sprint("full", i))); err == nil {
				t.Errorf("concurrent Append %d with a full disk succeeded", i)
			}
		}()
	}
	wg.Wait()

	s.jmu.Lock()
	s.journal.f = real
	s.jmu.Unlock()
	after := bigEvent("after")
	if err := s.Append(ctx, after); err != nil {
		t.Fatalf("Append after making room: %v", err)
	}
	if after.Seq != 2 {
		t.Errorf("event after the failure got seq %d, want 2 (no gap)", after.Seq)
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 2 || res.Head != after.Hash {
		t.Errorf("Verify = %+v, want OK with 2 events, head %s", res, after.Hash)
	}
}

// TestDatabaseFull fills the database (PRAGMA max_page_count on the writer's
// connection, as a full disk would): appends go on in the journal while the
// copy into the database fails, up to the backlog limit, after which appends
// fail and name the cause; once there is room the backlog is copied and
// appends succeed again, with the chain intact and without a gap.
func TestDatabaseFull(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx := context.Background()
	s.maxBacklog = 20
	appendAll(t, s, []*Event{bigEvent("before")})
	mustVerify(t, s) // copied into the database
	// No free pages (a new store's migrations drop the table of version 1).
	if _, err := s.writer.Exec(`VACUUM`); err != nil {
		t.Fatalf("VACUUM: %v", err)
	}
	var pages int64
	if err := s.writer.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatalf("page_count: %v", err)
	}
	if _, err := s.writer.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatalf("set max_page_count: %v", err)
	}
	stored := 1
	var refused error
	for i := 0; i < 100 && refused == nil; i++ {
		if refused = s.Append(ctx, bigEvent(fmt.Sprint("fill", i))); refused == nil {
			stored++
		}
		time.Sleep(time.Millisecond)
	}
	if refused == nil || !strings.Contains(refused.Error(), "waiting to be copied") ||
		!strings.Contains(refused.Error(), "full") {
		t.Fatalf("Append with the database full = %v, want a backlog error naming the full database", refused)
	}
	if stored < 2 || stored > s.maxBacklog+1 {
		t.Errorf("%d events stored before the backlog limit of %d", stored, s.maxBacklog)
	}
	if _, err := s.writer.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatalf("raise max_page_count: %v", err)
	}
	waitFor(t, 10*time.Second, "the backlog to be copied", func() bool { return s.queued() == 0 })
	after := bigEvent("after")
	if err := s.Append(ctx, after); err != nil {
		t.Fatalf("Append after making room: %v", err)
	}
	stored++
	if after.Seq != int64(stored) {
		t.Errorf("event after the failure got seq %d, want %d (no gap)", after.Seq, stored)
	}
	if res := mustVerify(t, s); !res.OK || res.Events != int64(stored) || res.Head != after.Hash {
		t.Errorf("Verify = %+v, want OK with %d events, head %s", res, stored, after.Hash)
	}
}

// TestJournalRecovery stops copying into the database (its handle is closed
// under the store) so that the last events exist only in the journal, as after
// a crash: Close does not hang and keeps them there, and the next open copies
// them into the database, chain intact.
func TestJournalRecovery(t *testing.T) {
	s, path := openTemp(t, "")
	ctx := context.Background()
	events := fillStore(t, s, 1)
	mustVerify(t, s)
	if err := s.writer.Close(); err != nil {
		t.Fatalf("close writer db: %v", err)
	}
	late := []*Event{{ID: "j1", Type: TypeCommand}, {ID: "j2", Type: TypeOutcome, Ref: "j1"}}
	appendAll(t, s, late) // in the journal only
	_ = s.Close()         // reports the closed handle; must not hang
	if err := s.Append(ctx, &Event{ID: "late", Type: TypeCommand}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if n := countRows(t, path, 1<<62); n != int64(len(events)) {
		t.Fatalf("database holds %d events before reopening, want %d", n, len(events))
	}

	s2 := openPath(t, path, "")
	res := mustVerify(t, s2)
	if want := int64(len(events) + 2); !res.OK || res.Events != want || res.Head != late[1].Hash {
		t.Fatalf("Verify after recovery = %+v, want OK with %d events, head %s", res, want, late[1].Hash)
	}
	if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() != 0 {
		t.Errorf("journal after recovery: %v, %v; want it empty", fi, err)
	}
	next := &Event{ID: "next", Type: TypeCommand}
	appendAll(t, s2, []*Event{next})
	if next.Seq != int64(len(events)+3) || next.PrevHash != late[1].Hash {
		t.Errorf("event after recovery: seq %d prev %s, want %d after %s", next.Seq, next.PrevHash, len(events)+3, late[1].Hash)
	}
}

// TestJournalWriteCalls: the journal's raw write (more than one processor)
// and its ordinary one (GOMAXPROCS=1) both leave a journal that a reopen
// recovers, event for event.
func TestJournalWriteCalls(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			path := filepath.Join(t.TempDir(), "regate.db")
			var evs []*Event
			for i := range 50 {
				evs = append(evs, bigEvent(fmt.Sprintf("w%d-%d", procs, i)))
			}
			journalOnly(t, path, evs)
			if fi, err := os.Stat(path + ".journal"); err != nil || fi.Size() == 0 {
				t.Fatalf("journal before reopening: %v, %v; want the events in it", fi, err)
			}
			s := openPath(t, path, "")
			res := mustVerify(t, s)
			if !res.OK || res.Events != int64(len(evs)) || res.Head != evs[len(evs)-1].Hash {
				t.Fatalf("Verify after recovery = %+v, want OK with %d events, head %s", res, len(evs), evs[len(evs)-1].Hash)
			}
		})
	}
}

// journalOnly leaves events in the journal and not in the database: it writes
// them to a store whose copying is stopped, then releases the store without
// copying, as a crash would.
func journalOnly(t *testing.T, path string, evs []*Event) {
	t.Helper()
	s := openPath(t, path, "")
	if err := s.writer.Close(); err != nil {
		t.Fatalf("close writer db: %v", err)
	}
	appendAll(t, s, evs)
	_ = s.Close()
}

// TestJournalTornAndCorrupt: a last line cut short (a write interrupted by a
// crash, never acknowledged) is dropped at open; a line that is not an event
// body, or one that does not continue the chain, stops the open with an error
// naming the journal and the offset.
func TestJournalTornAndCorrupt(t *testing.T) {
	t.Run("torn", func(t *testing.T) {
		path := t.TempDir() + "/events.db"
		evs := []*Event{{ID: "a", Type: TypeCommand}, {ID: "b", Type: TypeCommand}}
		journalOnly(t, path, evs)
		f, err := os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(`{"seq":3,"id":"c","ti`); err != nil {
			t.Fatal(err)
		}
		f.Close()
		s := openPath(t, path, "")
		if res := mustVerify(t, s); !res.OK || res.Events != 2 || res.Head != evs[1].Hash {
			t.Fatalf("Verify = %+v, want the 2 complete events", res)
		}
	})
	for _, tc := range []struct {
		name, want string
		edit       func(lines []string) []string
	}{
		{"garbage", "line at offset", func(l []string) []string { return append(l[:1], "garbage", l[1]) }},
		{"edited", "does not continue the chain", func(l []string) []string {
			l[0] = strings.Replace(l[0], `"id":"a"`, `"id":"A"`, 1)
			return l
		}},
		{"repeated", "does not continue the chain", func(l []string) []string { return append(l, l[1]) }},
		{"dropped", "does not continue the chain", func(l []string) []string { return l[1:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/events.db"
			journalOnly(t, path, []*Event{{ID: "a", Type: TypeCommand}, {ID: "b", Type: TypeCommand}})
			raw, err := os.ReadFile(path + ".journal")
			if err != nil {
				t.Fatal(err)
			}
			lines := tc.edit(strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n"))
			if err := os.WriteFile(path+".journal", []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(context.Background(), "sqlite://"+path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), ".journal") {
				t.Fatalf("Open with a %s journal = %v, want an error containing %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestSecondOpen: while one store appends, a second appending open of the
// same database fails and names the journal; a read-only open (the CLI's)
// reads it but cannot append.
func TestSecondOpen(t *testing.T) {
	s, path := openTemp(t, "")
	events := fillStore(t, s, 1)
	mustVerify(t, s)
	defer func(w time.Duration) { lockWait = w }(lockWait)
	lockWait = 50 * time.Millisecond
	if _, err := Open(context.Background(), "sqlite://"+path, nil); err == nil ||
		!strings.Contains(err.Error(), "another process appends") || !strings.Contains(err.Error(), ".journal") {
		t.Fatalf("second Open = %v, want an error naming the journal", err)
	}
	st, err := OpenReadOnly(context.Background(), "sqlite://"+path, nil)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	ro := st.(*sqliteStore)
	err = ro.Append(context.Background(), &Event{ID: "x", Type: TypeCommand})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Append on the read-only open = %v, want a read-only error", err)
	}
	if res := mustVerify(t, ro); !res.OK || res.Events != int64(len(events)) {
		t.Errorf("Verify on the read-only open = %+v, want OK with %d events", res, len(events))
	}
	if err := ro.Close(); err != nil {
		t.Errorf("Close of the read-only open: %v", err)
	}
	appendAll(t, s, []*Event{{ID: "more", Type: TypeCommand}}) // the first still appends
}

// TestReadOnlyOpenRecovers: a read-only open of a store whose journal still
// holds events (regate was killed) copies them into the database, so that the
// CLI sees them; the next appending open continues the chain.
func TestReadOnlyOpenRecovers(t *testing.T) {
	path := t.TempDir() + "/events.db"
	evs := []*Event{{ID: "a", Type: TypeCommand}, {ID: "b", Type: TypeOutcome, Ref: "a"}}
	journalOnly(t, path, evs)
	st, err := OpenReadOnly(context.Background(), "sqlite://"+path, nil)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	defer st.Close()
	if res := mustVerify(t, st); !res.OK || res.Events != 2 || res.Head != evs[1].Hash {
		t.Fatalf("Verify on the read-only open = %+v, want the 2 journaled events", res)
	}
	s := openPath(t, path, "")
	next := &Event{ID: "c", Type: TypeCommand}
	appendAll(t, s, []*Event{next})
	if next.Seq != 3 || next.PrevHash != evs[1].Hash {
		t.Errorf("next event: seq %d prev %s, want 3 after %s", next.Seq, next.PrevHash, evs[1].Hash)
	}
}

// TestJournalBounded: a journal past its maximum size is emptied before the
// append that grew it returns, even when the ingester is never found caught
// up on its own.
func TestJournalBounded(t *testing.T) {
	defer func(m int64) { journalMaxSize = m }(journalMaxSize)
	journalMaxSize = 64 << 10
	s, _ := openTemp(t, "")
	var evs []*Event
	for i := range 100 {
		ev := bigEvent(fmt.Sprint("b", i))
		appendAll(t, s, []*Event{ev})
		evs = append(evs, ev)
		s.jmu.Lock()
		size := s.journal.size
		s.jmu.Unlock()
		if size >= journalMaxSize {
			t.Fatalf("journal is %d bytes after append %d, want < %d", size, i, journalMaxSize)
		}
	}
	if res := mustVerify(t, s); !res.OK || res.Events != 100 || res.Head != evs[99].Hash {
		t.Errorf("Verify = %+v, want OK with 100 events", res)
	}
}

// TestReadOnlySeesJournal: while the appending store's latest events are in
// its journal only (the copy into the database is stopped here), a read-only
// open sees them in every read: events, sessions, commands and verify.
func TestReadOnlySeesJournal(t *testing.T) {
	s, path := openTemp(t, "")
	ctx := context.Background()
	base := fillStore(t, s, 1)
	mustVerify(t, s)
	if err := s.writer.Close(); err != nil {
		t.Fatalf("close writer db: %v", err)
	}
	late := sessionEvents("late", t0.Add(time.Hour)) // a whole session, journal only
	appendAll(t, s, late)
	if n := countRows(t, path, 1<<62); n != int64(len(base)) {
		t.Fatalf("database holds %d events, want %d (the rest in the journal)", n, len(base))
	}
	st, err := OpenReadOnly(ctx, "sqlite://"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := int64(len(base) + len(late))
	if res := mustVerify(t, st); !res.OK || res.Events != want || res.Head != late[len(late)-1].Hash {
		t.Errorf("Verify = %+v, want OK with %d events", res, want)
	}
	evs, err := st.Events(ctx, "late")
	if err != nil || len(evs) != len(late) {
		t.Errorf("Events(late) = %d events, %v; want %d", len(evs), err, len(late))
	}
	for _, f := range []SessionFilter{{}, {Limit: 1}, {Since: t0.Add(30 * time.Minute)}} {
		sums, err := st.Sessions(ctx, f)
		if err != nil || len(sums) == 0 || sums[0].ID != "late" || sums[0].Commands != 4 || sums[0].Blocked != 2 {
			t.Errorf("Sessions(%+v) = %+v, %v; want the late session first, 4 commands, 2 blocked", f, sums, err)
		}
	}
	var cmds int
	if err := st.Commands(ctx, CommandFilter{SessionID: "late"}, func(*Event) error { cmds++; return nil }); err != nil || cmds != 4 {
		t.Errorf("Commands(late) = %d, %v; want 4", cmds, err)
	}
}

// TestSynchronousFull: with synchronous=full the journal is synced after every
// write, and the store works as with the default.
func TestSynchronousFull(t *testing.T) {
	s, path := openTemp(t, "?synchronous=full")
	if !s.journal.sync {
		t.Fatal("synchronous=full does not sync the journal")
	}
	events := fillStore(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openPath(t, path, "?synchronous=full")
	if res := mustVerify(t, s2); !res.OK || res.Events != int64(len(events)) || res.Head != events[len(events)-1].Hash {
		t.Errorf("Verify = %+v, want OK with %d events", res, len(events))
	}
	if d, _ := openTemp(t, ""); d.journal.sync {
		t.Error("the default (synchronous=normal) syncs the journal")
	}
}

// TestJournalLongLine: an event larger than the journal reader's buffer
// (1 MiB) is read back whole, by a read-only open's tail and at recovery.
func TestJournalLongLine(t *testing.T) {
	path := t.TempDir() + "/events.db"
	big := &Event{ID: "big", Type: TypeCommand,
		Input: json.RawMessage(fmt.Sprintf(`{"sql":%q}`, strings.Repeat("y", 3<<20)))}
	journalOnly(t, path, []*Event{{ID: "a", Type: TypeCommand}, big, {ID: "c", Type: TypeCommand}})
	s := openPath(t, path, "") // holds the journal: the read-only open below reads its tail
	if err := s.writer.Close(); err != nil {
		t.Fatal(err)
	}
	// s recovered the journal at open; add more that stay in its journal.
	late := &Event{ID: "late", Type: TypeCommand,
		Input: json.RawMessage(fmt.Sprintf(`{"sql":%q}`, strings.Repeat("z", 2<<20)))}
	appendAll(t, s, []*Event{late})
	ro, err := OpenReadOnly(context.Background(), "sqlite://"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if res := mustVerify(t, ro); !res.OK || res.Events != 4 || res.Head != late.Hash {
		t.Errorf("Verify = %+v, want OK with 4 events, head %s", res, late.Hash)
	}
	evs, err := ro.Events(context.Background(), "")
	if err != nil || len(evs) != 4 || len(evs[1].Input) != len(big.Input) {
		t.Errorf("Events = %d events, %v; want 4 with the big input whole", len(evs), err)
	}
}
