package recorder

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// idFilter is a Bloom filter of every event ID in the store: those in the
// database when it was opened (loaded in the background, see load) and those
// appended since. An ID it does not contain is certainly new, so the leader
// of a batch looks IDs up in the database (a read transaction, with its
// locks) only for the few it may contain. It grows by adding a filter of twice
// the capacity when the last one is full (a scalable Bloom filter), at about
// 10 bits per ID for a false-positive rate under 1%.
type idFilter struct {
	mu     sync.Mutex
	blooms []*bloom
	ready  atomic.Bool // the database's IDs are all in
}

const (
	bloomBitsPerID = 10
	bloomProbes    = 7
	bloomMinIDs    = 1 << 16
)

var bloomSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

type bloom struct {
	bits []uint64
	m    uint64 // number of bits
	n    int    // IDs added
	cap  int    // IDs it is sized for
}

func newBloom(capacity int) *bloom {
	m := uint64(capacity * bloomBitsPerID)
	return &bloom{bits: make([]uint64, (m+63)/64), m: m, cap: capacity}
}

// probes calls fn with the bit positions of id in b (double hashing).
func (b *bloom) probes(h1, h2 uint64, fn func(bit uint64) bool) bool {
	for i := range uint64(bloomProbes) {
		if !fn((h1 + i*h2) % b.m) {
			return false
		}
	}
	return true
}

func idHashes(id string) (uint64, uint64) {
	return maphash.String(bloomSeeds[0], id), maphash.String(bloomSeeds[1], id) | 1
}

// add adds ids.
func (f *idFilter) add(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if len(f.blooms) == 0 || f.blooms[len(f.blooms)-1].n >= f.blooms[len(f.blooms)-1].cap {
			capacity := bloomMinIDs
			if len(f.blooms) > 0 {
				capacity = 2 * f.blooms[len(f.blooms)-1].cap
			}
			f.blooms = append(f.blooms, newBloom(capacity))
		}
		b := f.blooms[len(f.blooms)-1]
		h1, h2 := idHashes(id)
		b.probes(h1, h2, func(bit uint64) bool { b.bits[bit/64] |= 1 << (bit % 64); return true })
		b.n++
	}
}

// mayContain reports whether id may be in the store; false is certain, and
// only once the database's IDs are loaded.
func (f *idFilter) mayContain(id string) bool {
	if !f.ready.Load() {
		return true
	}
	h1, h2 := idHashes(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.blooms {
		if b.probes(h1, h2, func(bit uint64) bool { return b.bits[bit/64]&(1<<(bit%64)) != 0 }) {
			return true
		}
	}
	return false
}

// size sizes the first filter for n IDs (the database's, plus room).
func (f *idFilter) size(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.blooms) == 0 {
		f.blooms = append(f.blooms, newBloom(max(2*n, bloomMinIDs)))
	}
}

// loadIDs adds the IDs of the database to s.filter and marks it ready; until
// then every ID is looked up in the database. It runs in the background from
// open; a failure only leaves the lookups in place.
func (s *sqliteStore) loadIDs(ctx context.Context, count int64) {
	defer close(s.filterDone)
	s.filter.size(int(count))
	rows, err := s.reader.QueryContext(ctx, `SELECT id FROM events`)
	if err != nil {
		s.logger.Warn("cannot load event IDs; every new ID is looked up in the database", "error", err)
		return
	}
	defer rows.Close()
	batch := make([]string, 0, 1024)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			s.logger.Warn("cannot load event IDs; every new ID is looked up in the database", "error", err)
			return
		}
		if batch = append(batch, id); len(batch) == cap(batch) {
			s.filter.add(batch...)
			batch = batch[:0]
		}
	}
	if err := rows.Err(); err != nil {
		s.logger.Warn("cannot load event IDs; every new ID is looked up in the database", "error", err)
		return
	}
	s.filter.add(batch...)
	s.filter.ready.Store(true)
}
