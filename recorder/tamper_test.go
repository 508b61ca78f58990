package recorder

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"strings"
	"testing"
)

// rawExec runs statements on the database file through a connection of its
// own, as someone editing the file would.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("raw %q: %v", q, err)
		}
	}
}

func rawInsert(t *testing.T, path string, r Record) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	_, err = db.Exec(insertSQL, r.Seq, r.ID, r.Time, r.Type, r.SessionID, r.Target, r.Subject, r.Ref,
		string(r.Body), r.PrevHash, r.Hash)
	if err != nil {
		t.Fatalf("raw insert: %v", err)
	}
}

// countRows counts the rows before seq.
func countRows(t *testing.T, path string, seq int64) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM events WHERE seq < ?`, seq).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// forged is a well-formed record: its hash matches its body and columns.
func forged(t *testing.T, seq int64, prev string) Record {
	t.Helper()
	d, err := Encode(&Event{ID: "forged", Type: TypeCommand, SessionID: "s1", Time: t0})
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	r, err := d.Seal(seq, prev)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return r
}

type tamperCase struct {
	name   string
	tamper func(t *testing.T, path string, events []*Event)
	seq    int64  // of the first bad event
	reason string // its reason
}

// tamperCases edit a store written by fillStore(3): sessions s0, s1, s2 as seq
// 1-10, 11-20, 21-30, where the 4th event of each is a command denied by
// policy ("allow":false).
func tamperCases() []tamperCase {
	return []tamperCase{
		{"body edited", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE events SET body = replace(body, '"allow":false', '"allow":true') WHERE seq = 14`)
		}, 14, "hash does not match its content"},
		{"body edited and rehashed", func(t *testing.T, path string, _ []*Event) {
			db, _ := sql.Open("sqlite", path)
			defer db.Close()
			var body string
			if err := db.QueryRow(`SELECT body FROM events WHERE seq = 14`).Scan(&body); err != nil {
				t.Fatal(err)
			}
			body = strings.Replace(body, `"allow":false`, `"allow":true`, 1)
			if _, err := db.Exec(`UPDATE events SET body = ?, hash = ? WHERE seq = 14`, body, hashOf(body)); err != nil {
				t.Fatal(err)
			}
		}, 15, "prev_hash does not match the hash of event 14"},
		{"hash column edited", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE events SET hash = '`+strings.Repeat("0", 64)+`' WHERE seq = 7`)
		}, 7, "hash does not match its content"},
		{"session_id column edited", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE events SET session_id = 's9' WHERE seq = 5`)
		}, 5, "column session_id differs from the hashed content"},
		{"time column edited", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE events SET time = '2020-01-01T00:00:00.000000000Z' WHERE seq = 22`)
		}, 22, "column time differs from the hashed content"},
		{"middle row deleted", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `DELETE FROM events WHERE seq = 10`)
		}, 11, "sequence gap: expected 10, found 11"},
		{"forged row appended", func(t *testing.T, path string, _ []*Event) {
			rawInsert(t, path, forged(t, 31, GenesisPrevHash))
		}, 31, "prev_hash does not match the hash of event 30"},
		{"forged row before the first", func(t *testing.T, path string, _ []*Event) {
			rawInsert(t, path, forged(t, 0, GenesisPrevHash))
		}, 0, "sequence out of order: expected 1, found 0"},
		{"forged row chained into the middle", func(t *testing.T, path string, events []*Event) {
			// Shift seq 10.. up by one (via negatives: seq is unique), then
			// insert a forged event at 10 chained to event 9.
			rawExec(t, path, `UPDATE events SET seq = -seq WHERE seq >= 10`,
				`UPDATE events SET seq = 1 - seq WHERE seq < 0`)
			rawInsert(t, path, forged(t, 10, events[8].Hash))
		}, 11, "column seq differs from the hashed content"},
		{"two rows' seq swapped", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE events SET seq = -1 WHERE seq = 3`,
				`UPDATE events SET seq = 3 WHERE seq = 8`, `UPDATE events SET seq = 8 WHERE seq = -1`)
		}, 3, "column seq differs from the hashed content"},
	}
}

func TestTamper(t *testing.T) {
	for _, tc := range tamperCases() {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openTemp(t, "")
			events := fillStore(t, s, 3)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			tc.tamper(t, path, events)
			res := mustVerify(t, openPath(t, path, ""))
			if res.OK || res.FirstBad == nil {
				t.Fatalf("Verify after tampering = %+v, want a failure", res)
			}
			if res.FirstBad.Seq != tc.seq || res.FirstBad.Reason != tc.reason {
				t.Errorf("FirstBad = %+v, want seq %d: %s", *res.FirstBad, tc.seq, tc.reason)
			}
			if good := countRows(t, path, tc.seq); res.Events != good {
				t.Errorf("Events = %d, want the %d events before the bad one", res.Events, good)
			}
			if tc.seq >= 1 && tc.seq <= 30 && res.FirstBad.ID == "" {
				t.Errorf("FirstBad has no ID: %+v", *res.FirstBad)
			}
		})
	}
}

func TestUntouchedAndTruncated(t *testing.T) {
	s, path := openTemp(t, "")
	events := fillStore(t, s, 3)
	head := events[len(events)-1].Hash
	res := mustVerify(t, s)
	if !res.OK || res.Events != 30 || res.Head != head || res.FirstBad != nil {
		t.Fatalf("untouched Verify = %+v, want OK, 30 events, head %s", res, head)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Truncation is the documented limit: the chain still verifies, only the
	// anchored head tells.
	rawExec(t, path, `DELETE FROM events WHERE seq > 28`)
	res = mustVerify(t, openPath(t, path, ""))
	if !res.OK || res.Events != 28 || res.Head != events[27].Hash {
		t.Fatalf("truncated Verify = %+v, want OK with the head of event 28", res)
	}
}

func TestVerifyCanceled(t *testing.T) {
	s, _ := openTemp(t, "")
	fillStore(t, s, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Verify(ctx); err == nil {
		t.Errorf("Verify with a canceled context succeeded")
	}
}
