package recorder

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"slices"
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

// rawBlock is a row of event_blocks, its bodies and hashes split.
type rawBlock struct {
	First, Last int64
	SessionID   string
	FirstTime   string
	Hashes      []string
	Bodies      []string
}

// blockOf reads the block holding event seq.
func blockOf(t *testing.T, db *sql.DB, seq int64) rawBlock {
	t.Helper()
	rows, err := db.Query(selectBlocks+` WHERE first_seq <= ? AND last_seq >= ?`, seq, seq)
	if err != nil {
		t.Fatalf("query blocks: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b rawBlock
		var hashes, bodies string
		if err := rows.Scan(&b.First, &b.Last, &b.SessionID, &b.FirstTime, &hashes, &bodies); err != nil {
			t.Fatalf("scan block: %v", err)
		}
		b.Bodies = strings.SplitAfter(bodies, "\n")
		b.Bodies = b.Bodies[:len(b.Bodies)-1]
		for i := range b.Bodies {
			b.Bodies[i] = strings.TrimSuffix(b.Bodies[i], "\n")
			b.Hashes = append(b.Hashes, hashes[64*i:64*i+64])
		}
		for _, body := range b.Bodies {
			if n, _ := bodySeq([]byte(body)); n == seq {
				return b
			}
		}
	}
	t.Fatalf("no block holds event %d", seq)
	return rawBlock{}
}

// putBlock writes b in place of the block that started at first (0: none).
func putBlock(t *testing.T, db *sql.DB, first int64, b rawBlock) {
	t.Helper()
	if _, err := db.Exec(`DELETE FROM event_blocks WHERE first_seq = ?`, first); err != nil {
		t.Fatalf("delete block: %v", err)
	}
	if len(b.Bodies) == 0 {
		return
	}
	_, err := db.Exec(insertBlockSQL, b.First, b.Last, b.SessionID, b.FirstTime,
		strings.Join(b.Hashes, ""), strings.Join(b.Bodies, "\n")+"\n")
	if err != nil {
		t.Fatalf("insert block: %v", err)
	}
}

// editBlock lets edit change the block holding event seq, as someone editing
// the file would, and writes it back.
func editBlock(t *testing.T, path string, seq int64, edit func(b *rawBlock, at int)) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	b := blockOf(t, db, seq)
	first := b.First
	at := slices.IndexFunc(b.Bodies, func(body string) bool { n, _ := bodySeq([]byte(body)); return n == seq })
	edit(&b, at)
	putBlock(t, db, first, b)
}

// rawInsert writes r as a block of its own.
func rawInsert(t *testing.T, path string, r Record) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	putBlock(t, db, -1<<62, rawBlock{First: r.Seq, Last: r.Seq, SessionID: r.SessionID, FirstTime: r.Time,
		Hashes: []string{r.Hash}, Bodies: []string{string(r.Body)}})
}

// countRows counts the events the database holds before seq.
func countRows(t *testing.T, path string, seq int64) int64 {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open raw connection: %v", err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM event_ids WHERE seq < ?`, seq).Scan(&n); err != nil {
		t.Fatalf("count events: %v", err)
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
	d, err := Encode(&Event{ID: "forged", Type: TypeCommand, SessionID: "s0", Time: t0})
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
	good   int64  // events verified before it
	reason string // its reason
}

// tamperCases edit a store written by fillStore(3): sessions s0, s1, s2 as seq
// 1-10, 11-20, 21-30, where the 4th event of each is a command denied by
// policy ("allow":false).
func tamperCases() []tamperCase {
	allow := func(b *rawBlock, at int) {
		b.Bodies[at] = strings.Replace(b.Bodies[at], `"allow":false`, `"allow":true`, 1)
	}
	return []tamperCase{
		{"body edited", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 14, allow)
		}, 14, 13, "hash does not match its content"},
		{"body edited and rehashed", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 14, func(b *rawBlock, at int) {
				allow(b, at)
				b.Hashes[at] = hashOf(b.Bodies[at])
			})
		}, 15, 14, "prev_hash does not match the hash of event 14"},
		{"body replaced by text that is not JSON, and rehashed", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 14, func(b *rawBlock, at int) { b.Bodies[at], b.Hashes[at] = "garbage", hashOf("garbage") })
		}, 14, 13, "body is not valid JSON: invalid character 'g' looking for beginning of value"},
		{"hash edited", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 7, func(b *rawBlock, at int) { b.Hashes[at] = strings.Repeat("0", 64) })
		}, 7, 6, "hash does not match its content"},
		{"session_id column edited", func(t *testing.T, path string, _ []*Event) {
			// Every session's first event starts a block.
			rawExec(t, path, `UPDATE event_blocks SET session_id = 's9' WHERE first_seq = 11`)
		}, 11, 10, "column session_id differs from the hashed content"},
		{"first_time column edited", func(t *testing.T, path string, _ []*Event) {
			rawExec(t, path, `UPDATE event_blocks SET first_time = '2020-01-01T00:00:00.000000000Z' WHERE first_seq = 21`)
		}, 21, 20, "column time differs from the hashed content"},
		{"last_seq column edited", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 10, func(b *rawBlock, _ int) { b.Last = 99 })
		}, 11, 9, "sequence gap: expected 10, found 11"},
		{"middle event deleted", func(t *testing.T, path string, _ []*Event) {
			editBlock(t, path, 10, func(b *rawBlock, at int) {
				b.Bodies, b.Hashes = slices.Delete(b.Bodies, at, at+1), slices.Delete(b.Hashes, at, at+1)
				b.Last = 9 // 10 is s0's last event: 9 is before it, in this block or another
			})
		}, 11, 9, "sequence gap: expected 10, found 11"},
		{"forged event appended", func(t *testing.T, path string, _ []*Event) {
			rawInsert(t, path, forged(t, 31, GenesisPrevHash))
		}, 31, 30, "prev_hash does not match the hash of event 30"},
		{"forged event before the first", func(t *testing.T, path string, _ []*Event) {
			rawInsert(t, path, forged(t, 0, GenesisPrevHash))
		}, 0, 0, "sequence out of order: expected 1, found 0"},
		{"forged event chained into the middle", func(t *testing.T, path string, events []*Event) {
			// Event 10 replaced by a well-formed event chained to event 9.
			f := forged(t, 10, events[8].Hash)
			editBlock(t, path, 10, func(b *rawBlock, at int) {
				b.Bodies[at], b.Hashes[at] = string(f.Body), f.Hash
				if at == 0 {
					b.FirstTime = f.Time
				}
			})
		}, 11, 10, "prev_hash does not match the hash of event 10"},
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
			if res.Events != tc.good {
				t.Errorf("Events = %d, want the %d events before the bad one", res.Events, tc.good)
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
	editBlock(t, path, 30, func(b *rawBlock, at int) {
		// 29 and 30 are the last two of session s2, in this block or 29 in
		// the one before.
		b.Bodies, b.Hashes = b.Bodies[:at], b.Hashes[:at]
		b.Last = 29
	})
	editBlock(t, path, 29, func(b *rawBlock, at int) {
		b.Bodies, b.Hashes = b.Bodies[:at], b.Hashes[:at]
		b.Last = 28
	})
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

// TestEventsView reads the events view (a row per event, for SQL of one's own).
func TestEventsView(t *testing.T) {
	s, _ := openTemp(t, "")
	events := fillStore(t, s, 3)
	mustVerify(t, s)
	rows, err := s.reader.Query(`SELECT seq, id, type, session_id, hash, body FROM events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var seq int64
		var id, typ, sid, hash, body string
		if err := rows.Scan(&seq, &id, &typ, &sid, &hash, &body); err != nil {
			t.Fatal(err)
		}
		ev := events[i]
		if seq != ev.Seq || id != ev.ID || hash != ev.Hash || sid != ev.SessionID || hashOf(body) != ev.Hash {
			t.Errorf("row %d: %d %s %s %s %s, want %+v", i, seq, id, sid, hash, hashOf(body), ev)
		}
		i++
	}
	if i != len(events) {
		t.Errorf("%d rows", i)
	}
}

// TestReadersReportUndecodableBodies: a body that is not JSON fails the
// readers that would have to skip it, naming it, instead of being left out.
func TestReadersReportUndecodableBodies(t *testing.T) {
	s, path := openTemp(t, "")
	fillStore(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	editBlock(t, path, 14, func(b *rawBlock, at int) { b.Bodies[at], b.Hashes[at] = "garbage", hashOf("garbage") })
	r := openPath(t, path, "")
	ctx := context.Background()
	err := r.Commands(ctx, CommandFilter{}, func(*Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "seq 14") {
		t.Errorf("Commands over an undecodable body = %v, want an error naming seq 14", err)
	}
	if _, err := r.Events(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "seq 14") {
		t.Errorf("Events over an undecodable body = %v, want an error naming seq 14", err)
	}
	if _, err := r.Sessions(ctx, SessionFilter{}); err == nil || !strings.Contains(err.Error(), "seq 14") {
		t.Errorf("Sessions over an undecodable body = %v, want an error naming seq 14", err)
	}
}
