package reactor_test

import (
	"bufio"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// One connection holds at most one large reply's share of the budget. A
// client keeping three stats in flight, reading steadily and pinging every
// 5 ms never let gnet's buffer empty, so its share grew with every reply
// decoded (released only when the buffer was seen empty) and after ~17
// replies stats answered error to everyone else; reading slowly from then
// on, it kept the budget spent. Now a connection is not decoded while a
// large reply of its own is unsent.
func TestStatsOneShareAtATime(t *testing.T) {
	tr := transport{name: "tcp"}
	srv := tr.start(t, func(c *reactortest.Config) {
		c.Server.WriteTimeout = 60 * time.Second
	})
	holder := srv.Connect(t)
	holdNamed(t, holder, 1024, escapedKey)
	probe := srv.Connect(t)
	line := probe.Do("stats", "_", "_")
	require.True(t, strings.HasPrefix(line, "ok {"))
	replyLen := len(line) + 1

	a := dialSlowReader(t, tr, srv)
	const inFlight = 3 // requests A keeps outstanding
	var (
		mu       sync.Mutex
		sent     int
		read     int
		errs     int
		stop     atomic.Bool
		wg       sync.WaitGroup
		sendMore = make(chan struct{}, 1)
		chunk    atomic.Int64
	)
	chunk.Store(64 << 10)
	send := func() {
		_ = a.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = a.Write([]byte(req("stats", "_", "_")))
	}
	for range inFlight {
		send()
		sent++
	}
	var wmu sync.Mutex
	send0 := send
	send = func() { wmu.Lock(); send0(); wmu.Unlock() }
	wg.Add(3)
	go func() { // A's pinger: any input makes the loop decode A's next stats
		defer wg.Done()
		for !stop.Load() {
			time.Sleep(5 * time.Millisecond)
			wmu.Lock()
			_ = a.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = a.Write([]byte(req("ping", "_", "_")))
			wmu.Unlock()
		}
	}()
	go func() { // A's writer: a new stats for each reply read
		defer wg.Done()
		for range sendMore {
			if stop.Load() {
				return
			}
			send()
		}
	}()
	go func() { // A's reader: steady, ~16 MB/s
		defer wg.Done()
		defer close(sendMore)
		br := bufio.NewReaderSize(throttled{a, &chunk, 4 * time.Millisecond}, 64<<10)
		for !stop.Load() {
			_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == "ok\n" {
				continue // a ping's
			}
			mu.Lock()
			read++
			if !strings.HasPrefix(l, "ok {") {
				errs++
			}
			sent++
			mu.Unlock()
			sendMore <- struct{}{}
		}
	}()

	refused := false
	var when, unread int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !refused; {
		if probe.Do("stats", "_", "_") == rError {
			mu.Lock()
			when, unread = read, sent-read
			mu.Unlock()
			refused = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	_ = a.Close()
	wg.Wait()
	t.Logf("A read %d replies (%d were error); reply %d bytes", read, errs, replyLen)
	require.False(t, refused,
		"stats refused to B after A read %d replies, while A had only %d requests outstanding (at most %d bytes unsent); budget is 32 MiB",
		when, unread, unread*replyLen)
}

// throttled reads at most chunk bytes per call and sleeps pause after each.
type throttled struct {
	r     interface{ Read([]byte) (int, error) }
	chunk *atomic.Int64
	pause time.Duration
}

func (t throttled) Read(p []byte) (int, error) {
	if c := int(t.chunk.Load()); len(p) > c {
		p = p[:c]
	}
	n, err := t.r.Read(p)
	time.Sleep(t.pause)
	return n, err
}
