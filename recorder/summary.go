package recorder

import "sort"

// SessionSummarizer computes session summaries from events fed to it in chain
// order. Stores share it so that every store counts the same way:
//
//   - Start is the earliest event time of the session (normally session_start);
//     End is the time of its session_end event, nil while it has none.
//   - Commands counts command events. A command is Allowed when its decision
//     allowed it, otherwise Blocked (a command without a decision is blocked,
//     as the zero decision denies), so Allowed+Blocked == Commands. An outcome
//     with status "blocked" whose Ref names an allowed command (an approval
//     denied later, say) moves that command from Allowed to Blocked.
//   - Errors counts outcome events with status "error" or "failed".
//   - Protocol, Target, Subject and ClientAddr come from the first event of
//     the session that has them. Events with an empty SessionID are skipped.
//
// The zero value is not usable; use NewSessionSummarizer.
type SessionSummarizer struct {
	sessions map[string]*sessionState
	// allowed maps the IDs of allowed commands still without an outcome to
	// their session, so that a later "blocked" outcome can be counted.
	allowed map[string]*sessionState
}

type sessionState struct {
	sum      SessionSummary
	firstSeq int64
}

// NewSessionSummarizer returns an empty summarizer.
func NewSessionSummarizer() *SessionSummarizer {
	return &SessionSummarizer{
		sessions: make(map[string]*sessionState),
		allowed:  make(map[string]*sessionState),
	}
}

// Add counts one event.
func (s *SessionSummarizer) Add(ev *Event) {
	if ev.SessionID == "" {
		return
	}
	st := s.sessions[ev.SessionID]
	if st == nil {
		st = &sessionState{sum: SessionSummary{ID: ev.SessionID, Start: ev.Time}, firstSeq: ev.Seq}
		s.sessions[ev.SessionID] = st
	}
	sum := &st.sum
	if ev.Time.Before(sum.Start) {
		sum.Start = ev.Time
	}
	fillEmpty(&sum.Protocol, ev.Protocol)
	fillEmpty(&sum.Target, ev.Target)
	fillEmpty(&sum.Subject, ev.Subject)
	if ev.Session != nil {
		fillEmpty(&sum.ClientAddr, ev.Session.ClientAddr)
	}
	switch ev.Type {
	case TypeCommand:
		sum.Commands++
		if ev.Decision != nil && ev.Decision.Allow {
			sum.Allowed++
			s.allowed[ev.ID] = st
		} else {
			sum.Blocked++
		}
	case TypeOutcome:
		s.outcome(st, ev)
	case TypeSessionEnd, TypeAuthFailure:
		end := ev.Time
		sum.End = &end
	case TypeCancel:
		if ev.Outcome != nil && ev.Outcome.Status == StatusBlocked { // a dropped cancel is its own session
			end := ev.Time
			sum.End = &end
		}
	}
}

func (s *SessionSummarizer) outcome(st *sessionState, ev *Event) {
	if ev.Outcome == nil {
		return
	}
	switch ev.Outcome.Status {
	case StatusBlocked:
		if cmd := s.allowed[ev.Ref]; cmd != nil {
			cmd.sum.Allowed--
			cmd.sum.Blocked++
		}
	case StatusError, StatusFailed:
		st.sum.Errors++
	}
	delete(s.allowed, ev.Ref)
}

func fillEmpty(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// Summaries returns the sessions that match f, newest first (by Start, then by
// position in the chain); f.Since keeps sessions whose Start is at or after it,
// and f.Limit keeps the first Limit of them. Zero values do not filter.
func (s *SessionSummarizer) Summaries(f SessionFilter) []SessionSummary {
	states := make([]*sessionState, 0, len(s.sessions))
	for _, st := range s.sessions {
		if f.Since.IsZero() || !st.sum.Start.Before(f.Since) {
			states = append(states, st)
		}
	}
	sort.Slice(states, func(i, j int) bool {
		a, b := states[i], states[j]
		if !a.sum.Start.Equal(b.sum.Start) {
			return a.sum.Start.After(b.sum.Start)
		}
		return a.firstSeq > b.firstSeq
	})
	if f.Limit > 0 && len(states) > f.Limit {
		states = states[:f.Limit]
	}
	out := make([]SessionSummary, len(states))
	for i, st := range states {
		out[i] = st.sum
		if st.sum.End != nil {
			end := *st.sum.End
			out[i].End = &end
		}
	}
	return out
}
