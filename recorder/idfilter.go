package recorder

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
)

// idFilter is a Bloom filter of every event ID in the store: those in the
// database when it was opened (loaded in the background, see load) and those
// appended since. An ID it does not contain is certainly new, so the leader
// of a batch looks IDs up in the database (a read transaction, with its
// locks) only for the few it may contain. It grows by adding a filter of twice
// the capacity when the last one is full (a scalable Bloom filter); each new
// filter spends bloomTighten more bits per ID, so that the sum of the
// filters' false-positive rates stays near 2% however many there are. Each
// filter is blocked: an ID's bits all lie in one 512-bit block (a cache line),
// so a lookup touches one line per filter, not one per probe.
type idFilter struct {
	mu     sync.Mutex
	blooms []*bloom
	ready  atomic.Bool // the database's IDs are all in
}

const (
	bloomBitsPerID = 10 // in the first filter: about 1% false positives when full
	bloomTighten   = 2  // more bits per ID in each later filter
	bloomProbes    = 7  // bits per ID, 9 bits of the second hash each
	bloomMinIDs    = 1 << 16
	bloomBlockBits = 512
)

var bloomSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

type bloom struct {
	bits   []uint64 // blocks of bloomBlockBits/64 words
	blocks uint64
	n      int // IDs added
	cap    int // IDs it is sized for
}

func newBloom(capacity, bitsPerID int) *bloom {
	blocks := max(1, (uint64(capacity)*uint64(bitsPerID)+bloomBlockBits-1)/bloomBlockBits)
	return &bloom{bits: make([]uint64, blocks*bloomBlockBits/64), blocks: blocks, cap: capacity}
}

// probe sets (set) or tests the bits of the ID whose hashes are h1 and h2:
// h1 picks the block, successive 9-bit pieces of h2 the bits in it. A test
// reports whether all of them are set; setting always reports true.
func (b *bloom) probe(h1, h2 uint64, set bool) bool {
	blk, _ := bits.Mul64(h1, b.blocks)
	words := b.bits[blk*bloomBlockBits/64 : (blk+1)*bloomBlockBits/64]
	for i := range bloomProbes {
		bit := h2 >> (9 * i) & (bloomBlockBits - 1)
		w, m := bit/64, uint64(1)<<(bit%64)
		if set {
			words[w] |= m
		} else if words[w]&m == 0 {
			return false
		}
	}
	return true
}

func idHashes(id string) (uint64, uint64) {
	return maphash.String(bloomSeeds[0], id), maphash.String(bloomSeeds[1], id)
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
			f.blooms = append(f.blooms, newBloom(capacity, bloomBitsPerID+bloomTighten*len(f.blooms)))
		}
		b := f.blooms[len(f.blooms)-1]
		h1, h2 := idHashes(id)
		b.probe(h1, h2, true)
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
		if b.probe(h1, h2, false) {
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
		f.blooms = append(f.blooms, newBloom(max(2*n, bloomMinIDs), bloomBitsPerID))
	}
}

// loadIDs adds the IDs of the database to s.filter and marks it ready; until
// then every ID is looked up in the database. It runs in the background from
// open; a failure only leaves the lookups in place.
func (s *sqliteStore) loadIDs(ctx context.Context, count int64) {
	defer close(s.filterDone)
	s.filter.size(int(count))
	rows, err := s.reader.QueryContext(ctx, `SELECT id FROM event_ids`)
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
