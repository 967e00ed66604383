package chaos_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/loadtest/chaos"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

var linHistories = flag.Int("chaos.histories", 0, "histories of the linearizability test (0: a few hundred for make test)")

// TestLinearizability records many short concurrent histories of
// non-blocking operations (try-acquire with a lease that never runs out,
// release, renew; locks and a semaphore) and checks each against the
// sequential model with porcupine. A failing history is written as a
// porcupine visualization, named in the failure.
func TestLinearizability(t *testing.T) {
	n := *linHistories
	if n == 0 {
		n = 500
		if testing.Short() {
			n = 100
		}
	}
	s := seed()
	t.Logf("linearizability seed %d, %d histories (rerun with -chaos.seed=%d)", s, n, s)
	srv := reactortest.Start(t, func(c *reactortest.Config) { c.Server.Logger = quietLogger(t) })
	rec, err := chaos.NewLinearRecorder(chaos.LinearConfig{Addr: srv.Addr})
	require.NoError(t, err)
	defer rec.Close()
	start := time.Now()
	ops, unknown := 0, 0
	for i := range n {
		hseed := s + int64(i)
		history, err := rec.Record(hseed)
		require.NoError(t, err, "history %d (seed %d)", i, hseed)
		ops += len(history)
		res, info := porcupine.CheckOperationsVerbose(chaos.LockModel, history, 10*time.Second)
		switch res {
		case porcupine.Illegal:
			path := visualize(t, info, hseed)
			t.Fatalf("history %d (seed %d) is not linearizable; visualization: %s", i, hseed, path)
		case porcupine.Unknown:
			unknown++
		}
	}
	t.Logf("%d histories, %d operations, %d undecided within the timeout, in %v", n, ops, unknown, time.Since(start).Round(time.Millisecond))
	require.Zero(t, unknown, "histories porcupine could not decide")
}

func visualize(t *testing.T, info porcupine.LinearizationInfo, seed int64) string {
	dir, err := os.MkdirTemp("", "dflockd-porcupine-")
	require.NoError(t, err)
	path := filepath.Join(dir, fmt.Sprintf("history-%d.html", seed))
	if err := porcupine.VisualizePath(chaos.LockModel, info, path); err != nil {
		t.Logf("visualization: %v", err)
	}
	return path
}

// TestLinearModelCatchesViolation: the model rejects two overlapping
// grants of one lock, a release of a token never granted answering ok, a
// fence going backwards and a timeout on a free lock.
func TestLinearModelCatchesViolation(t *testing.T) {
	acq := chaos.LinearInput{Kind: chaos.LinAcquire, Res: "l/k", Limit: 1}
	ok := func(f uint64) chaos.LinearOutput {
		return chaos.LinearOutput{Code: codec.CodeOK, Token: codec.Token{Fence: f, Salt: 1}}
	}
	rel := func(f uint64) chaos.LinearInput {
		return chaos.LinearInput{Kind: chaos.LinRelease, Res: "l/k", Limit: 1, Token: codec.Token{Fence: f, Salt: 1}}
	}
	op := func(client int, in chaos.LinearInput, out chaos.LinearOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	good := []porcupine.Operation{
		op(0, acq, ok(5), 0, 10),
		op(1, acq, chaos.LinearOutput{Code: codec.CodeTimeout}, 1, 11),
		op(0, rel(5), chaos.LinearOutput{Code: codec.CodeOK}, 20, 30),
		op(1, acq, ok(6), 25, 40), // concurrent with the release
	}
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(chaos.LockModel, good, time.Second))

	// Semaphores: the first grant fixes the limit; another limit answers
	// error_limit_mismatch while held, and may recreate the key once free.
	sacq := func(limit int) chaos.LinearInput {
		return chaos.LinearInput{Kind: chaos.LinAcquire, Res: "s/s", Limit: limit}
	}
	srel := func(f uint64) chaos.LinearInput {
		return chaos.LinearInput{Kind: chaos.LinRelease, Res: "s/s", Token: codec.Token{Fence: f, Salt: 1}}
	}
	mismatch := chaos.LinearOutput{Code: codec.CodeErrorLimitMismatch}
	errOut := chaos.LinearOutput{Code: codec.CodeError}
	okOut := chaos.LinearOutput{Code: codec.CodeOK}
	semGood := []porcupine.Operation{
		op(0, sacq(3), ok(5), 0, 10), // the first acquire fixes limit 3
		op(1, sacq(2), mismatch, 20, 30),
		op(1, sacq(3), ok(6), 40, 50),
		op(1, sacq(3), ok(7), 60, 70),
		op(0, rel(6), errOut, 80, 90), // a semaphore token on the lock "k"
		op(0, srel(5), okOut, 100, 110),
		op(0, srel(6), okOut, 120, 130),
		op(0, srel(7), okOut, 140, 150),
		op(1, sacq(2), ok(8), 160, 170), // free: dropped and recreated with limit 2
		op(1, sacq(2), ok(9), 180, 190),
		op(1, sacq(2), chaos.LinearOutput{Code: codec.CodeTimeout}, 200, 210),
	}
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(chaos.LockModel, semGood, time.Second))

	bad := map[string][]porcupine.Operation{
		"two holders": {
			op(0, acq, ok(5), 0, 10),
			op(1, acq, ok(6), 20, 30),
		},
		"release of an unknown token": {
			op(0, rel(9), chaos.LinearOutput{Code: codec.CodeOK}, 0, 10),
		},
		"fence backwards": {
			op(0, acq, ok(6), 0, 10),
			op(0, rel(6), chaos.LinearOutput{Code: codec.CodeOK}, 20, 30),
			op(1, acq, ok(5), 40, 50),
		},
		"timeout on a free lock": {
			op(0, acq, chaos.LinearOutput{Code: codec.CodeTimeout}, 0, 10),
		},
		"limit mismatch answered ok while held": {
			op(0, sacq(3), ok(5), 0, 10),
			op(1, sacq(2), ok(6), 20, 30),
		},
		"limit mismatch on a fresh key": {
			op(0, sacq(2), mismatch, 0, 10),
		},
		"limit mismatch with the key's limit": {
			op(0, sacq(2), ok(5), 0, 10),
			op(1, sacq(2), mismatch, 20, 30),
		},
		"token released on another key": {
			op(0, acq, ok(5), 0, 10),
			op(0, chaos.LinearInput{Kind: chaos.LinRelease, Res: "l/j", Token: codec.Token{Fence: 5, Salt: 1}}, okOut, 20, 30),
		},
		"token renewed in the other namespace": {
			op(0, acq, ok(5), 0, 10),
			op(0, chaos.LinearInput{Kind: chaos.LinRenew, Res: "s/k", Token: codec.Token{Fence: 5, Salt: 1}}, okOut, 20, 30),
		},
	}
	for name, h := range bad {
		res, info := porcupine.CheckOperationsVerbose(chaos.LockModel, h, time.Second)
		require.Equal(t, porcupine.Illegal, res, name)
		if name == "two holders" {
			path := visualize(t, info, 0)
			_, err := os.Stat(path)
			require.NoError(t, err, "visualization not written")
			_ = os.RemoveAll(filepath.Dir(path))
		}
	}
}
