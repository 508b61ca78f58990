package policies

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/server"

	"github.com/regate/regate/bundles"
	"github.com/regate/regate/policies/decision"
)

// metrics are the engine's counters, exported on /metrics.
type metrics struct {
	allowed, denied, failed atomic.Int64 // decisions; failed = Error set (also counted as denied)
	activations             atomic.Int64 // generations made active (including the first)
	swapFailures            atomic.Int64 // activations whose query could not be prepared
}

func (m *metrics) count(d *decision.Decision) {
	switch {
	case d.Allow:
		m.allowed.Add(1)
	default:
		m.denied.Add(1)
		if d.Error != "" {
			m.failed.Add(1)
		}
	}
}

// Status is the state of the policy engine, served on /v1/status.
type Status struct {
	// Decision is the data path evaluated.
	Decision string `json:"decision"`
	// Active names the bundles and revisions deciding now.
	Active map[string]decision.Bundle `json:"active"`
	// ActivatedAt is when the active set took effect.
	ActivatedAt time.Time `json:"activated_at"`
	// Bundles is OPA's bundle plugin status per configured remote bundle:
	// the last request, download and activation, and the last error (a
	// refused signature, a compile error, an unreachable service), if any.
	Bundles []BundleStatus `json:"bundles,omitempty"`
	// Plugins is the state of each OPA plugin (OK, NOT_READY, ERROR, WARN).
	Plugins map[string]string `json:"plugins,omitempty"`
	// Ready is true once every configured bundle has been activated once.
	Ready bool `json:"ready"`
}

// BundleStatus is one remote bundle's status, as OPA's bundle plugin reports it.
type BundleStatus = bundles.Status

// Status returns the engine's current status.
func (e *Engine) Status() Status {
	gen := e.gen.Load()
	st := Status{Decision: e.path, Active: maps.Clone(gen.bundles), ActivatedAt: gen.activated.UTC(),
		Bundles: e.source.Statuses()}
	st.Plugins, st.Ready = e.source.Plugins()
	if len(gen.bundles) == 0 {
		st.Ready = false
	}
	return st
}

// WaitReady waits until every configured bundle has been activated once, or
// ctx is done. It returns nil at once when only local bundles are configured.
func (e *Engine) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if e.Status().Ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("policy bundles not activated yet: %s", e.source.NotActivated())
		case <-tick.C:
		}
	}
}

// WriteMetrics writes the engine's metrics in the Prometheus text format.
func (e *Engine) WriteMetrics(w io.Writer) error {
	st := e.Status()
	var b strings.Builder
	metric := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	metric("regate_policy_decisions_total", "counter", "Policy decisions made, by result (error: evaluation failed or the result broke the contract; also counted as deny).")
	fmt.Fprintf(&b, "regate_policy_decisions_total{result=\"allow\"} %d\n", e.metrics.allowed.Load())
	fmt.Fprintf(&b, "regate_policy_decisions_total{result=\"deny\"} %d\n", e.metrics.denied.Load())
	fmt.Fprintf(&b, "regate_policy_decisions_total{result=\"error\"} %d\n", e.metrics.failed.Load())
	metric("regate_policy_activations_total", "counter", "Sets of bundles made active, including the first.")
	fmt.Fprintf(&b, "regate_policy_activations_total %d\n", e.metrics.activations.Load())
	metric("regate_policy_activation_failures_total", "counter", "Bundle downloads, signature checks, compilations or activations that failed (the previous bundles stayed active).")
	fmt.Fprintf(&b, "regate_policy_activation_failures_total %d\n", e.source.Failures()+e.metrics.swapFailures.Load())
	metric("regate_policy_bundle_info", "gauge", "Active bundles (value 1) with their revision.")
	for _, name := range slices.Sorted(maps.Keys(st.Active)) {
		fmt.Fprintf(&b, "regate_policy_bundle_info{bundle=%q,revision=%q} 1\n", name, st.Active[name].Revision)
	}
	metric("regate_policy_bundle_ok", "gauge", "1 when the bundle's last download and activation succeeded, 0 when it failed.")
	metric("regate_policy_bundle_last_activation_timestamp_seconds", "gauge", "When the bundle was last activated (Unix time).")
	metric("regate_policy_bundle_last_request_timestamp_seconds", "gauge", "When the bundle service was last asked for the bundle (Unix time).")
	for _, s := range st.Bundles {
		ok := 1
		if s.Code != "" {
			ok = 0
		}
		fmt.Fprintf(&b, "regate_policy_bundle_ok{bundle=%q} %d\n", s.Name, ok)
		if !s.LastSuccessfulActivation.IsZero() {
			fmt.Fprintf(&b, "regate_policy_bundle_last_activation_timestamp_seconds{bundle=%q} %d\n", s.Name, s.LastSuccessfulActivation.Unix())
		}
		if !s.LastRequest.IsZero() {
			fmt.Fprintf(&b, "regate_policy_bundle_last_request_timestamp_seconds{bundle=%q} %d\n", s.Name, s.LastRequest.Unix())
		}
	}
	metric("regate_policy_memo_total", "counter", "Decisions of repeated statements (prepared statements, and simple-protocol texts that differ only in integer literals) by how the memo served them: hit (reused), learned (proved independent of what differs between them, memoized), refused (not provable, or out of time too often; evaluated every time), postponed (learning ran out of time; tried again after more executions), mismatch (a sampled hit differed from evaluation; the memo turned off).")
	if m := e.memo; m != nil {
		fmt.Fprintf(&b, "regate_policy_memo_total{result=\"hit\"} %d\n", m.hits.Load())
		fmt.Fprintf(&b, "regate_policy_memo_total{result=\"learned\"} %d\n", m.learned.Load())
		fmt.Fprintf(&b, "regate_policy_memo_total{result=\"refused\"} %d\n", m.refused.Load())
		fmt.Fprintf(&b, "regate_policy_memo_total{result=\"postponed\"} %d\n", m.postponed.Load())
		fmt.Fprintf(&b, "regate_policy_memo_total{result=\"mismatch\"} %d\n", m.mismatches.Load())
	}
	metric("regate_policy_ready", "gauge", "1 once every configured bundle has been activated.")
	ready := 0
	if st.Ready {
		ready = 1
	}
	fmt.Fprintf(&b, "regate_policy_ready %d\n", ready)
	_, err := io.WriteString(w, b.String())
	return err
}

// logDecision hands the decision to OPA's decision-log plugin, when the OPA
// configuration enables one (decision_logs), which masks, drops, buffers and
// uploads it as OPA would.
func (e *Engine) logDecision(ctx context.Context, d *decision.Decision, input any) {
	if e.dlogs == nil {
		return
	}
	bundles := make(map[string]server.BundleInfo, len(d.Bundles))
	for name, b := range d.Bundles {
		bundles[name] = server.BundleInfo{Revision: b.Revision}
	}
	var result any = d.Result
	info := &server.Info{
		DecisionID: d.ID, Path: d.Path, Input: &input, Results: &result,
		Bundles: bundles, Timestamp: time.Now().UTC(),
	}
	if d.Error != "" {
		info.Error = evalError(d.Error)
	}
	if err := e.dlogs.Log(ctx, info); err != nil {
		e.logger.Warn("decision log failed", "decision_id", d.ID, "error", err)
	}
}
