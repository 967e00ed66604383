package reactor_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Reply statuses as on the wire, from codec's one table.
var (
	rOK               = codec.CodeOK.String()
	rQueued           = codec.CodeQueued.String()
	rTimeout          = codec.CodeTimeout.String()
	rError            = codec.CodeError.String()
	rErrAuth          = codec.CodeErrorAuth.String()
	rErrMaxLocks      = codec.CodeErrorMaxLocks.String()
	rErrMaxWaiters    = codec.CodeErrorMaxWaiters.String()
	rErrLimitMismatch = codec.CodeErrorLimitMismatch.String()
	rErrNotEnqueued   = codec.CodeErrorNotEnqueued.String()
	rErrAlreadyEnq    = codec.CodeErrorAlreadyEnqueued.String()
	rErrLeaseExpired  = codec.CodeErrorLeaseExpired.String()
	rErrDraining      = codec.CodeErrorDraining.String()
)

// transport is one way the port can be served; every black-box test that
// concerns the protocol runs once per transport.
type transport struct {
	name string
	tls  bool
}

var transports = []transport{{name: "tcp"}, {name: "tls", tls: true}}

// eachTransport runs f as a subtest per transport, in parallel with each
// other and with the other parallel tests.
func eachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	t.Helper()
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			f(t, tr)
		})
	}
}

// forTransports runs f as a subtest per transport, one after the other
// and alone (not parallel): for the tests that load the machine or need
// quiet timing.
func forTransports(t *testing.T, f func(t *testing.T, tr transport)) {
	t.Helper()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// start runs a test server served over tr; dial it with Connect.
func (tr transport) start(t testing.TB, configure ...func(*reactortest.Config)) *reactortest.Server {
	t.Helper()
	if tr.tls {
		configure = append(configure, func(c *reactortest.Config) { c.SelfSignedTLS = true })
	}
	return reactortest.Start(t, configure...)
}

// grantRe matches a grant reply and captures the status, token and lease.
var grantRe = regexp.MustCompile(`^(ok|acquired) ([0-9a-f]{32}) ([0-9]+)$`)

// mustGrant asserts that reply is "<status> <32 hex> <lease>" and returns
// the token.
func mustGrant(t testing.TB, reply, status string, lease int) string {
	t.Helper()
	m := grantRe.FindStringSubmatch(reply)
	require.NotNil(t, m, "want a grant (%s <token> %d), got %q", status, lease, reply)
	require.Equal(t, status, m[1], "grant status in %q", reply)
	require.Equal(t, strconv.Itoa(lease), m[3], "grant lease in %q", reply)
	return m[2]
}

// lock acquires key on c with timeout 0 and the default lease and returns
// the token.
func lock(t testing.TB, c *reactortest.Conn, key string) string {
	t.Helper()
	return mustGrant(t, c.Do("l", key, "0"), rOK, 33)
}

// req is the wire form of one request.
func req(cmd, key, arg string) string { return cmd + "\n" + key + "\n" + arg + "\n" }

// expectClosed asserts that c's next reply is want and that the server
// then closes the connection within d.
func expectClosed(t testing.TB, c *reactortest.Conn, want string, d time.Duration) {
	t.Helper()
	replyThenClose(t, c, want, d)
}

// replyThenClose asserts that c's next reply is want and that the server
// then closes the connection, and returns how long after the reply the
// close came.
func replyThenClose(t testing.TB, c *reactortest.Conn, want string, d time.Duration) time.Duration {
	t.Helper()
	line, err := c.ReadLine(d)
	require.NoError(t, err, "want %q then close, got %q", want, line)
	require.Equal(t, want, line)
	replied := time.Now()
	c.Closed(d)
	return time.Since(replied)
}

// statsReply is the stats JSON. Decoding it with DisallowUnknownFields
// checks that no other field is present.
type statsReply struct {
	Connections int        `json:"connections"`
	Locks       []lockStat `json:"locks"`
	Semaphores  []semStat  `json:"semaphores"`
	IdleLocks   []idleStat `json:"idle_locks"`
	IdleSems    []idleStat `json:"idle_semaphores"`
}

type lockStat struct {
	Key             string  `json:"key"`
	OwnerConnID     uint64  `json:"owner_conn_id"`
	LeaseExpiresInS float64 `json:"lease_expires_in_s"`
	Waiters         int     `json:"waiters"`
}

type semStat struct {
	Key     string `json:"key"`
	Limit   int    `json:"limit"`
	Holders int    `json:"holders"`
	Waiters int    `json:"waiters"`
}

type idleStat struct {
	Key   string  `json:"key"`
	IdleS float64 `json:"idle_s"`
}

func (s statsReply) lock(key string) (lockStat, bool) {
	for _, l := range s.Locks {
		if l.Key == key {
			return l, true
		}
	}
	return lockStat{}, false
}

func (s statsReply) sem(key string) (semStat, bool) {
	for _, l := range s.Semaphores {
		if l.Key == key {
			return l, true
		}
	}
	return semStat{}, false
}

// stats asks c for stats and decodes them strictly.
func stats(t testing.TB, c *reactortest.Conn) statsReply {
	t.Helper()
	line := c.Do("stats", "_", "_")
	body, ok := strings.CutPrefix(line, rOK+" ")
	require.True(t, ok, "stats reply %q", line)
	dec := json.NewDecoder(bytes.NewReader([]byte(body)))
	dec.DisallowUnknownFields()
	var s statsReply
	require.NoError(t, dec.Decode(&s), "stats body %s", body)
	return s
}

// waitStats polls stats on c until cond holds, failing after 5 s.
func waitStats(t testing.TB, c *reactortest.Conn, what string, cond func(statsReply) bool) statsReply {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := stats(t, c)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last stats %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLockWaiters waits until key (a lock) has n parked or queued waiters.
func waitLockWaiters(t testing.TB, obs *reactortest.Conn, key string, n int) {
	t.Helper()
	waitStats(t, obs, key+" waiters == "+strconv.Itoa(n), func(s statsReply) bool {
		l, ok := s.lock(key)
		return ok && l.Waiters == n || !ok && n == 0
	})
}

// waitSemWaiters waits until key (a semaphore) has n waiters.
func waitSemWaiters(t testing.TB, obs *reactortest.Conn, key string, n int) {
	t.Helper()
	waitStats(t, obs, key+" waiters == "+strconv.Itoa(n), func(s statsReply) bool {
		l, ok := s.sem(key)
		return ok && l.Waiters == n || !ok && n == 0
	})
}

// waitConnections waits until the server counts n open connections.
func waitConnections(t testing.TB, srv interface{ Connections() int64 }, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return srv.Connections() == n }, 5*time.Second, 5*time.Millisecond,
		"want %d open connections, have %d", n, srv.Connections())
}

// queueChain connects n clients to srv: the first takes key (a lock), the
// others queue behind it in index order with a 30 s timeout (checked
// through obs). It returns the clients and the holder's token.
func queueChain(t testing.TB, srv *reactortest.Server, obs *reactortest.Conn, key string, n int) ([]*reactortest.Conn, string) {
	t.Helper()
	conns := make([]*reactortest.Conn, n)
	for i := range conns {
		conns[i] = srv.Connect(t)
	}
	tok := lock(t, conns[0], key)
	for i := 1; i < n; i++ {
		conns[i].Request("l", key, "30")
		waitLockWaiters(t, obs, key, i)
	}
	return conns, tok
}
