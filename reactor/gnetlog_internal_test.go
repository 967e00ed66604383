package reactor

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestGnetLogger: gnet's stale-connection warning is logged at debug
// level; every other warning stays a warning.
func TestGnetLogger(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := gnetLogger{zap.New(core).Sugar()}
	l.Warnf(staleEventFormat, 10034, 25, 0, 1)
	l.Warnf("failed to enqueue shutdown signal for event-loop(%d): %v", 0, "boom")
	entries := logs.AllUntimed()
	require.Len(t, entries, 2)
	require.Equal(t, zapcore.DebugLevel, entries[0].Level)
	require.Equal(t, "received event[fd=10034|ev=25|flags=0] of a stale connection from event-loop(1)", entries[0].Message)
	require.Equal(t, zapcore.WarnLevel, entries[1].Level)
}

// TestGnetStaleFormat: the format gnetLogger demotes is the one the
// vendored gnet logs (a gnet upgrade that rewords it fails here rather than
// bringing the warnings back unnoticed).
func TestGnetStaleFormat(t *testing.T) {
	src, err := os.ReadFile("../third_party/gnet/reactor_default.go")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(src), `Warnf("`+staleEventFormat+`"`),
		"third_party/gnet/reactor_default.go no longer logs %q", staleEventFormat)
}
