package recorder

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
)

// downgradeToV1 turns the database at path back into what the version 1 schema
// (migration 1 alone) left, keeping its events.
func downgradeToV1(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	for _, stmt := range []string{`DROP TABLE approvals`, `DELETE FROM schema_version WHERE version > 1`} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE tbl_name = 'approvals'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("approvals objects left after downgrade: %d, %v", n, err)
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

func TestMigrateV1ToV2(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t, "")
	events := fillStore(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	downgradeToV1(t, path)
	s = openPath(t, path, "")
	const wantObjects = "[approvals approvals_fingerprint approvals_state sqlite_autoindex_approvals_1]"
	for i := 0; i < 2; i++ { // the reopen must not apply version 2 again
		if v, o := schemaState(t, s); v != "[1 2]" || o != wantObjects {
			t.Errorf("open %d: schema versions %s, approvals objects %s; want [1 2], %s", i, v, o, wantObjects)
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
