package policies

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/regate/regate/policies/decision"
)

// The decision memo spares the evaluation of a decision that is known not to
// depend on the parts of the input that change between executions of a
// prepared statement: its bound parameters (input.postgres.params) and the
// time of the request (input.time); and, for a simple-protocol text made from
// a parse template (texts that differ only in their integer literals), the
// query text and the literals' values as well. Everything else in the input
// (identity with its claims, target with its labels, database, users, the
// statements' trees but for those literals) is the memo's key, compared
// exactly (memokey.go). Each input has two keys, with and without
// input.session: a decision is learned under the shared one (without) when
// it does not read the session either, else under the session's own.
//
// The proof is a traced evaluation (memotrace.go): the decision is learned
// only when no expression evaluated for it could read a part the key leaves
// out, and its value is what the ordinary evaluation of the same request
// returned. Any other outcome (the decision reads a parameter, the time, the
// text or a literal, calls a non-deterministic built-in, errors, is
// undefined, is a conflict, ...) marks the key as not memoizable and its
// requests are evaluated as always. (OPA's partial evaluation was the proof
// before; memotrace.go says why it is not one.)
//
// Entries belong to one generation (compiled policy) and one store epoch,
// which every commit to OPA's store advances (new bundles, data-only
// bundles, any write): a lookup under another generation or epoch never
// hits, and the memo is emptied when they change. A generation whose
// modules call a non-deterministic built-in (time.now_ns, http.send,
// rand.intn, ...) or print() never uses the memo (print output would be
// lost on hits). Before a value is memoized, the decision is also evaluated
// with other values for what the key leaves out (probeInput) and must come
// out the same.
//
// One hit in memoVerifyEvery is evaluated as usual and compared with the
// memo: a difference (which only a bug can cause) is logged as an error and
// turns the memo off for the generation.
//
// A key is only learned at its memoLearnAt-th execution, so statements
// executed a few times never pay for it, and learning is bounded by
// memoLearnTimeout and the request's context. Running out of
// time says nothing about the decision (a busy gateway is slow): the key is
// tried again after more executions (memoLearnAt << 2n after the n-th
// timeout) and given up only after memoMaxRetries timeouts. A hit still
// produces a full decision (new ID, the generation's bundles, the memoized
// Result and mask, shared read-only, copies of reasons and approval) and is
// logged and counted like any other.
type decisionMemo struct {
	mu    sync.Mutex
	gen   *generation
	epoch uint64

	seen    map[uint64]int          // sightings of key hashes not learned yet (collisions only bring learning forward); trimSeen bounds it
	retries map[uint64]int          // key hashes whose learning ran out of time, and how often
	neg     map[uint64]struct{}     // key hashes not to memoize (collisions only lose hits)
	entries map[uint64][]*memoEntry // memoized decisions by key hash
	ring    []*memoEntry            // entries in insertion order, for eviction
	next    int                     // next ring slot to evict once full
	max     int                     // bound of each of seen, retries, neg and entries

	learnTimeout time.Duration // bounds each learning (memoLearnTimeout)

	// Every verifyEvery-th hit is evaluated instead and compared with the
	// memo; a difference turns the memo off for the generation (off).
	verifyEvery int64
	checks      atomic.Int64
	off         *generation

	hits, learned, refused, postponed, mismatches atomic.Int64 // for /metrics, tests and benchmarks
}

// memoEntry is a memoized decision: key is the key of the input it was
// learned from and decision what apply made of the decision's value (ID,
// Path and Bundles unset), which hits copy.
type memoEntry struct {
	key      memoKey
	decision decision.Decision
}

// copyTo fills d with the memoized decision. Result, RawResult and Mask are
// shared with the memo and every other hit (Decision documents them as
// read-only); Mask is clipped, so that appending to it copies. Reasons and
// Approval, which deny appends to or callers may edit, are copied.
func (en *memoEntry) copyTo(d *decision.Decision) {
	m := &en.decision
	d.Allow, d.Error = m.Allow, m.Error
	d.Reasons = slices.Clone(m.Reasons)
	d.Mask = slices.Clip(m.Mask)
	if m.Approval != nil {
		d.Approval = &decision.Approval{Groups: slices.Clone(m.Approval.Groups), Reason: m.Approval.Reason}
	}
	d.Result = m.Result
	d.RawResult = m.RawResult
}

const (
	// memoLearnAt is the execution of a key that learns it. Learning costs
	// a few evaluations (a traced one, with rule indexing off, and one with
	// other values: about 0.4 ms for the default library and pgbench's
	// SELECT, BenchmarkMemoLearn, against 60-100 µs), so keys are only
	// learned once they have shown they are executed again and again.
	memoLearnAt = 8
	// memoVerifyEvery: one hit in so many is evaluated and compared.
	memoVerifyEvery  = 1000
	memoSize         = 4096
	memoLearnTimeout = 100 * time.Millisecond
	// memoMaxRetries is how many times a key whose learning ran out of
	// time is tried again; the next timeout refuses it.
	memoMaxRetries = 3
	// memoMaxQuery is the longest query text whose decisions are memoized:
	// entries hold their input, and huge statements are rarely repeated.
	memoMaxQuery = 16 << 10
)

func newDecisionMemo(max int) *decisionMemo {
	return &decisionMemo{max: max, verifyEvery: memoVerifyEvery, learnTimeout: memoLearnTimeout}
}

type memoState int

const (
	memoSkip   memoState = iota // not memoizable (or not now): evaluate
	memoHit                     // the entry holds the decision
	memoLearn                   // seen memoLearnAt times: evaluate, then try to learn it
	memoVerify                  // a hit sampled for verification: evaluate, then compare
)

// lookup finds the memoized decision for an input with keys under gen and
// epoch: under its shared key (no session), else under its session key. On a
// miss it records the sighting and tells whether this request should learn
// a key, and which (the memoLearnAt-th time it is seen; only one request
// learns it): the shared key, or, once the shared key is refused (the
// decision reads the session, or anything else the key leaves out), the
// session key.
func (m *decisionMemo) lookup(gen *generation, epoch uint64, keys *memoKeys) (memoState, *memoEntry, *memoKey) {
	m.mu.Lock()
	if !m.current(gen, epoch) {
		m.mu.Unlock()
		return memoSkip, nil, nil
	}
	shared, session := m.entries[keys.shared.hash], m.entries[keys.session.hash]
	m.mu.Unlock()
	// Entries are immutable: compare outside the lock.
	for _, c := range [2]struct {
		bucket []*memoEntry
		key    *memoKey
	}{{shared, &keys.shared}, {session, &keys.session}} {
		for _, en := range c.bucket {
			if en.key.equal(c.key) {
				if m.verifyEvery > 0 && m.checks.Add(1)%m.verifyEvery == 0 {
					return memoVerify, en, nil
				}
				m.hits.Add(1)
				return memoHit, en, nil
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen != gen || m.epoch != epoch {
		return memoSkip, nil, nil
	}
	key := &keys.shared
	if _, ok := m.neg[key.hash]; ok {
		key = &keys.session
		if _, ok := m.neg[key.hash]; ok {
			return memoSkip, nil, nil
		}
	}
	n, ok := m.seen[key.hash]
	if !ok && len(m.seen) >= m.max {
		m.trimSeen()
	}
	if n+1 >= memoLearnAt {
		delete(m.seen, key.hash)
		return memoLearn, nil, key
	}
	m.seen[key.hash] = n + 1
	return memoSkip, nil, nil
}

// current makes the memo's contents those of gen and epoch, emptying it when
// they move on; false when they are older than the memo's (a request that
// began before a commit neither reads nor fills the memo). m.mu is held.
func (m *decisionMemo) current(gen *generation, epoch uint64) bool {
	if gen == m.off {
		return false
	}
	if m.gen == gen && m.epoch == epoch && m.entries != nil {
		return true
	}
	if m.entries != nil && epoch <= m.epoch {
		// An older epoch, or the same epoch under another generation (which
		// commits never produce: every activation is a commit).
		return false
	}
	m.gen, m.epoch = gen, epoch
	m.seen = make(map[uint64]int)
	m.retries = make(map[uint64]int)
	m.neg = make(map[uint64]struct{})
	m.entries = make(map[uint64][]*memoEntry)
	m.ring, m.next = nil, 0
	return true
}

// disable turns the memo off for gen, for good.
func (m *decisionMemo) disable(gen *generation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.off = gen
	if m.gen == gen {
		m.entries = nil
	}
}

// verify compares a memoized decision with the evaluation of a request it
// was served for (err the evaluation's error, result its result): a
// difference, which only a bug can cause, is logged and turns the memo off
// for the generation.
func (e *Engine) verify(ctx context.Context, gen *generation, en *memoEntry, err error, result any) {
	if err != nil && ctx.Err() != nil {
		return
	}
	if err == nil && reflect.DeepEqual(en.decision.Result, result) {
		return
	}
	e.memo.mismatches.Add(1)
	e.memo.disable(gen)
	e.logger.Error("a memoized decision differs from the evaluation of a request it was served for; the memo is off until the next policy activation",
		"memoized", en.decision.Result, "evaluated", result, "error", err)
}

// holds tells whether the memo holds the entries of gen and epoch (it has
// not moved on to others, nor been turned off); m.mu is held.
func (m *decisionMemo) holds(gen *generation, epoch uint64) bool {
	return m.gen == gen && m.epoch == epoch && m.entries != nil
}

// store records the outcome of learning the key of input: its decision
// when d is not nil, else that the key is not memoizable.
func (m *decisionMemo) store(gen *generation, epoch uint64, key memoKey, d *decision.Decision) {
	hash := key.hash
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.holds(gen, epoch) {
		return
	}
	if d == nil {
		m.refuse(hash)
		return
	}
	for _, en := range m.entries[hash] {
		if en.key.equal(&key) {
			return
		}
	}
	m.learned.Add(1)
	delete(m.retries, hash)
	en := &memoEntry{key: key.own(), decision: *d}
	if len(m.ring) < m.max {
		m.ring = append(m.ring, en)
	} else {
		old := m.ring[m.next]
		m.removeEntry(old)
		m.ring[m.next] = en
		m.next = (m.next + 1) % m.max
	}
	m.entries[hash] = append(m.entries[hash], en)
}

// refuse marks the key hash as not memoizable; m.mu is held.
func (m *decisionMemo) refuse(hash uint64) {
	m.refused.Add(1)
	delete(m.retries, hash)
	if len(m.neg) >= m.max {
		clear(m.neg)
	}
	m.neg[hash] = struct{}{}
}

// postpone records that learning the key ran out of time: it is learned
// again after memoLearnAt << 2n more sightings (the n-th timeout), or not
// memoized after memoMaxRetries timeouts.
func (m *decisionMemo) postpone(gen *generation, epoch uint64, key memoKey) {
	hash := key.hash
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.holds(gen, epoch) {
		return
	}
	n := m.retries[hash] + 1
	if n > memoMaxRetries {
		m.refuse(hash)
		return
	}
	m.postponed.Add(1)
	if len(m.retries) >= m.max {
		clear(m.retries)
	}
	m.retries[hash] = n
	if len(m.seen) >= m.max {
		m.trimSeen()
	}
	m.seen[hash] = memoLearnAt - memoLearnAt<<(2*n)
}

// trimSeen makes room in the full seen map by forgetting the keys seen only
// once: simple-protocol texts with their literals inlined are mostly
// one-offs, and emptying the whole map for them (as this once did) lost the
// sightings of prepared statements executed again and again, which then
// never reached memoLearnAt on a gateway that also served many distinct
// texts. Only when the one-offs are less than a quarter of the map is it
// emptied. m.mu is held.
func (m *decisionMemo) trimSeen() {
	for h, n := range m.seen {
		if n == 1 {
			delete(m.seen, h)
		}
	}
	if len(m.seen) > m.max*3/4 {
		clear(m.seen)
	}
}

func (m *decisionMemo) removeEntry(old *memoEntry) {
	bucket := m.entries[old.key.hash]
	kept := make([]*memoEntry, 0, len(bucket))
	for _, en := range bucket {
		if en != old {
			kept = append(kept, en)
		}
	}
	if len(kept) == 0 {
		delete(m.entries, old.key.hash)
	} else {
		m.entries[old.key.hash] = kept
	}
}

// errMemoTimeout cancels learning that takes too long.
var errMemoTimeout = errors.New("learning the decision took too long")

// learnVerdict is what learning a key came to.
type learnVerdict int

const (
	learnOK       learnVerdict = iota // the result is memoized
	learnRefused                      // not provable: the key is not memoized
	learnTimedOut                     // ran out of time: try again later (postpone)
	learnAborted                      // the request's context ended: record nothing
)

// learn decides whether the decision for input may be served for every
// input with its key, in txn (the transaction the request was evaluated
// in), and returns the decision's result (learnOK) when a traced evaluation
// reads nothing the key leaves out (readsVolatile) and comes to want, the
// ordinary evaluation's result, and so does an evaluation with other values
// for what the key leaves out (probeInput). The result returned is the
// traced evaluation's, which shares nothing with want.
func (e *Engine) learn(ctx context.Context, gen *generation, txn storage.Transaction, input ast.Object, key *memoKey, want any) (any, learnVerdict) {
	pctx, cancelCtx := context.WithTimeoutCause(ctx, e.memo.learnTimeout, errMemoTimeout)
	defer cancelCtx()
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(pctx, cancel.Cancel)
	defer stop()
	failed := func() learnVerdict { // the verdict on an evaluation's error
		switch {
		case ctx.Err() != nil:
			return learnAborted
		case errors.Is(context.Cause(pctx), errMemoTimeout):
			return learnTimedOut
		}
		return learnRefused
	}
	if pctx.Err() != nil { // out of time before it began
		return nil, failed()
	}
	probe, ok := probeInput(input, key)
	if !ok {
		e.logger.Warn("a templated statement's literal is not where its parse said; not memoized")
		return nil, learnRefused
	}
	// The proof: an evaluation, traced, that reads none of what the key
	// leaves out.
	got, v := e.readsVolatile(pctx, gen, txn, input, key, cancel, want)
	if v != learnOK {
		if v == learnRefused {
			return nil, v
		}
		return nil, failed()
	}
	// Belt and braces: the decision for other values of what the key leaves
	// out must be the same too.
	rs, err := gen.query.Eval(pctx,
		rego.EvalParsedInput(probe),
		rego.EvalTransaction(txn),
		rego.EvalExternalCancel(cancel),
		rego.EvalSortSets(true),
		rego.EvalCopyMaps(true),
	)
	if err != nil {
		if v := failed(); v != learnRefused {
			return nil, v
		}
	}
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 || !reflect.DeepEqual(rs[0].Expressions[0].Value, want) {
		e.logger.Warn("the decision for other parameters, time or literals differs from the one the traced evaluation proved; not memoized",
			"error", err)
		return nil, learnRefused
	}
	return got, learnOK
}

// memoizable tells whether decisions of the compiled modules may be
// memoized: no module calls (or refers to) a non-deterministic built-in or
// print, whose results or output a memoized decision would not repeat.
func memoizable(c *ast.Compiler) bool {
	nd := map[string]bool{"print": true, "internal.print": true}
	for _, b := range ast.Builtins {
		if b.Nondeterministic {
			nd[b.Name] = true
		}
	}
	if caps := c.Capabilities(); caps != nil {
		for _, b := range caps.Builtins {
			if b.Nondeterministic {
				nd[b.Name] = true
			}
		}
	}
	for _, mod := range c.Modules {
		found := false
		ast.WalkRefs(mod, func(r ast.Ref) bool {
			if !found && nd[r.String()] {
				found = true
			}
			return found
		})
		if found {
			return false
		}
	}
	return true
}
