package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// bigEvent is a command event with an input of about 4 KiB.
func bigEvent(id string) *Event {
	sql := strings.Repeat("x", 4096)
	return &Event{ID: id, Type: TypeCommand, SessionID: "full",
		Input: json.RawMessage(fmt.Sprintf(`{"sql":%q}`, sql))}
}

// TestDiskFull simulates a full disk with PRAGMA max_page_count on the
// writer's connection: appends fail with SQLITE_FULL, the chain does not
// advance, and appends succeed again once there is room.
func TestDiskFull(t *testing.T) {
	s, _ := openTemp(t, "")
	ctx := context.Background()
	appendAll(t, s, []*Event{bigEvent("before")})
	var pages int64
	if err := s.writer.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatalf("page_count: %v", err)
	}
	if _, err := s.writer.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages+4)); err != nil {
		t.Fatalf("set max_page_count: %v", err)
	}
	stored, full := 1, error(nil)
	for i := 0; i < 100 && full == nil; i++ {
		if full = s.Append(ctx, bigEvent(fmt.Sprint("fill", i))); full == nil {
			stored++
		}
	}
	var se *sqlite.Error
	if !errors.As(full, &se) || se.Code()&0xff != sqlite3.SQLITE_FULL {
		t.Fatalf("Append on a full database = %v, want an SQLITE_FULL error", full)
	}
	// Concurrent appends while full all fail, none is stored.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Append(ctx, bigEvent(fmt.Sprint("full", i))); err == nil {
				t.Errorf("concurrent Append %d on a full database succeeded", i)
			}
		}()
	}
	wg.Wait()
	if _, err := s.writer.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatalf("raise max_page_count: %v", err)
	}
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

// TestClosedDatabase closes the writer's database under the store: appends
// fail with an error (no panic, no hang) and Close still returns.
func TestClosedDatabase(t *testing.T) {
	s, _ := openTemp(t, "")
	appendAll(t, s, []*Event{{ID: "ok", Type: TypeCommand}})
	if err := s.writer.Close(); err != nil {
		t.Fatalf("close writer db: %v", err)
	}
	err := s.Append(context.Background(), &Event{ID: "lost", Type: TypeCommand})
	if err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Append on a closed database = %v, want an error", err)
	}
	_ = s.Close() // may report the already closed handle; must not hang
	if err := s.Append(context.Background(), &Event{ID: "late", Type: TypeCommand}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
}
