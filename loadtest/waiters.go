package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// WaitersConfig is the waiters scenario, two phases:
//
//  1. Timeouts: one connection holds a key; Waiters connections each ask
//     for it with timeout WaitTimeout and stay parked until the server
//     answers `timeout`. Lateness = reply receive time − (request send time
//     + WaitTimeout), the send time being the kernel's transmit stamp
//     where available. The requests go out at once (Spread 0) or evenly over
//     Spread. With the servers' PIDs, the servers' resident memory is read
//     after the connections are open and again once every waiter is
//     parked: the growth per waiter is what a parked waiter costs.
//  2. Lease hand-off: Handoffs pairs at once, each a holder that takes a
//     key with a HandoffLease lease and never releases nor renews, and a
//     waiter queued behind it. Lateness = waiter's grant receive time −
//     (holder's request send time + HandoffLease).
//
// Both measure from the send time, so network and queueing time count
// against the server (an upper bound of the true lateness); a negative
// lateness means the server answered before it was due (counted as
// early). Receive times are the kernel's (SO_TIMESTAMPNS) where available,
// so the generator reading 10k sockets late does not blur them.
type WaitersConfig struct {
	Common
	// Waiters parked on the held key (default 1000), WaitTimeout their
	// timeout in seconds (default 2).
	Waiters     int
	WaitTimeout int64
	// Spread sends the waiters' requests evenly over this long instead of
	// all at once (it must be shorter than WaitTimeout).
	Spread time.Duration
	// Handoffs lease hand-off pairs (default 10; 0 = default, negative =
	// skip) with a HandoffLease-second lease (default 1).
	Handoffs     int
	HandoffLease int64
	// Parallel bounds concurrent dials and readers (default 64).
	Parallel int
}

func (c *WaitersConfig) Name() string                             { return "waiters" }
func (c *WaitersConfig) Settings() *Common                        { return &c.Common }
func (c *WaitersConfig) Run(ctx context.Context) (*Result, error) { return Waiters(ctx, *c) }

// WaiterStats counts the replies of the waiters scenario.
type WaiterStats struct {
	Waiters     int   `json:"waiters"`
	Parked      int64 `json:"parked"`
	Timeouts    int64 `json:"timeout_replies"`
	Granted     int64 `json:"granted_replies"`
	Other       int64 `json:"other_replies"`
	NoReply     int64 `json:"no_reply"`
	Handoffs    int   `json:"handoffs"`
	HandoffsOK  int64 `json:"handoffs_granted"`
	HandoffsBad int64 `json:"handoffs_failed"`
	// RxTimestamps tells whether receive times came from the kernel, and
	// TxTimestamps whether every waiter's send time did.
	RxTimestamps bool `json:"rx_timestamps"`
	TxTimestamps bool `json:"tx_timestamps"`
	// RSSPerWaiter is the servers' resident memory growth per parked
	// waiter (bytes), measured on open connections: the waiter's own cost.
	RSSPerWaiter float64 `json:"server_rss_per_waiter_bytes,omitempty"`
}

func (s *WaiterStats) writeText(w io.Writer) {
	_, _ = fmt.Fprintf(w, "\n  waiters   : %d parked of %d: %d timeout, %d granted (unexpected), %d other, %d no reply\n",
		s.Parked, s.Waiters, s.Timeouts, s.Granted, s.Other, s.NoReply)
	if s.Handoffs > 0 {
		_, _ = fmt.Fprintf(w, "  hand-offs : %d of %d granted after the lease, %d failed\n", s.HandoffsOK, s.Handoffs, s.HandoffsBad)
	}
	if s.RSSPerWaiter != 0 {
		_, _ = fmt.Fprintf(w, "  server rss: %.0f B per parked waiter (growth while parked, connections already open)\n", s.RSSPerWaiter)
	}
	src := "kernel receive timestamps"
	if !s.RxTimestamps {
		src = "read-return times (no kernel timestamps)"
	}
	from := "kernel transmit timestamps"
	if !s.TxTimestamps {
		from = "times taken before each write"
	}
	_, _ = fmt.Fprintf(w, "  timing    : waiters from %s to %s\n", from, src)
}

// Waiters runs the waiters scenario.
func Waiters(ctx context.Context, cfg WaitersConfig) (*Result, error) {
	if cfg.Waiters <= 0 {
		cfg.Waiters = 1000
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 2
	}
	if cfg.Handoffs == 0 {
		cfg.Handoffs = 10
	}
	cfg.Handoffs = max(cfg.Handoffs, 0)
	if cfg.HandoffLease <= 0 {
		cfg.HandoffLease = 1
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("waiters: no servers")
	}
	if cfg.Spread < 0 || cfg.Spread >= time.Duration(cfg.WaitTimeout)*time.Second {
		return nil, fmt.Errorf("waiters: spread %v must be at least 0 and shorter than the wait timeout (%ds)", cfg.Spread, cfg.WaitTimeout)
	}
	if limit := RaiseNoFile(); limit > 0 && uint64(cfg.Waiters+2*cfg.Handoffs)+64 > limit {
		return nil, fmt.Errorf("waiters: %d connections exceed this process's open-file limit %d", cfg.Waiters+2*cfg.Handoffs, limit)
	}
	stats := &WaiterStats{Waiters: cfg.Waiters, Handoffs: cfg.Handoffs}
	timeoutHist, handHist, ctlHist := NewHist(), NewHist(), NewHist()
	r := newRun(&cfg.Common, "waiters", cfg.Parallel)
	r.progressMax = int64(cfg.Waiters) + int64(cfg.Handoffs)
	r.begin(ctx, 0)
	var stamps atomic.Bool
	stamps.Store(true)
	var requests atomic.Int64

	// Phase 1: park the waiters behind a holder and wait for their
	// timeouts.
	key := []byte(cfg.Key + "_waiters")
	addr := cfg.Servers[Shard(key, len(cfg.Servers))]
	err := func() error {
		var d dialer
		d.d.Timeout = 10 * time.Second
		holder, err := d.dial(ctx, addr, true)
		if err != nil {
			return fmt.Errorf("waiters: dial holder: %w", err)
		}
		defer holder.close()
		holdLease := cfg.WaitTimeout + 60
		rep, err := holder.roundTrip(&codec.Request{Cmd: codec.CmdLock, Key: key, Timeout: 0, Lease: holdLease}, "holder acquire")
		if err != nil {
			return fmt.Errorf("waiters: holder: %w", err)
		}
		requests.Add(1)
		if !isGrant(rep) {
			return fmt.Errorf("waiters: holder: %w", unexpected("acquire", rep))
		}
		holdTok := rep.Token

		addrs := make([]string, cfg.Waiters)
		for i := range addrs {
			addrs[i] = addr
		}
		conns, err := dialSmall(ctx, addrs, cfg.Parallel)
		if err != nil {
			return fmt.Errorf("waiters: %w", err)
		}
		defer func() {
			for _, c := range conns {
				c.closeAbort()
			}
		}()
		due := int64(cfg.WaitTimeout) * int64(time.Second)
		sent := make([]int64, len(conns))
		chunk := (len(conns) + cfg.Parallel - 1) / cfg.Parallel
		var wg sync.WaitGroup
		var txStamps atomic.Bool
		txStamps.Store(true)
		for _, c := range conns {
			if !enableRxTimestamps(c.nc) {
				stamps.Store(false)
			}
			if !enableTxTimestamps(c.nc) {
				txStamps.Store(false)
			}
		}
		// A dial returns once the kernel completed the handshake, before
		// the server accepted the connection: ping every connection first,
		// so that the waiters measure parked requests on served
		// connections, not the server's accept backlog.
		if err := pingAll(conns, cfg.Parallel); err != nil {
			return fmt.Errorf("waiters: warm-up ping: %w", err)
		}
		requests.Add(int64(len(conns)))
		rssOpen, rssOK := serversRSS(cfg.PIDs)
		// Send every request first, then read: a reader blocked on its
		// first connection must not delay the other sends. At once, each
		// sender takes a contiguous chunk; spread, sender w takes every
		// Parallel-th request and sends each at its slot.
		t0 := time.Now()
		for w := range cfg.Parallel {
			if w >= len(conns) {
				break
			}
			wg.Go(func() {
				req := codec.Request{Cmd: codec.CmdLock, Key: key, Timeout: cfg.WaitTimeout, Lease: cfg.Lease}
				deadline := time.Now().Add(time.Duration(due) + cfg.Spread + 60*time.Second)
				send := func(i int) {
					c := conns[i]
					_ = c.nc.SetDeadline(deadline)
					sent[i] = time.Now().UnixNano()
					if err := c.send(&req); err != nil {
						sent[i] = -1
						r.fail(err)
						return
					}
					// The kernel's transmit stamp is when the request
					// left for the server; the time read before the
					// write would also count this goroutine being
					// descheduled around it, which a burst of 64
					// senders on a small machine does often.
					if ts, ok := txStamp(c.nc); ok && ts >= sent[i] {
						sent[i] = ts
					} else {
						txStamps.Store(false)
					}
				}
				if cfg.Spread == 0 {
					for i := w * chunk; i < min((w+1)*chunk, len(conns)); i++ {
						send(i)
					}
					return
				}
				for i := w; i < len(conns); i += cfg.Parallel {
					time.Sleep(time.Until(t0.Add(cfg.Spread * time.Duration(i) / time.Duration(len(conns)))))
					send(i)
				}
			})
		}
		wg.Wait()
		if rssOK {
			// Every waiter is parked once the server has read the last
			// request; give it a moment, but read before the first timeout
			// is due.
			firstDue := t0.Add(time.Duration(due))
			time.Sleep(min(200*time.Millisecond, time.Until(firstDue)/2))
			if rssParked, ok := serversRSS(cfg.PIDs); ok {
				stats.RSSPerWaiter = float64(rssParked-rssOpen) / float64(len(conns))
			}
		}
		// Control: this process's own timers, due when the last waiters'
		// timeouts are, measure the machine's scheduling noise.
		ctl := controlTimers(ctlHist, slices.Max(sent)+due, 16)
		var parked, timeouts, granted, other, noReply atomic.Int64
		for w := range cfg.Parallel {
			lo, hi := w*chunk, min((w+1)*chunk, len(conns))
			if lo >= hi {
				break
			}
			wg.Go(func() {
				rec := NewRecorder(timeoutHist)
				defer rec.Flush()
				for i := lo; i < hi; i++ {
					if sent[i] < 0 {
						continue
					}
					parked.Add(1)
					c := conns[i]
					line, at, err := stampedLine(c)
					if err != nil {
						noReply.Add(1)
						r.fail(fmt.Errorf("waiter: %w", err))
						continue
					}
					requests.Add(1)
					r.counters[w].Add(1)
					rep, err := c.parse(line, "waiter")
					switch {
					case err != nil:
						other.Add(1)
						r.fail(err)
					case rep.Code == codec.CodeTimeout:
						timeouts.Add(1)
						rec.Record(at - (sent[i] + due))
					case isGrant(rep):
						// A grant while the holder holds: a lock-less
						// responder (the ceiling) or a broken server.
						granted.Add(1)
						r.fail(fmt.Errorf("waiter: granted while the key is held"))
					default:
						other.Add(1)
						r.fail(unexpected("waiter", rep))
					}
				}
			})
		}
		wg.Wait()
		ctl()
		stats.Parked, stats.Timeouts, stats.Granted = parked.Load(), timeouts.Load(), granted.Load()
		stats.Other, stats.NoReply = other.Load(), noReply.Load()
		stats.TxTimestamps = txStamps.Load()
		if _, err := holder.roundTrip(&codec.Request{Cmd: codec.CmdRelease, Key: key, Token: holdTok}, "holder release"); err != nil {
			r.fail(err)
		} else {
			requests.Add(1)
		}
		return nil
	}()
	if err != nil {
		r.end(requests.Load())
		return nil, err
	}

	// Phase 2: lease hand-offs, all pairs at once.
	if cfg.Handoffs > 0 && ctx.Err() == nil {
		// Let the server finish closing phase 1's connections first: a
		// holder's request queued behind them would start its lease late
		// and count that against the hand-off.
		time.Sleep(500 * time.Millisecond)
		addrs := make([]string, 2*cfg.Handoffs)
		keys := make([][]byte, cfg.Handoffs)
		for i := range keys {
			keys[i] = []byte(cfg.Key + "_handoff_" + strconv.Itoa(i))
			a := cfg.Servers[Shard(keys[i], len(cfg.Servers))]
			addrs[2*i], addrs[2*i+1] = a, a
		}
		conns, err := dialSmall(ctx, addrs, cfg.Parallel)
		if err != nil {
			r.end(requests.Load())
			return nil, fmt.Errorf("waiters: hand-off: %w", err)
		}
		lease := cfg.HandoffLease
		var wg sync.WaitGroup
		var ok, bad atomic.Int64
		for i := range cfg.Handoffs {
			wg.Go(func() {
				holder, waiter := conns[2*i], conns[2*i+1]
				deadline := time.Now().Add(time.Duration(lease)*time.Second + 60*time.Second)
				_ = holder.nc.SetDeadline(deadline)
				_ = waiter.nc.SetDeadline(deadline)
				if !enableRxTimestamps(waiter.nc) {
					stamps.Store(false)
				}
				hsent := time.Now().UnixNano()
				defer controlTimers(ctlHist, hsent+lease*int64(time.Second), 1)()
				rep, err := holder.roundTrip(&codec.Request{Cmd: codec.CmdLock, Key: keys[i], Timeout: 0, Lease: lease}, "hand-off holder")
				if err == nil && !isGrant(rep) {
					err = unexpected("hand-off holder", rep)
				}
				if err != nil {
					bad.Add(1)
					r.fail(err)
					return
				}
				requests.Add(1)
				if err := waiter.send(&codec.Request{Cmd: codec.CmdLock, Key: keys[i], Timeout: lease + 30, Lease: cfg.Lease}); err != nil {
					bad.Add(1)
					r.fail(err)
					return
				}
				line, at, err := stampedLine(waiter)
				if err != nil {
					bad.Add(1)
					r.fail(fmt.Errorf("hand-off waiter: %w", err))
					return
				}
				requests.Add(1)
				rep, err = waiter.parse(line, "hand-off waiter")
				if err == nil && !isGrant(rep) {
					err = unexpected("hand-off waiter", rep)
				}
				if err != nil {
					bad.Add(1)
					r.fail(err)
					return
				}
				ok.Add(1)
				handHist.Record(at - (hsent + lease*int64(time.Second)))
				r.counters[i%len(r.counters)].Add(1)
				if _, err := waiter.roundTrip(&codec.Request{Cmd: codec.CmdRelease, Key: keys[i], Token: rep.Token}, "hand-off release"); err == nil {
					requests.Add(1)
				}
			})
		}
		wg.Wait()
		for _, c := range conns {
			c.closeAbort()
		}
		stats.HandoffsOK, stats.HandoffsBad = ok.Load(), bad.Load()
	}
	stats.RxTimestamps = stamps.Load()
	cpu := r.end(requests.Load())
	res := r.result("waiters", stats.Timeouts+stats.HandoffsOK, requests.Load(), cpu)
	how := "sent at once"
	if cfg.Spread > 0 {
		how = "sent over " + cfg.Spread.String()
	}
	res.Header = fmt.Sprintf("waiters: %d waiters on key %q with timeout %ds, %s; %d lease hand-offs with a %ds lease",
		cfg.Waiters, key, cfg.WaitTimeout, how, cfg.Handoffs, cfg.HandoffLease)
	res.Params = map[string]any{"waiters": cfg.Waiters, "wait_timeout_s": cfg.WaitTimeout, "spread_s": cfg.Spread.Seconds(),
		"handoffs": cfg.Handoffs, "handoff_lease_s": cfg.HandoffLease, "key": string(key)}
	res.Waiters = stats
	res.addHist("timeout_lateness", timeoutHist)
	res.addHist("lease_handoff_lateness", handHist)
	res.addHist("control_timer_lateness", ctlHist)
	lateFigures := func(name, label string) {
		s := res.Latency[name]
		valid := s.Count > s.Early // all early: no lock semantics at all
		res.figure(name+".p50", label+" p50", "ms", s.P50, valid, false, true)
		res.figure(name+".p99", label+" p99", "ms", s.P99, valid, false, name == "timeout_lateness")
		res.figure(name+".max", label+" max", "ms", s.Max, valid, false, true)
		res.figure(name+".early", label+" early", "replies", float64(s.Early), s.Count > 0, false, false)
	}
	// The counts the targets hold the lateness figures to: a waiter that got
	// no timeout reply, or a hand-off that was never granted, is missing
	// from the lateness histograms, so their percentiles alone say nothing
	// about it.
	res.figure("waiters", "waiters asked for", "waiters", float64(stats.Waiters), true, true, false)
	res.figure("timeouts", "waiters answered timeout", "replies", float64(stats.Timeouts), true, true, false)
	res.figure("rss_per_waiter", "server RSS per parked waiter", "B", stats.RSSPerWaiter, stats.RSSPerWaiter != 0, false, true)
	// Later rounds park their waiters in memory the first round freed.
	res.Figures[len(res.Figures)-1].FirstRound = true
	lateFigures("timeout_lateness", "timeout lateness")
	if cfg.Handoffs > 0 {
		res.figure("handoffs", "lease hand-offs asked for", "hand-offs", float64(stats.Handoffs), true, true, false)
		res.figure("handoffs_granted", "lease hand-offs granted", "hand-offs", float64(stats.HandoffsOK), true, true, false)
		lateFigures("lease_handoff_lateness", "lease hand-off lateness")
	}
	cs := res.Latency["control_timer_lateness"]
	res.figure("control_timer_lateness.max", "control: own-timer lateness max", "ms", cs.Max, cs.Count > 0, false, true)
	res.cpuFigures(true)
	return res, nil
}

// pingAll sends one ping on every connection and reads its reply, par
// connections at a time.
func pingAll(conns []*wconn, par int) error {
	var wg sync.WaitGroup
	errs := make(chan error, par)
	chunk := (len(conns) + par - 1) / par
	for lo := 0; lo < len(conns); lo += chunk {
		hi := min(lo+chunk, len(conns))
		wg.Go(func() {
			for _, c := range conns[lo:hi] {
				_ = c.nc.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.roundTrip(&codec.Request{Cmd: codec.CmdPing}, "ping"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// serversRSS is the summed resident memory of the server processes; ok is
// false without PIDs or when one cannot be read.
func serversRSS(pids []int) (rss int64, ok bool) {
	for _, pid := range pids {
		s, err := ReadProc(pid)
		if err != nil || s.RSS == 0 {
			return 0, false
		}
		rss += s.RSS
	}
	return rss, len(pids) > 0
}

// dialSmall dials addrs (small-buffer connections) with at most par at
// once.
func dialSmall(ctx context.Context, addrs []string, par int) ([]*wconn, error) {
	return dialAll(ctx, addrs, par, true)
}

// controlTimers starts n goroutines that sleep until due (wall clock ns)
// and record how late they woke: the lateness of this process's own
// timers at the moment the server's replies are due, i.e. how much of a
// server's lateness the machine itself (scheduling, other load) explains.
// The returned function waits for them.
func controlTimers(h *Hist, due int64, n int) func() {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			time.Sleep(time.Duration(due - time.Now().UnixNano()))
			h.Record(time.Now().UnixNano() - due)
		})
	}
	return wg.Wait
}
