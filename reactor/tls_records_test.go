package reactor_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// Review coverage of the TLS port at the record level (these pass).

// dialTLSRaw dials srv over TLS and returns the TLS conn and its TCP
// socket, for writing raw (partial) records.
func dialTLSRaw(t *testing.T, srv *reactortest.Server) (*tls.Conn, *net.TCPConn) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	tc := tls.Client(nc, srv.ClientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, tc.HandshakeContext(ctx))
	return tc, nc.(*net.TCPConn)
}

// partialRecord is the first 15 bytes of an application-data record that
// announces 100 bytes: the server's TLS reader is left mid-record.
var partialRecord = append([]byte{23, 3, 3, 0, 100}, make([]byte, 10)...)

// TestTLSRecordBoundaries: requests split one byte per TLS record,
// and 500 requests in a few records, are answered in order; dribbling one
// byte per record, each line well within the read timeout, is served.
func TestTLSRecordBoundaries(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.SelfSignedTLS = true
		c.Server.ReadTimeout = 2 * time.Second
	})
	tc, _ := dialTLSRaw(t, srv)
	r := bufio.NewReader(tc)
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))

	// One byte per record.
	msg := req("l", "rb", "0") + req("ping", "_", "_")
	for i := range len(msg) {
		_, err := tc.Write([]byte{msg[i]})
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	tok := mustGrant(t, strings.TrimSuffix(line, "\n"), rOK, 33)
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, rOK+"\n", line)

	// Many requests per record, a record boundary inside a request.
	var b strings.Builder
	const n = 500
	for i := range n {
		b.WriteString(req("n", "rb", tok+" "+strconv.Itoa(10+i)))
	}
	b.WriteString(req("r", "rb", tok))
	all := b.String()
	for len(all) > 0 {
		k := min(len(all), 7001) // not a request boundary
		_, err := tc.Write([]byte(all[:k]))
		require.NoError(t, err)
		all = all[k:]
	}
	for i := range n {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reply %d", i)
		require.Equal(t, "ok "+strconv.Itoa(10+i)+"\n", line, "reply %d", i)
	}
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, rOK+"\n", line)
}

// TestTLSDiesMidRecordReleasesLock: a TLS client holding a lock
// sends part of a record and then goes away (FIN, or RST): the server sees
// the disconnect at once and hands the lock to the waiter (auto-release).
// And one that stalls mid-record (socket open) is closed by the read
// timeout, which releases the lock too.
func TestTLSDiesMidRecordReleasesLock(t *testing.T) {
	for _, how := range []string{"fin", "rst", "stall"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			srv := reactortest.Start(t, func(c *reactortest.Config) {
				c.SelfSignedTLS = true
				c.Server.ReadTimeout = 500 * time.Millisecond
			})
			obs := srv.Connect(t)
			holder, raw := dialTLSRaw(t, srv)
			hr := bufio.NewReader(holder)
			_, err := holder.Write([]byte(req("l", "mr", "0")))
			require.NoError(t, err)
			_ = holder.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := hr.ReadString('\n')
			require.NoError(t, err)
			mustGrant(t, strings.TrimSuffix(line, "\n"), rOK, 33)

			waiter := srv.Connect(t)
			waiter.Request("l", "mr", "30")
			// The observer's pings keep the observer within its read timeout.
			require.Eventually(t, func() bool {
				l, ok := stats(t, obs).lock("mr")
				return ok && l.Waiters == 1
			}, 5*time.Second, 5*time.Millisecond)

			_, err = raw.Write(partialRecord)
			require.NoError(t, err)
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			switch how {
			case "fin":
				require.NoError(t, raw.CloseWrite())
			case "rst":
				require.NoError(t, raw.SetLinger(0))
				require.NoError(t, raw.Close())
			}
			line, err = waiter.ReadLine(5 * time.Second)
			require.NoError(t, err)
			mustGrant(t, line, rOK, 33)
			took := time.Since(start)
			t.Logf("%s: the waiter was granted %v after", how, took)
			if how == "stall" {
				require.Less(t, took, 2*time.Second, "read timeout 500ms")
			} else {
				require.Less(t, took, 300*time.Millisecond, "a disconnect mid-record was not seen at once")
			}
			if how == "stall" {
				// The holder got the read timeout's error, then the close.
				_ = holder.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := hr.ReadString('\n')
				require.NoError(t, err)
				require.Equal(t, rError+"\n", line)
				_, err = hr.ReadString('\n')
				require.Error(t, err)
				require.False(t, isTimeout(err), "not closed after the read timeout")
			}
		})
	}
}

// TestTLSStalledHandshakeBounded: with no auth token and the read
// timeout off, a client that starts a handshake and stalls (3 bytes of a
// record header) is still closed, after AuthTimeout, and its slot freed.
func TestTLSStalledHandshakeBounded(t *testing.T) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.SelfSignedTLS = true
		c.Server.ReadTimeout = 0
		c.Server.AuthTimeout = 300 * time.Millisecond
	})
	nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	require.NoError(t, err)
	defer func() { _ = nc.Close() }()
	_, err = nc.Write([]byte{22, 3, 1})
	require.NoError(t, err)
	waitConnections(t, srv, 1)
	start := time.Now()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(3*time.Second)))
	_, err = nc.Read(make([]byte, 1))
	require.Error(t, err)
	require.False(t, isTimeout(err), "a stalled handshake was not closed")
	require.Less(t, time.Since(start), 2*time.Second)
	waitConnections(t, srv, 0)
}
