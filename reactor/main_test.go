package reactor_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The 10,000-connection test runs its clients in a child process (this
	// binary again), so that neither process needs more than ~10,000
	// descriptors.
	if os.Getenv(holderEnv) != "" {
		os.Exit(connHolderMain())
	}
	goleak.VerifyTestMain(m,
		// gnet's global goroutine pool (pkg/pool/goroutine.DefaultWorkerPool,
		// an ants pool created at package init) keeps a purge goroutine
		// and idle workers for the life of the process; it is not ours and
		// cannot be stopped.
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}
