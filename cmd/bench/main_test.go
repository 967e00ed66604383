package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// TestBenchRunsLikeDflockdCmdBench: `go run ./cmd/bench` with dflockd's
// cmd/bench flags runs workers × rounds of acquire+release against the
// server and prints cmd/bench's header and statistics.
func TestBenchRunsLikeDflockdCmdBench(t *testing.T) {
	srv := reactortest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"--servers", srv.Addr, "--workers", "4", "--rounds", "25",
		"--key", "cmdbench", "--timeout", "5", "--lease", "10", "--connections", "0", "--no-progress"}, &out, &errOut)
	require.Equal(t, 0, code, "stderr: %s", errOut.String())
	s := out.String()
	require.Contains(t, s, `bench: 4 workers x 25 rounds (key_prefix="cmdbench", conns/worker=1)`)
	require.Contains(t, s, "total ops : 100")
	require.Regexp(t, `requests\s*: 200\s+errors: 0`, s)
	for _, field := range []string{"throughput:", "mean      :", "p50       :", "p99       :", "stdev     :"} {
		require.Contains(t, s, field)
	}
	// Every round released its lock: nothing is left held.
	st := srv.Table.Stats(srv.Table.Now())
	require.Empty(t, st.Locks)
}

// TestBenchRejectsBadFlags: an unknown flag or a mode this protocol has
// not answers with a line naming it and a non-zero exit, running nothing.
func TestBenchRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--mode", "counter"}, `mode "counter" is not supported`},
		{[]string{"--lease", "-1"}, "--timeout and --lease must not be negative"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		require.NotEqual(t, 0, code, "%v", tc.args)
		require.Contains(t, errOut.String(), tc.want, "%v", tc.args)
		require.NotContains(t, out.String(), "total ops", "%v", tc.args)
	}
}
