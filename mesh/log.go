package mesh

import (
	"context"
	"log/slog"
	"os"
	"sync"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"
)

// Our dependencies log through go-log (github.com/ipfs/go-log/v2: boxo,
// kad-dht, pubsub) and go-libp2p's gologshim (slog), both to stderr by
// default. Both are process-global, so their output is handled here once
// for the process:
//
//   - When the package initialises, go-log's output is replaced by a core
//     that forwards to the node loggers registered below, and gologshim is
//     pointed at go-log (gologshim.SetDefaultHandler with go-log's slog
//     bridge), so both kinds of logger end up in one place. With no node
//     holding a Config.Logger, records are dropped: nothing reaches stderr.
//   - A node with a Config.Logger receives the dependency records (with the
//     attributes pkg=dep and logger=<subsystem>) while it is open. Since
//     the records cannot be told apart by node, one logger gets them all:
//     that of the earliest-started open node that has one. Two nodes with
//     different loggers therefore do not each get "their" libp2p logs: the
//     older node's logger gets every dependency record until it closes.
//   - go-log's levels still filter first: error by default, or as set with
//     golog.SetLogLevel("dht", "warn") and the like.
//   - Nothing a user configured on purpose is overridden: with any of the
//     GOLOG_LOG_LEVEL, GOLOG_FILE, GOLOG_OUTPUT, GOLOG_URL or IPFS_LOGGING
//     environment variables set, go-log and gologshim are left as they are;
//     an app that calls golog.SetupLogging, golog.SetPrimaryCore or
//     gologshim.SetDefaultHandler itself (necessarily after this package
//     initialised) replaces what is done here.
//
// A libp2p logger that logged before this package initialised keeps the
// handler it chose then (gologshim decides at a logger's first record).

// goLogEnv are the environment variables by which a user asks go-log for
// output; with any of them set, dependency logs are left alone.
var goLogEnv = []string{"GOLOG_LOG_LEVEL", "GOLOG_FILE", "GOLOG_OUTPUT", "GOLOG_URL", "IPFS_LOGGING"}

// depLogs is the set of node loggers that dependency records may go to, in
// the order the nodes started.
var depLogs struct {
	mu    sync.Mutex
	owned bool // go-log's output is routed here
	sinks []depSink
}

type depSink struct {
	n   *Node
	log *slog.Logger
}

func init() { takeDependencyLogs() }

// takeDependencyLogs routes go-log's and gologshim's output to depCore,
// unless the environment configures go-log.
func takeDependencyLogs() {
	for _, k := range goLogEnv {
		if os.Getenv(k) != "" {
			return
		}
	}
	depLogs.mu.Lock()
	depLogs.owned = true
	depLogs.mu.Unlock()
	golog.SetPrimaryCore(depCore{})
	gologshim.SetDefaultHandler(golog.SlogHandler())
}

// registerDependencyLogs makes l (if not nil) a receiver of dependency
// records while n is open. New calls it; Close calls unregister.
func registerDependencyLogs(n *Node, l *slog.Logger) {
	if l == nil {
		return
	}
	depLogs.mu.Lock()
	defer depLogs.mu.Unlock()
	depLogs.sinks = append(depLogs.sinks, depSink{n: n, log: l.With("pkg", "dep")})
}

// unregisterDependencyLogs removes n's logger.
func unregisterDependencyLogs(n *Node) {
	depLogs.mu.Lock()
	defer depLogs.mu.Unlock()
	for i, s := range depLogs.sinks {
		if s.n == n {
			depLogs.sinks = append(depLogs.sinks[:i], depLogs.sinks[i+1:]...)
			return
		}
	}
}

// depLogger is the logger dependency records go to now, or nil.
func depLogger() *slog.Logger {
	depLogs.mu.Lock()
	defer depLogs.mu.Unlock()
	if !depLogs.owned || len(depLogs.sinks) == 0 {
		return nil
	}
	return depLogs.sinks[0].log
}

// depCore is the zap core that go-log writes through: it hands each record
// to depLogger as a slog record, or drops it.
type depCore struct {
	fields []zapcore.Field
}

var _ zapcore.Core = depCore{}

// Enabled reports whether records of lvl are wanted. Errors and worse
// always are (zap's IncreaseLevel, used by some dependencies, complains on
// stderr about a core that does not take them); Write drops them when no
// logger is registered.
func (c depCore) Enabled(lvl zapcore.Level) bool {
	if lvl >= zapcore.ErrorLevel {
		return true
	}
	l := depLogger()
	return l != nil && l.Enabled(context.Background(), slogLevel(lvl))
}

func (c depCore) With(fields []zapcore.Field) zapcore.Core {
	return depCore{fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c depCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c depCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	l := depLogger()
	if l == nil {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	attrs = append(attrs, slog.String("logger", ent.LoggerName))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	l.LogAttrs(context.Background(), slogLevel(ent.Level), ent.Message, attrs...)
	return nil
}

func (depCore) Sync() error { return nil }

// slogLevel maps a zap level to slog's.
func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}
