package bundles

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/open-policy-agent/opa/v1/logging"
)

// opaLogger makes OPA's plugins (bundle downloads, activation, signature
// checks, decision logs) log through regate's logger, so a refused bundle
// shows up where every other regate message does.
type opaLogger struct {
	log    hclog.Logger
	fields map[string]any
	// loaded holds the bundles whose activation OPA has logged, shared by
	// the loggers WithFields derives.
	loaded *sync.Map
}

func newOPALogger(log hclog.Logger) logging.Logger {
	return &opaLogger{log: log, loaded: &sync.Map{}}
}

// activatedMsg starts the message OPA's bundle plugin logs at INFO after every
// activation, which with a bundle server that sends no ETag is every poll.
const activatedMsg = "Bundle loaded and activated successfully"

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

// Info logs at INFO, except OPA's activation message for a bundle it was
// logged for before: that goes to DEBUG (the engine logs every change of
// revision itself, at INFO).
func (l *opaLogger) Info(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	if strings.HasPrefix(msg, activatedMsg) {
		if _, seen := l.loaded.LoadOrStore(fmt.Sprint(l.fields["name"]), true); seen {
			l.log.Debug(msg, l.args()...)
			return
		}
	}
	l.log.Info(msg, l.args()...)
}
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
	return &opaLogger{log: l.log, fields: merged, loaded: l.loaded}
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
