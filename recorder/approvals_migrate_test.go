package recorder

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// downgradeToV1 turns the database at path back into what the version 1 schema
// (migration 1 alone) left, keeping its events: a row per event in events.
func downgradeToV1(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var recs []Record
	err = eachRecord(context.Background(), tx, "events", "", nil, func(e *storedEvent) error {
		recs = append(recs, e.Record)
		return nil
	})
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	stmts := append([]string{`DROP TABLE approvals`, `DROP VIEW events`, `DROP TABLE event_blocks`, `DROP TABLE event_ids`,
		`DELETE FROM schema_version WHERE version > 1`}, migrations[0]...)
	for _, stmt := range stmts {
		if _, err := tx.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, r := range recs {
		_, err := tx.Exec(`INSERT INTO events (seq, id, time, type, session_id, target, subject, ref, body, prev_hash, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.Seq, r.ID, r.Time, r.Type, r.SessionID, r.Target,
			r.Subject, r.Ref, string(r.Body), r.PrevHash, r.Hash)
		if err != nil {
			t.Fatalf("insert event %d: %v", r.Seq, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE tbl_name IN ('approvals', 'event_blocks')`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("objects of later versions left after downgrade: %d, %v", n, err)
	}
}

// schemaState lists the recorded schema versions and the approvals objects.
func schemaState(t *testing.T, s *sqliteStore) (versions, objects string) {
	t.Helper()
	var vs, objs []string
	for q, out := range map[string]*[]string{
		`SELECT version FROM schema_version ORDER BY version`:                       &vs,
		`SELECT name FROM sqlite_master WHERE tbl_name = 'approvals' ORDER BY name`: &objs,
	} {
		rows, err := s.reader.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			*out = append(*out, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		rows.Close()
	}
	return fmt.Sprint(vs), fmt.Sprint(objs)
}

// TestMigrateFromV1 opens a store of schema version 1 (events a row each, no
// approvals): versions 2 (approvals) and 3 (events in blocks) are applied once,
// and the chain, the sessions and the duplicate check carry over.
func TestMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, "")
	events := fillStore(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	downgradeToV1(t, path)
	s = openPath(t, path, "")
	const wantObjects = "[approvals approvals_fingerprint approvals_state sqlite_autoindex_approvals_1]"
	for i := 0; i < 2; i++ { // the reopen must not apply versions 2 and 3 again
		if v, o := schemaState(t, s); v != "[1 2 3]" || o != wantObjects {
			t.Errorf("open %d: schema versions %s, approvals objects %s; want [1 2 3], %s", i, v, o, wantObjects)
		}
		if got, err := s.Events(ctx, "s1"); err != nil || len(got) != 10 || got[9].Hash != events[19].Hash {
			t.Errorf("open %d: Events(s1) = %d events, %v; want 10 ending with %s", i, len(got), err, events[19].Hash)
		}
		dup := *events[3]
		dup.Seq, dup.PrevHash, dup.Hash = 0, "", ""
		if err := s.Append(ctx, &dup); err == nil {
			t.Errorf("open %d: appending an event with the ID of a migrated one succeeded", i)
		}
		res := mustVerify(t, s)
		if want := events[len(events)-1].Hash; !res.OK || res.Events != int64(len(events)) || res.Head != want {
			t.Errorf("open %d: Verify = %+v, want OK with %d events and head %s", i, res, len(events), want)
		}
		if err := s.CreateApproval(ctx, ApprovalRecord{ID: fmt.Sprint(i), State: "pending"}); err != nil {
			t.Errorf("open %d: CreateApproval: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		s = openPath(t, path, "")
	}
	if got, err := s.Approvals(ctx, "pending"); err != nil || len(got) != 2 {
		t.Errorf("Approvals after migrations = %d, %v; want 2", len(got), err)
	}
	appendAll(t, s, sessionEvents("after", t0))
	if res := mustVerify(t, s); !res.OK || res.Events != int64(len(events)+10) {
		t.Errorf("Verify after appending to the migrated store = %+v", res)
	}
}

// TestReadOnlyDoesNotMigrateUnderAnAppender: a reader of a newer regate does
// not migrate a store that a running (older) regate appends to, and says why;
// once nothing appends, it migrates.
func TestReadOnlyDoesNotMigrateUnderAnAppender(t *testing.T) {
	s, path := openTemp(t, "")
	events := fillStore(t, s, 1)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	downgradeToV1(t, path)
	j, err := openJournal(path+".journal", false, 0) // as the running regate holds it
	if err != nil {
		t.Fatalf("lock the journal: %v", err)
	}
	_, err = OpenReadOnly(context.Background(), "sqlite://"+path, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), "schema version 1") || !strings.Contains(err.Error(), "upgraded") {
		t.Fatalf("OpenReadOnly under an appender of schema version 1 = %v, want an error naming the version", err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(context.Background(), "sqlite://"+path, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("OpenReadOnly with nothing appending: %v", err)
	}
	defer r.Close()
	if res := mustVerify(t, r); !res.OK || res.Events != int64(len(events)) {
		t.Errorf("Verify after the migration = %+v, want OK with %d events", res, len(events))
	}
}
