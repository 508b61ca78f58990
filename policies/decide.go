package policies

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// Decide evaluates the decision for input. It never fails: every problem
// (no input, an evaluation error, an undefined or malformed result) is a
// denying decision whose Error and Reasons say what went wrong. ctx cancels
// the evaluation. A decision that a traced evaluation proved independent of
// what differs between requests (parameters, time, session, a templated
// text's literals) is served from a memo once learned (see decisionMemo):
// the same decision, under a new ID.
func (e *Engine) Decide(ctx context.Context, input *parse.Input) decision.Decision {
	return e.DecideEncoded(ctx, input, nil)
}

// DecideEncoded is Decide for an input whose canonical encoding the caller
// has (parse.InputEncoder.EncodeParts of input, for the record): a decision
// served from the memo is then found by that encoding alone, without
// converting the input to a Rego value. enc may be nil.
func (e *Engine) DecideEncoded(ctx context.Context, input *parse.Input, enc *parse.Encoding) decision.Decision {
	var value ast.Value
	d := e.decide(ctx, input, enc, &value)
	e.metrics.count(&d)
	if e.dlogs != nil && input != nil {
		if value == nil {
			value, _ = e.fastInputValue(input)
		}
		if value != nil {
			if in, err := ast.JSON(value); err == nil {
				e.logDecision(ctx, &d, in)
			}
		}
	}
	return d
}

func (e *Engine) decide(ctx context.Context, input *parse.Input, enc *parse.Encoding, out *ast.Value) decision.Decision {
	d := decision.Decision{ID: decision.NewID(), Path: e.path}
	if input == nil {
		return deny(d, "policy evaluation failed: no input document")
	}
	if err := ctx.Err(); err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	var key *memoKeys
	if e.memo != nil {
		if k, ok := memoKeyOf(input, enc); ok {
			key = &k
		}
	}
	return e.eval(ctx, d, key, func() (ast.Value, error) {
		v, err := e.fastInputValue(input)
		*out = v
		return v, err
	})
}

// DecideJSON evaluates the decision for an input document given as JSON, as
// recorded in the store or in an exported decision log (what-if, replays).
// Like Decide it never fails: a document that is not a JSON object denies.
func (e *Engine) DecideJSON(ctx context.Context, input []byte) decision.Decision {
	d := decision.Decision{ID: decision.NewID(), Path: e.path}
	var doc any
	if err := util.UnmarshalJSON(input, &doc); err != nil {
		return deny(d, "policy evaluation failed: input is not JSON: "+err.Error())
	}
	if _, ok := doc.(map[string]any); !ok {
		return deny(d, "policy evaluation failed: input is not a JSON object")
	}
	value, err := ast.InterfaceToValue(doc)
	if err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	return e.eval(ctx, d, nil, func() (ast.Value, error) { return value, nil })
}

// eval evaluates the decision for the input valueOf returns, through the
// memo when keys is not nil (see decisionMemo); valueOf is not called for a
// memo hit.
func (e *Engine) eval(ctx context.Context, d decision.Decision, keys *memoKeys, valueOf func() (ast.Value, error)) decision.Decision {
	ctx = context.WithValue(ctx, decisionIDKey{}, d.ID)
	// The read transaction pins the store; the generation loaded under it is
	// the one whose compiler matches the data it sees (activations swap the
	// generation while they hold the store's write lock).
	txn, err := e.store.NewTransaction(ctx)
	if err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	defer e.store.Abort(ctx, txn)
	gen := e.gen.Load()
	d.Bundles = maps.Clone(gen.bundles)
	if len(gen.bundles) == 0 {
		return deny(d, "no policy bundle is active yet")
	}
	// The epoch is read under the read transaction, as gen is: commits wait
	// for it, so both name the state this evaluation sees.
	var (
		state memoState
		en    *memoEntry
		epoch uint64
		key   *memoKey // the key to learn
	)
	if keys != nil && gen.memoizable && e.memo != nil {
		epoch = e.epoch.Load()
		if state, en, key = e.memo.lookup(gen, epoch, keys); state == memoHit {
			en.copyTo(&d)
			return d
		}
	}
	value, err := valueOf()
	if err != nil {
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	obj, isObject := value.(ast.Object)
	if state == memoLearn && !isObject {
		state = memoSkip
	}
	// Cancel the evaluation when ctx ends, without the goroutine per
	// evaluation that OPA starts to watch ctx otherwise.
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	defer stop()
	rs, err := gen.query.Eval(ctx,
		rego.EvalParsedInput(value),
		rego.EvalExternalCancel(cancel),
		rego.EvalTransaction(txn),
		rego.EvalSortSets(true),
		rego.EvalCopyMaps(true),
		// Nobody reads OPA's per-evaluation timers: spare their allocation.
		rego.EvalMetrics(opametrics.NoOp()),
	)
	if err != nil {
		switch state {
		case memoLearn:
			if ctx.Err() == nil {
				e.memo.store(gen, epoch, *key, nil)
			}
		case memoVerify:
			e.verify(ctx, gen, en, err, nil)
		}
		e.logger.Warn("policy evaluation failed", "decision_id", d.ID, "error", err)
		return deny(d, "policy evaluation failed: "+err.Error())
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		switch state {
		case memoLearn:
			e.memo.store(gen, epoch, *key, nil)
		case memoVerify:
			e.verify(ctx, gen, en, errors.New("no decision"), nil)
		}
		return deny(d, "policy returned no decision at "+e.ref.String())
	}
	d.Result = rs[0].Expressions[0].Value
	if state == memoVerify {
		e.verify(ctx, gen, en, nil, d.Result)
	}
	if state == memoLearn {
		// The memoized decision is made from a result of its own (the
		// traced evaluation's, which learn returns), so that it shares
		// nothing with d.
		switch result, verdict := e.learn(ctx, gen, txn, obj, key, d.Result); verdict {
		case learnOK:
			m := apply(decision.Decision{Result: result}, result)
			// Hits carry the result's encoding too: records copy it
			// rather than encode the result again.
			if raw, err := json.Marshal(m.Result); err == nil {
				m.RawResult = raw
			}
			e.memo.store(gen, epoch, *key, &m)
		case learnRefused:
			e.memo.store(gen, epoch, *key, nil)
		case learnTimedOut:
			e.memo.postpone(gen, epoch, *key)
		}
	}
	return apply(d, d.Result)
}

// deny turns d into a denying decision for a broken contract or a failed
// evaluation: the problems are appended to its reasons and, joined by "; ",
// become its error.
func deny(d decision.Decision, problems ...string) decision.Decision {
	d.Allow = false
	d.Reasons = append(d.Reasons, problems...)
	d.Error = strings.Join(problems, "; ")
	return d
}
