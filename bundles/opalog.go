package bundles

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/logging"
)

// opaLogger makes OPA's plugins (bundle downloads, activation, signature
// checks, decision logs) log through regate's logger, so a refused bundle
// shows up where every other regate message does.
type opaLogger struct {
	log    hclog.Logger
	fields map[string]any
}

func newOPALogger(log hclog.Logger) logging.Logger {
	return &opaLogger{log: log}
}

func (l *opaLogger) args() []any {
	keys := make([]string, 0, len(l.fields))
	for k := range l.fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, l.fields[k])
	}
	return args
}

func (l *opaLogger) Debug(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...), l.args()...) }
func (l *opaLogger) Info(f string, a ...any)  { l.log.Info(fmt.Sprintf(f, a...), l.args()...) }
func (l *opaLogger) Warn(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...), l.args()...) }
func (l *opaLogger) Error(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...), l.args()...) }

// WithFields returns a logger that adds fields to every message.
func (l *opaLogger) WithFields(fields map[string]any) logging.Logger {
	merged := make(map[string]any, len(l.fields)+len(fields))
	for k, v := range l.fields {
		merged[k] = v
	}
	for k, v := range fields {
		merged[k] = v
	}
	return &opaLogger{log: l.log, fields: merged}
}

// GetLevel maps hclog's level to OPA's.
func (l *opaLogger) GetLevel() logging.Level {
	switch {
	case l.log.IsTrace(), l.log.IsDebug():
		return logging.Debug
	case l.log.IsInfo():
		return logging.Info
	case l.log.IsWarn():
		return logging.Warn
	default:
		return logging.Error
	}
}

// SetLevel is ignored: regate's --log-level decides.
func (l *opaLogger) SetLevel(logging.Level) {}
