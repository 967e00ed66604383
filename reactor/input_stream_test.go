package reactor_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lockreactor/dflockd/reactor/reactortest"
)

// streamItem is one request of a generated stream and what its reply must be.
type streamItem struct {
	req   string
	want  string // "ok", "error", "queued", "timeout", "grant", "stats"
	park  string // a key held elsewhere that the controller frees after this is sent
	close bool   // free it by closing its holder's connection (else a release)
}

func streamLine(rng *rand.Rand, s string) string {
	if rng.Intn(4) == 0 {
		return s + "\r\n"
	}
	return s + "\n"
}

func streamReq(rng *rand.Rand, cmd, key, arg string) string {
	return streamLine(rng, cmd) + streamLine(rng, key) + streamLine(rng, arg)
}

// randomStream builds a random request stream for connection id.
func randomStream(rng *rand.Rand, id string, n int, parkKeys *[]string, withStats bool) []streamItem {
	var items []streamItem
	fresh := 0
	for len(items) < n {
		switch k := rng.Intn(1000); {
		case k < 600:
			key := "_"
			if rng.Intn(3) == 0 {
				key = strings.Repeat("p", 1+rng.Intn(250))
			}
			items = append(items, streamItem{req: streamReq(rng, "ping", key, "_"), want: "ok"})
		case k < 680:
			items = append(items, streamItem{req: streamReq(rng, "bogus", "k", "1"), want: "error"})
		case k < 740:
			fresh++
			items = append(items, streamItem{req: streamReq(rng, "l", fmt.Sprintf("%s-f%d", id, fresh), "0"), want: "grant"})
		case k < 800:
			items = append(items, streamItem{req: streamReq(rng, "r", id+"-nokey", strings.Repeat("0", 32)), want: "error"})
		case k < 840:
			items = append(items, streamItem{req: streamReq(rng, "l", id+"-bad", "-1"), want: "error"})
		case k < 850 && withStats:
			items = append(items, streamItem{req: streamReq(rng, "stats", "_", "_"), want: "stats"})
		case k < 880:
			key := fmt.Sprintf("%s-hot%d", id, len(*parkKeys))
			*parkKeys = append(*parkKeys, key)
			cl := rng.Intn(2) == 0
			if rng.Intn(2) == 0 {
				items = append(items, streamItem{req: streamReq(rng, "l", key, "5"), want: "grant", park: key, close: cl})
			} else {
				items = append(items, streamItem{req: streamReq(rng, "e", key, ""), want: "enq"})
				items = append(items, streamItem{req: streamReq(rng, "w", key, "5"), want: "grant", park: key, close: cl})
			}
		}
	}
	return items
}

func streamCheck(t *testing.T, i int, it streamItem, line string) {
	t.Helper()
	switch it.want {
	case "grant":
		m := grantRe.FindStringSubmatch(line)
		require.NotNil(t, m, "item %d %q: want a grant, got %q", i, it.req, line)
		require.Equal(t, "ok", m[1], "item %d", i)
		require.Equal(t, "33", m[3], "item %d", i)
	case "enq": // the key may be freed before e is decoded
		if line != rQueued {
			m := grantRe.FindStringSubmatch(line)
			require.NotNil(t, m, "item %d %q: want queued or acquired, got %q", i, it.req, line)
			require.Equal(t, "acquired", m[1], "item %d", i)
		}
	case "stats":
		body, ok := strings.CutPrefix(line, "ok ")
		require.True(t, ok, "item %d: stats reply %q", i, line)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &v), "item %d stats body", i)
	default:
		require.Equal(t, it.want, line, "item %d %q", i, it.req)
	}
}

// streamRun sends items on c split at random byte boundaries with at most
// window bytes unanswered, frees park keys once their request is sent, and
// checks every reply in order. halfClose ends with a partial request and
// a CloseWrite, and expects all replies then the close.
func streamRun(t *testing.T, rng *rand.Rand, c net.Conn, items []streamItem, free func(key string, close bool),
	window int, slowReader bool, halfCloseEnd bool) {
	streamRunDelay(t, rng, c, items, free, window, slowReader, halfCloseEnd, 5, 20)
}

func streamRunDelay(t *testing.T, rng *rand.Rand, c net.Conn, items []streamItem, free func(key string, close bool),
	window int, slowReader bool, halfCloseEnd bool, delayMin, delaySpread int) {
	var all strings.Builder
	ends := make([]int, len(items)) // byte offset after item i
	for i, it := range items {
		all.WriteString(it.req)
		ends[i] = all.Len()
	}
	stream := []byte(all.String())
	tail := "pin"
	if halfCloseEnd {
		stream = append(stream, tail...)
	}
	var answered atomic.Int64 // bytes of requests answered
	parkAt := map[int]streamItem{}
	for i, it := range items {
		if it.park != "" {
			parkAt[ends[i]] = it
		}
	}
	wrng := rand.New(rand.NewSource(rng.Int63()))
	werr := make(chan error, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		_ = c.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		off := 0
		parkIdx := 0
		parkEnds := make([]int, 0, len(parkAt))
		for i := range items {
			if items[i].park != "" {
				parkEnds = append(parkEnds, ends[i])
			}
		}
		deadline := time.Now().Add(20 * time.Second)
		for off < len(stream) {
			for off-int(answered.Load()) > window {
				select {
				case <-stop:
					werr <- fmt.Errorf("stopped")
					return
				default:
				}
				if time.Now().After(deadline) {
					werr <- fmt.Errorf("writer: no progress")
					return
				}
				time.Sleep(200 * time.Microsecond)
			}
			var n int
			switch wrng.Intn(6) {
			case 0:
				n = 1 + wrng.Intn(3)
			case 1:
				n = 1 + wrng.Intn(40)
			case 2:
				n = 1 + wrng.Intn(600)
			default:
				n = 1 + wrng.Intn(6000)
			}
			n = min(n, len(stream)-off, window+1-(off-int(answered.Load())))
			n = max(n, 1)
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(stream[off : off+n]); err != nil {
				werr <- err
				return
			}
			off += n
			for parkIdx < len(parkEnds) && parkEnds[parkIdx] <= off {
				it := parkAt[parkEnds[parkIdx]]
				parkIdx++
				d := time.Duration(delayMin+wrng.Intn(delaySpread)) * time.Millisecond
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(d)
					free(it.park, it.close)
				}()
			}
			if wrng.Intn(8) == 0 {
				time.Sleep(time.Duration(wrng.Intn(1500)) * time.Microsecond)
			}
		}
		if halfCloseEnd {
			// A request still parked at the FIN is dropped (a
			// disconnect): wait until the last one is answered.
			if len(parkEnds) > 0 {
				for int(answered.Load()) < parkEnds[len(parkEnds)-1] {
					select {
					case <-stop:
						werr <- fmt.Errorf("stopped")
						return
					default:
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
			cw := c.(interface{ CloseWrite() error })
			if err := cw.CloseWrite(); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	r := bufio.NewReaderSize(c, 1<<20)
	for i, it := range items {
		if slowReader && rng.Intn(200) == 0 {
			time.Sleep(time.Duration(rng.Intn(30)) * time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reply %d of %d (%q), partial %q", i, len(items), it.req, line)
		streamCheck(t, i, it, strings.TrimSuffix(line, "\n"))
		answered.Store(int64(ends[i]))
	}
	require.NoError(t, <-werr)
	close(stop)
	wg.Wait()
	if halfCloseEnd {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		require.ErrorIs(t, err, io.EOF, "after the last reply, got %q", line)
		require.Empty(t, line)
	} else {
		// Nothing extra.
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		line, err := r.ReadString('\n')
		require.True(t, isTimeout(err), "extra reply %q (%v)", line, err)
	}
}

// streamHolders holds every park key before the stream runs, one connection
// per key freed by closing, one shared connection for the released ones.
type streamHolders struct {
	mu    sync.Mutex
	rel   *reactortest.Conn
	toks  map[string]string
	conns map[string]*reactortest.Conn
}

func streamHold(t *testing.T, srv *reactortest.Server, items []streamItem) *streamHolders {
	h := &streamHolders{rel: srv.Connect(t), toks: map[string]string{}, conns: map[string]*reactortest.Conn{}}
	for _, it := range items {
		if it.park == "" {
			continue
		}
		if it.close {
			c := srv.Connect(t)
			mustGrant(t, c.Do("l", it.park, "0"), rOK, 33)
			h.conns[it.park] = c
		} else {
			h.toks[it.park] = mustGrant(t, h.rel.Do("l", it.park, "0"), rOK, 33)
		}
	}
	return h
}

func (h *streamHolders) free(key string, close bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if close {
		_ = h.conns[key].Close()
		return
	}
	_ = h.rel.Do("r", key, h.toks[key])
}

// TestRandomStreamAcrossParks: random pipelined streams, split at
// random byte boundaries, with requests that park while up to ~40 KiB piles
// up behind them (the inbound buffer grows, wraps, and is trimmed once the
// park ends with a partial request left), every reply checked in order.
func TestRandomStreamAcrossParks(t *testing.T) {
	for _, tr := range transports {
		for _, variant := range []string{"plain", "stats-hw", "small-hw", "halfclose"} {
			t.Run(tr.name+"/"+variant, func(t *testing.T) {
				srv := tr.start(t, func(c *reactortest.Config) {
					c.Server.Loops = 2
					c.Core.MaxLocks = 1 << 20
					switch variant {
					case "stats-hw":
						c.Server.OutboundHighWater = 8 << 10
					case "small-hw":
						// Decoding stops every ~100 requests: the inbound
						// ring is consumed in steps while more arrives
						// behind, so it wraps before it is trimmed.
						c.Server.OutboundHighWater = 300
					}
				})
				if variant == "stats-hw" {
					big := srv.Connect(t)
					bigKeysForStats(t, big, 40) // ~12 KB stats replies
				}
				const conns = 3
				var wg sync.WaitGroup
				for ci := range conns {
					seed := time.Now().UnixNano() + int64(ci)
					rng := rand.New(rand.NewSource(seed))
					var parks []string
					id := fmt.Sprintf("%s%s%d", tr.name, variant, ci)
					items := randomStream(rng, id, 3000, &parks, variant == "stats-hw")
					h := streamHold(t, srv, items)
					c := dialRaw(t, tr, srv)
					wg.Add(1)
					go func() {
						defer wg.Done()
						t.Logf("conn %d seed %d: %d items, %d parks", ci, seed, len(items), len(parks))
						streamRun(t, rng, c, items, h.free, 40<<10, variant != "plain", variant == "halfclose")
					}()
				}
				wg.Wait()
			})
		}
	}
}

// TestWrapThenTrim: a park with ~40 KiB piling up behind it, then
// decoding in steps of about 100 requests (a 300-byte reply high-water
// mark) while more input arrives: the inbound ring is consumed from the
// front while it is written past its end, and trimmed with its contents
// wrapped. Every reply is checked.
func TestWrapThenTrim(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.start(t, func(c *reactortest.Config) {
				c.Server.Loops = 2
				c.Server.OutboundHighWater = 300
			})
			var wg sync.WaitGroup
			for round := range 6 {
				seed := time.Now().UnixNano() + int64(round)
				rng := rand.New(rand.NewSource(seed))
				id := fmt.Sprintf("wrap%s%d", tr.name, round)
				key := id + "-hot"
				items := []streamItem{{req: req("l", key, "10"), want: "grant", park: key, close: round%2 == 1}}
				for len(items) < 7000 {
					switch rng.Intn(10) {
					case 0:
						items = append(items, streamItem{req: streamReq(rng, "bogus", strings.Repeat("b", rng.Intn(200)+1), "1"), want: "error"})
					default:
						items = append(items, streamItem{req: streamReq(rng, "ping", strings.Repeat("p", rng.Intn(40)+1), "_"), want: "ok"})
					}
				}
				h := streamHold(t, srv, items)
				c := dialRaw(t, tr, srv)
				wg.Add(1)
				go func() {
					defer wg.Done()
					t.Logf("round %d seed %d", round, seed)
					streamRunDelay(t, rng, c, items, h.free, 44<<10, true, round%3 == 2, 40, 20)
				}()
			}
			wg.Wait()
		})
	}
}
