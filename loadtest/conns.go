package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// ConnsConfig is the conns scenario: open many mostly idle connections,
// let them idle, then check that every one still answers ping; with the
// server's PID, report its resident memory per connection.
type ConnsConfig struct {
	Common
	// Conns to open (default 1000).
	Conns int
	// Sources are the local addresses to connect from; empty means
	// 127.0.0.1, then 127.0.0.2, … as each runs out (loopback targets
	// only; every 127.0.0.0/8 address is local on Linux).
	Sources []string
	// PerSource caps the connections from one source address (default:
	// the size of the local port range less 1000).
	PerSource int
	// Hold is how long the connections idle before each ping sweep
	// (default 1 s; keep it below the server's read timeout).
	Hold time.Duration
	// Sweeps is the number of ping sweeps over every connection (default 1).
	Sweeps int
	// Parallel bounds concurrent dials and the sweep's goroutines (default 64).
	Parallel int
}

func (c *ConnsConfig) Name() string                             { return "conns" }
func (c *ConnsConfig) Settings() *Common                        { return &c.Common }
func (c *ConnsConfig) Run(ctx context.Context) (*Result, error) { return Conns(ctx, *c) }

// ConnStats is what the conns scenario found.
type ConnStats struct {
	Target  int            `json:"target"`
	Opened  int            `json:"opened"`
	Failed  int            `json:"dial_failed"`
	Sources map[string]int `json:"sources"`
	// ConnectSeconds is how long opening took, ConnectRate conns/s.
	ConnectSeconds float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connect_per_s"`
	PingsOK        int64   `json:"pings_ok"`
	PingsFailed    int64   `json:"pings_failed"`
	// RSSPerConn is the servers' resident memory growth per open
	// connection (bytes), from /proc/PID/status before and after.
	RSSPerConn  float64 `json:"server_rss_per_conn_bytes,omitempty"`
	NoFileLimit uint64  `json:"generator_nofile_limit"`
	// RxTimestamps tells whether ping latencies use kernel receive times.
	RxTimestamps bool `json:"rx_timestamps"`
}

func (c *ConnStats) writeText(w io.Writer) {
	_, _ = fmt.Fprintf(w, "\n  conns     : %d of %d open (%d dial failures) in %.2fs (%.0f conns/s) from %s\n",
		c.Opened, c.Target, c.Failed, c.ConnectSeconds, c.ConnectRate, sourcesString(c.Sources))
	_, _ = fmt.Fprintf(w, "  pings     : %d ok, %d failed\n", c.PingsOK, c.PingsFailed)
	if c.RSSPerConn != 0 {
		_, _ = fmt.Fprintf(w, "  server rss: %.2f KiB per connection\n", c.RSSPerConn/1024)
	}
}

func sourcesString(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for i := 1; i < 256; i++ {
		ip := "127.0.0." + strconv.Itoa(i)
		if n, ok := m[ip]; ok {
			parts = append(parts, fmt.Sprintf("%s×%d", ip, n))
		}
	}
	for ip, n := range m {
		if !strings.HasPrefix(ip, "127.0.0.") {
			parts = append(parts, fmt.Sprintf("%s×%d", ip, n))
		}
	}
	return strings.Join(parts, ", ")
}

// localPortRange is the size of the ephemeral port range.
func localPortRange() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 28000
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 28000
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 28000
	}
	return hi - lo + 1
}

// sourcePool hands out source addresses: up to perSource connections
// each, moving to the next when one is full or out of ports.
type sourcePool struct {
	mu        sync.Mutex
	fixed     []string
	cur       int
	used      map[string]int
	perSource int
}

func (p *sourcePool) name(i int) (string, bool) {
	if len(p.fixed) > 0 {
		if i < len(p.fixed) {
			return p.fixed[i], true
		}
		return "", false
	}
	if i >= 254 {
		return "", false
	}
	return "127.0.0." + strconv.Itoa(i+1), true
}

// take reserves a slot on the current source.
func (p *sourcePool) take() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		ip, ok := p.name(p.cur)
		if !ok {
			return "", errors.New("conns: every source address is out of ports")
		}
		if p.used[ip] < p.perSource {
			p.used[ip]++
			return ip, nil
		}
		p.cur++
	}
}

// exhausted gives back a slot of ip and moves past it (out of ports).
func (p *sourcePool) exhausted(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used[ip]--
	if cur, _ := p.name(p.cur); cur == ip {
		p.cur++
	}
}

// giveBack returns a slot after a failed dial.
func (p *sourcePool) giveBack(ip string) {
	p.mu.Lock()
	p.used[ip]--
	p.mu.Unlock()
}

// Conns runs the conns scenario.
func Conns(ctx context.Context, cfg ConnsConfig) (*Result, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 1000
	}
	if cfg.Hold <= 0 {
		cfg.Hold = time.Second
	}
	if cfg.Sweeps <= 0 {
		cfg.Sweeps = 1
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	if cfg.PerSource <= 0 {
		cfg.PerSource = max(localPortRange()-1000, 1000)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("conns: no servers")
	}
	limit := RaiseNoFile()
	if limit > 0 && uint64(cfg.Conns)+64 > limit {
		return nil, fmt.Errorf("conns: %d connections need more than this process's open-file limit %d (keep --conns below %d)",
			cfg.Conns, limit, int(limit)-64)
	}
	pool := &sourcePool{fixed: cfg.Sources, used: map[string]int{}, perSource: cfg.PerSource}
	stats := &ConnStats{Target: cfg.Conns, NoFileLimit: limit, Sources: map[string]int{}}

	r := newRun(&cfg.Common, "conns", cfg.Parallel)
	r.progressMax = int64(cfg.Conns) * int64(1+cfg.Sweeps)
	r.begin(ctx, 0)

	// Phase 1: open.
	conns := make([]*wconn, cfg.Conns)
	var opened, failed atomic.Int64
	var stamps atomic.Bool
	stamps.Store(true)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range cfg.Parallel {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Conns || ctx.Err() != nil {
					return
				}
				// Connection i goes to the server of key prefix_i.
				addr := cfg.Servers[Shard(strconv.AppendInt([]byte(cfg.Key+"_"), int64(i), 10), len(cfg.Servers))]
				c, err := dialFrom(ctx, pool, addr)
				if err != nil {
					failed.Add(1)
					r.fail(err)
					continue
				}
				if !enableRxTimestamps(c.nc) {
					stamps.Store(false)
				}
				conns[i] = c
				opened.Add(1)
				r.counters[w].Add(1)
			}
		})
	}
	wg.Wait()
	stats.ConnectSeconds = time.Since(t0).Seconds()
	stats.Opened, stats.Failed = int(opened.Load()), int(failed.Load())
	if stats.ConnectSeconds > 0 {
		stats.ConnectRate = float64(stats.Opened) / stats.ConnectSeconds
	}
	pool.mu.Lock()
	for ip, n := range pool.used {
		if n > 0 {
			stats.Sources[ip] = n
		}
	}
	pool.mu.Unlock()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.closeAbort()
			}
		}
	}()
	open := make([]*wconn, 0, stats.Opened)
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}

	// Phase 2: idle, then ping every connection (Sweeps times).
	hist := NewHist()
	var pingsOK, pingsFailed atomic.Int64
	for range cfg.Sweeps {
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		chunk := (len(open) + cfg.Parallel - 1) / cfg.Parallel
		for w := range cfg.Parallel {
			lo, hi := w*chunk, min((w+1)*chunk, len(open))
			if lo >= hi {
				break
			}
			wg.Go(func() {
				rec := NewRecorder(hist)
				defer rec.Flush()
				ok, bad := pingSweep(r, w, open[lo:hi], rec)
				pingsOK.Add(ok)
				pingsFailed.Add(bad)
			})
		}
		wg.Wait()
	}
	stats.PingsOK, stats.PingsFailed = pingsOK.Load(), pingsFailed.Load()
	stats.RxTimestamps = stamps.Load() && stats.Opened > 0
	requests := int64(stats.Opened) + stats.PingsOK + stats.PingsFailed
	cpu := r.end(requests)
	res := r.result("conns", int64(stats.Opened), requests, cpu)
	res.Throughput = stats.ConnectRate
	res.Header = fmt.Sprintf("conns: %d connections, idle %v, %d ping sweep(s)", cfg.Conns, cfg.Hold, cfg.Sweeps)
	res.Params = map[string]any{"conns": cfg.Conns, "hold_s": cfg.Hold.Seconds(), "sweeps": cfg.Sweeps,
		"per_source": cfg.PerSource, "parallel": cfg.Parallel}
	// Memory growth needs only the two RSS readings: a server that spent
	// under one /proc tick of CPU (ServerCPU 0) still grew.
	rssRead := cpu.ServerRSSBefore > 0 && cpu.ServerRSSAfter > 0
	if rssRead && stats.Opened > 0 {
		stats.RSSPerConn = float64(cpu.ServerRSSAfter-cpu.ServerRSSBefore) / float64(stats.Opened)
	}
	res.Conns = stats
	res.addHist("ping", hist)
	// asked is the number of connections the run was to open: the targets
	// hold opened and pings_ok to it, not to one another.
	res.figure("asked", "connections asked for", "conns", float64(cfg.Conns), true, true, false)
	res.figure("opened", "connections open", "conns", float64(stats.Opened), true, true, true)
	res.figure("pings_ok", "connections answering ping", "conns", float64(stats.PingsOK)/float64(cfg.Sweeps), true, true, true)
	res.figure("connect_rate", "connect rate", "conns/s", stats.ConnectRate, stats.Opened > 0, true, true)
	res.latencyFigures("ping", "ping latency (sweep)", false)
	res.figure("rss_per_conn", "server RSS per connection", "KiB", stats.RSSPerConn/1024, rssRead && stats.Opened > 0, false, true)
	res.Figures[len(res.Figures)-1].FirstRound = true
	res.cpuFigures()
	return res, nil
}

// dialFrom dials addr from the pool's current source address, moving on
// to the next source when one is out of ports.
func dialFrom(ctx context.Context, pool *sourcePool, addr string) (*wconn, error) {
	for {
		ip, err := pool.take()
		if err != nil {
			return nil, err
		}
		d := net.Dialer{
			Timeout:   10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)},
			Control:   bindNoPort,
		}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return newSmallWconn(nc), nil
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE) {
			pool.exhausted(ip)
			continue
		}
		pool.giveBack(ip)
		return nil, fmt.Errorf("dial %s from %s: %w", addr, ip, err)
	}
}

// newSmallWconn is a wconn with small buffers, for the many idle
// connections of conns and waiters.
func newSmallWconn(nc net.Conn) *wconn {
	return &wconn{nc: nc, wbuf: make([]byte, 0, 64), rbuf: make([]byte, 256)}
}

// pingSweep writes ping on every connection of the chunk, then reads every
// reply; latency runs from each write to the reply's kernel receive time.
func pingSweep(r *run, w int, conns []*wconn, rec *Recorder) (ok, bad int64) {
	ping := codec.Request{Cmd: codec.CmdPing}
	sent := make([]int64, len(conns))
	deadline := time.Now().Add(30 * time.Second)
	for i, c := range conns {
		_ = c.nc.SetDeadline(deadline)
		sent[i] = time.Now().UnixNano()
		if err := c.send(&ping); err != nil {
			sent[i] = -1
			bad++
			r.fail(err)
		}
	}
	for i, c := range conns {
		if sent[i] < 0 {
			continue
		}
		line, at, err := stampedLine(c)
		if err != nil {
			bad++
			r.fail(fmt.Errorf("ping: %w", err))
			continue
		}
		rep, err := c.parse(line, "ping")
		if err != nil || !isOK(rep) {
			bad++
			if err == nil {
				err = unexpected("ping", rep)
			}
			r.fail(err)
			continue
		}
		ok++
		rec.Record(at - sent[i])
		r.counters[w].Add(1)
	}
	return ok, bad
}

// stampedLine reads one reply line and the kernel receive time (wall
// clock ns) of its last bytes.
func stampedLine(c *wconn) ([]byte, int64, error) {
	var at int64
	for {
		if l, ok := c.bufferedLine(); ok {
			if at == 0 {
				at = time.Now().UnixNano()
			}
			return l, at, nil
		}
		if c.r > 0 {
			c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
			c.r = 0
		}
		if c.w == len(c.rbuf) {
			return nil, 0, errLineTooLong
		}
		n, ts, err := readStamped(c.nc, c.rbuf[c.w:])
		c.w += n
		if n == 0 && err != nil {
			return nil, 0, err
		}
		at = ts
	}
}
