package policies

import (
	"context"
	"testing"

	"github.com/regate/regate/parse"
)

// The memo's bookkeeping of keys it has not learned yet: sightings, timed-out
// learning and its retries.

// TestMemoLearnTimeout checks that a key whose learning runs out
// of time is not refused but learned again after more executions (32 after
// the first timeout), and refused only after memoMaxRetries timeouts; then
// the requests learn their session's key instead.
func TestMemoLearnTimeout(t *testing.T) {
	ctx := context.Background()
	decideAll := func(t *testing.T, e *Engine, ins []*parse.Input) {
		t.Helper()
		for _, in := range ins {
			if d := e.Decide(ctx, in); !d.Allow {
				t.Fatalf("decision %+v", d)
			}
		}
	}
	counts := func(e *Engine) [4]int64 {
		m := e.memo
		return [4]int64{m.hits.Load(), m.learned.Load(), m.postponed.Load(), m.refused.Load()}
	}

	t.Run("learned later", func(t *testing.T) {
		e := newEngine(t, Config{})
		defer e.Close()
		ins := preparedInputs(t, memoLearnAt+memoLearnAt<<2+3)
		e.memo.learnTimeout = -1 // out of time at once
		decideAll(t, e, ins[:memoLearnAt])
		if got, want := counts(e), [4]int64{0, 0, 1, 0}; got != want {
			t.Fatalf("after a timed-out learning: hits, learned, postponed, refused = %v, want %v", got, want)
		}
		e.memo.learnTimeout = memoLearnTimeout
		decideAll(t, e, ins[memoLearnAt:memoLearnAt+memoLearnAt<<2-1])
		if got, want := counts(e), [4]int64{0, 0, 1, 0}; got != want {
			t.Fatalf("before the retry: hits, learned, postponed, refused = %v, want %v", got, want)
		}
		decideAll(t, e, ins[memoLearnAt+memoLearnAt<<2-1:])
		if got, want := counts(e), [4]int64{3, 1, 1, 0}; got != want {
			t.Fatalf("after the retry: hits, learned, postponed, refused = %v, want %v", got, want)
		}
	})

	t.Run("given up", func(t *testing.T) {
		e := newEngine(t, Config{})
		defer e.Close()
		n := memoLearnAt
		for r := 1; r <= memoMaxRetries; r++ {
			n += memoLearnAt << (2 * r)
		}
		ins := preparedInputs(t, n+10)
		e.memo.learnTimeout = -1 // out of time at once
		decideAll(t, e, ins[:n])
		if got, want := counts(e), [4]int64{0, 0, memoMaxRetries, 1}; got != want {
			t.Fatalf("hits, learned, postponed, refused = %v, want %v", got, want)
		}
		// The shared key is given up for good; the session's key is
		// learned in its turn, at its own memoLearnAt-th execution.
		e.memo.learnTimeout = memoLearnTimeout
		decideAll(t, e, ins[n:])
		if got, want := counts(e), [4]int64{int64(len(ins) - n - memoLearnAt), 1, memoMaxRetries, 1}; got != want {
			t.Fatalf("hits, learned, postponed, refused = %v, want %v", got, want)
		}
		keys, _ := memoKeyOf(ins[0], nil)
		if _, refused := e.memo.neg[keys.shared.hash]; !refused || len(e.memo.entries[keys.shared.hash]) != 0 || len(e.memo.entries[keys.session.hash]) != 1 {
			t.Fatal("the given-up shared key was learned, or the session key was not")
		}
	})
}

// TestMemoSeenSurvivesOneOffs: a key executed again and again is learned at
// its memoLearnAt-th sighting even when keys seen only once (simple-protocol
// texts with their literals) fill the memo's sightings over and over in
// between: half as many one-offs as the sightings hold between two of its
// executions, four times as many in all. Emptying the sightings whenever
// they were full lost its count every other execution.
func TestMemoSeenSurvivesOneOffs(t *testing.T) {
	m := newDecisionMemo(64)
	gen := &generation{}
	key := func(h uint64) *memoKeys {
		k := func(h uint64) memoKey {
			return memoKey{parts: [][]byte{{byte(h), byte(h >> 8), byte(h >> 16), byte(h >> 40)}}, hash: h}
		}
		return &memoKeys{shared: k(h), session: k(h | 1<<63)}
	}
	prepared := key(1 << 40)
	oneOff := uint64(1)
	for i := 1; i <= memoLearnAt; i++ {
		state, _, _ := m.lookup(gen, 1, prepared)
		want := memoSkip
		if i == memoLearnAt {
			want = memoLearn
		}
		if state != want {
			t.Fatalf("sighting %d of the repeated key: state %d, want %d", i, state, want)
		}
		for range m.max / 2 {
			if state, _, _ := m.lookup(gen, 1, key(oneOff)); state != memoSkip {
				t.Fatalf("one-off key %d: state %d, want memoSkip", oneOff, state)
			}
			oneOff++
		}
		if len(m.seen) > m.max {
			t.Fatalf("%d sightings kept, more than the bound %d", len(m.seen), m.max)
		}
	}
}
