package recorder

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// checkpointEvery is how often the background checkpointer copies the WAL
// into the database file.
const checkpointEvery = time.Second

// The writer connection runs with wal_autocheckpoint(0): SQLite's automatic
// checkpoint would run inside a commit, with its fsyncs, on the data path of
// every command. A background goroutine checkpoints instead (PASSIVE: it never
// blocks the writer), and Close truncates the WAL.
func (s *sqliteStore) startCheckpointer(ctx context.Context, busy string) error {
	db, err := openDB(ctx, sqliteDSN(s.path, busy), 1)
	if err != nil {
		return fmt.Errorf("recorder: open event database %q for checkpoints: %w", s.path, err)
	}
	s.ckpt = db
	s.ckptStop = make(chan struct{})
	s.ckptDone = make(chan struct{})
	go s.checkpointLoop()
	return nil
}

func (s *sqliteStore) checkpointLoop() {
	defer close(s.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ckptStop:
			return
		case <-t.C:
			if _, err := s.ckpt.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
				s.logger.Warn("WAL checkpoint failed; will retry", "path", s.path, "error", err)
			}
		}
	}
}

// stopCheckpointer stops the loop and truncates the WAL once the writer is done.
func (s *sqliteStore) stopCheckpointer() error {
	if s.ckpt == nil {
		return nil
	}
	close(s.ckptStop)
	<-s.ckptDone
	_, err := s.ckpt.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return joinClose(err, s.ckpt)
}

func joinClose(err error, db *sql.DB) error {
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}
