package policies

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/regate/regate/policies/decision"
)

// Interpret reads a policy result (the document at the decision path, as in
// an exported decision log) under the decision contract, exactly as Decide
// does: a result that breaks the contract denies.
func Interpret(path string, result any) decision.Decision {
	d := decision.Decision{Path: path}
	if result == nil {
		return deny(d, "policy returned no decision")
	}
	d.Result = result
	return apply(d, result)
}

// Recorded is one recorded decision to export.
type Recorded struct {
	DecisionID string
	Path       string
	// Input is the input document as recorded (JSON).
	Input   json.RawMessage
	Result  any
	Bundles map[string]decision.Bundle
	Time    time.Time
	// Error is the recorded evaluation error, if any.
	Error string
}

// DecisionLog writes recorded decisions as OPA decision-log events (one JSON
// object per line), passing each through OPA's own decision-log plugin so
// that the active policy's data.system.log.drop and data.system.log.mask
// rules apply exactly as in OPA: masked paths are erased or replaced and
// listed in "erased"/"masked", dropped events are not written.
type DecisionLog struct {
	plugin *logs.Plugin
	sink   *ndjsonSink
}

// exportPluginName is the name the NDJSON writer is registered under in
// OPA's plugin manager (decision_logs.plugin).
const exportPluginName = "regate_export"

// NewDecisionLog returns a DecisionLog writing to w, masking with the
// engine's active policy.
func (e *Engine) NewDecisionLog(w io.Writer) (*DecisionLog, error) {
	sink := &ndjsonSink{enc: json.NewEncoder(w)}
	e.source.Manager().Register(exportPluginName, sink)
	cfg, err := logs.NewConfigBuilder().
		WithBytes([]byte(`{"plugin": "` + exportPluginName + `"}`)).
		WithServices(e.source.Manager().Services()).
		WithPlugins([]string{exportPluginName}).
		Parse()
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return &DecisionLog{plugin: logs.New(cfg, e.source.Manager()), sink: sink}, nil
}

// Write exports one decision. It returns how many events were written (0
// when data.system.log.drop dropped it).
func (l *DecisionLog) Write(ctx context.Context, r Recorded) (int, error) {
	var input any
	if len(r.Input) > 0 {
		if err := util.UnmarshalJSON(r.Input, &input); err != nil {
			return 0, fmt.Errorf("decision %s: input is not JSON: %w", r.DecisionID, err)
		}
	}
	result := r.Result
	bundles := make(map[string]server.BundleInfo, len(r.Bundles))
	for name, b := range r.Bundles {
		bundles[name] = server.BundleInfo{Revision: b.Revision}
	}
	info := &server.Info{
		DecisionID: r.DecisionID, Path: r.Path, Input: &input, Results: &result,
		Bundles: bundles, Timestamp: r.Time.UTC(),
	}
	if r.Error != "" {
		info.Error = evalError(r.Error)
	}
	before := l.sink.written()
	if err := l.plugin.Log(ctx, info); err != nil {
		return 0, fmt.Errorf("decision %s: %w", r.DecisionID, err)
	}
	if err := l.sink.failure(); err != nil {
		return 0, err
	}
	return l.sink.written() - before, nil
}

// evalError is a recorded evaluation error, encoded in the event as OPA
// encodes its own errors: {"code": ..., "message": ...}.
type evalError string

func (e evalError) Error() string { return string(e) }

func (e evalError) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"code": "regate_policy_error", "message": string(e)})
}

// ndjsonSink is a decision_logs "plugin" (logs.Logger) that writes each
// event OPA hands it as one line of JSON.
type ndjsonSink struct {
	mu  sync.Mutex
	enc *json.Encoder
	n   int
	err error
}

func (s *ndjsonSink) Start(context.Context) error { return nil }
func (s *ndjsonSink) Stop(context.Context)        {}
func (s *ndjsonSink) Reconfigure(context.Context, any) {
}

// Log implements logs.Logger.
func (s *ndjsonSink) Log(_ context.Context, ev logs.EventV1) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.enc.Encode(ev); err != nil {
		s.err = fmt.Errorf("write decision log: %w", err)
		return s.err
	}
	s.n++
	return nil
}

func (s *ndjsonSink) written() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *ndjsonSink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

var (
	_ logs.Logger    = (*ndjsonSink)(nil)
	_ plugins.Plugin = (*ndjsonSink)(nil)
)
