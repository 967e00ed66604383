package loadtest

import (
	"context"
	"testing"
	"time"
)

// The pipeline scenario counts an op (and records its latency) only for
// a successful reply, as bench, contended and rate count only completed
// acquire+release pairs: a server that refuses every request gets no
// throughput figure, and its refusals are errors.
func TestPipelineCountsOnlySuccessfulReplies(t *testing.T) {
	addr := fakeServer(t, func(c *fakeConn, r fakeReq) {
		c.reply("error_max_locks") // every acquire refused
	})
	res, err := Pipeline(context.Background(), PipelineConfig{
		Common:      Common{Servers: []string{addr}, Key: "rv", Timeout: 1, Lease: 1, Duration: 200 * time.Millisecond, Interval: 20 * time.Millisecond},
		Connections: 2, Depth: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ops %d, requests %d, errors %d, throughput %.0f/s, latency count %d",
		res.Ops, res.Requests, res.Errors, res.Throughput, res.Latency["request"].Count)
	if res.Errors == 0 {
		t.Fatal("no errors recorded: the fake did not refuse")
	}
	if res.Ops != 0 || res.Throughput != 0 {
		t.Errorf("every request was refused, yet pipeline reports %d ops (%.0f/s) and %d latencies",
			res.Ops, res.Throughput, res.Latency["request"].Count)
	}
	if res.Requests != res.Errors {
		t.Errorf("%d requests answered (all refused), %d errors: refused requests still count as answered requests (CPU per request)",
			res.Requests, res.Errors)
	}
	if f, ok := res.Figure("throughput"); ok && f.Value != nil {
		t.Errorf("throughput figure is valid (%.0f requests/s) on a run where every request failed", *f.Value)
	}
}
