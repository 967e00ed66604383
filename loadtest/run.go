package loadtest

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/lockreactor/dflockd/codec"
)

// Common holds the settings every scenario shares.
type Common struct {
	// Servers to load, "host:port"; keys are sharded over them by CRC32.
	Servers []string
	// PIDs of the server processes, for CPU and memory figures (optional).
	PIDs []int
	// Key is the key prefix.
	Key string
	// Timeout is the acquire timeout in seconds and Lease the lease in
	// seconds (0 = server default).
	Timeout int64
	Lease   int64
	// Duration of the measured phase (scenarios with a fixed amount of
	// work ignore it).
	Duration time.Duration
	// Interval between throughput samples (default 100 ms).
	Interval time.Duration
	// Progress, when set, receives a progress bar for runs that last more
	// than ProgressAfter (default 2 s). Leave it nil when not a terminal.
	Progress      io.Writer
	ProgressAfter time.Duration
	// Label names the run on the progress bar.
	Label string
}

func (c *Common) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return 100 * time.Millisecond
}

// Sample is one point of throughput over time.
type Sample struct {
	T    float64 `json:"t_s"`   // seconds since the measured phase began
	Rate float64 `json:"ops_s"` // completed ops per second over the interval
}

// run is the measurement frame shared by the scenarios: per-worker
// counters, the throughput sampler, the progress bar, the stop flag, the
// error log and the CPU meter.
type run struct {
	c        *Common
	name     string
	counters []Counter
	start    time.Time
	stop     atomic.Bool
	errs     atomic.Int64

	errMu      sync.Mutex
	errSamples []string

	// progress: a bar of progressMax units; progressNow reports the
	// position (default: completed ops, or elapsed ms for timed runs).
	progressMax int64
	progressNow func() int64

	samplerDone chan struct{}
	samplerStop chan struct{}
	timeline    []Sample
	timer       *time.Timer
	cpu         *cpuMeter
	wall        time.Duration
}

func newRun(c *Common, name string, workers int) *run {
	return &run{c: c, name: name, counters: make([]Counter, workers)}
}

// total is the number of ops completed so far.
func (r *run) total() int64 {
	var n int64
	for i := range r.counters {
		n += r.counters[i].Load()
	}
	return n
}

// fail records an error (the first few are kept verbatim).
func (r *run) fail(err error) {
	if err == nil {
		return
	}
	r.errs.Add(1)
	r.errMu.Lock()
	if len(r.errSamples) < 10 {
		r.errSamples = append(r.errSamples, err.Error())
	}
	r.errMu.Unlock()
}

// begin starts the clock, the CPU meter and the sampler. A positive
// duration sets the stop flag when it has passed; ctx cancellation sets it
// too.
func (r *run) begin(ctx context.Context, duration time.Duration) {
	r.cpu = startCPU(r.c.PIDs)
	r.start = time.Now()
	if duration > 0 {
		r.timer = time.AfterFunc(duration, func() { r.stop.Store(true) })
		if r.progressNow == nil {
			r.progressMax = duration.Milliseconds()
			r.progressNow = func() int64 { return time.Since(r.start).Milliseconds() }
		}
	}
	if r.progressNow == nil && r.progressMax > 0 {
		r.progressNow = r.total
	}
	r.samplerStop = make(chan struct{})
	r.samplerDone = make(chan struct{})
	go r.sample(ctx)
}

// sample records throughput every interval and drives the progress bar.
func (r *run) sample(ctx context.Context) {
	defer close(r.samplerDone)
	iv := r.c.interval()
	t := time.NewTicker(iv)
	defer t.Stop()
	after := r.c.ProgressAfter
	if after <= 0 {
		after = 2 * time.Second
	}
	var bar *progressbar.ProgressBar
	defer func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}()
	last, lastT := int64(0), r.start
	for {
		select {
		case <-r.samplerStop:
			return
		case <-ctx.Done():
			r.stop.Store(true)
			ctx = context.Background()
		case now := <-t.C:
			n := r.total()
			if dt := now.Sub(lastT).Seconds(); dt > 0 {
				r.timeline = append(r.timeline, Sample{T: now.Sub(r.start).Seconds(), Rate: float64(n-last) / dt})
			}
			last, lastT = n, now
			if r.c.Progress == nil || r.progressNow == nil || r.progressMax <= 0 {
				continue
			}
			if bar == nil && now.Sub(r.start) >= after {
				desc := r.name
				if r.c.Label != "" {
					desc = r.c.Label + " " + r.name
				}
				bar = progressbar.NewOptions64(r.progressMax,
					progressbar.OptionSetWriter(r.c.Progress),
					progressbar.OptionSetDescription(desc),
					progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(200*time.Millisecond),
					progressbar.OptionSetPredictTime(false),
					progressbar.OptionSetElapsedTime(false),
					progressbar.OptionClearOnFinish(),
				)
			}
			if bar != nil {
				_ = bar.Set64(min(r.progressNow(), r.progressMax))
			}
		}
	}
}

// end stops the clock, the sampler and the CPU meter; requests is the
// number of wire requests answered.
func (r *run) end(requests int64) *CPUStats {
	r.wall = time.Since(r.start)
	if r.timer != nil {
		r.timer.Stop()
	}
	st := r.cpu.stop(requests)
	close(r.samplerStop)
	<-r.samplerDone
	// A final partial interval, so short runs still have a point.
	if n := r.total(); len(r.timeline) == 0 && r.wall > 0 {
		r.timeline = append(r.timeline, Sample{T: r.wall.Seconds(), Rate: float64(n) / r.wall.Seconds()})
	}
	return st
}

// result fills the fields every scenario shares.
func (r *run) result(scenario string, ops, requests int64, cpu *CPUStats) *Result {
	res := &Result{
		Scenario: scenario,
		Servers:  append([]string(nil), r.c.Servers...),
		Params:   map[string]any{},
		Start:    r.start,
		Wall:     r.wall.Seconds(),
		Ops:      ops,
		Requests: requests,
		Errors:   r.errs.Load(),
		Timeline: r.timeline,
		CPU:      cpu,
		Latency:  map[string]LatencyStats{},
		hists:    map[string]*Hist{},
	}
	r.errMu.Lock()
	res.ErrorSamples = append([]string(nil), r.errSamples...)
	r.errMu.Unlock()
	if res.Wall > 0 {
		res.Throughput = float64(ops) / res.Wall
	}
	return res
}

// dialAll opens one connection to each of addrs, at most par at once
// (small: buffers for one reply at a time).
// closeAll closes every connection dialAll opened.
func closeAll(conns []*wconn) {
	for _, c := range conns {
		c.close()
	}
}

func dialAll(ctx context.Context, addrs []string, par int, small bool) ([]*wconn, error) {
	conns := make([]*wconn, len(addrs))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  atomic.Int64
	)
	var d dialer
	d.d.Timeout = 10 * time.Second
	for range min(par, len(addrs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(addrs) {
					return
				}
				c, err := d.dial(ctx, addrs[i], small)
				if err == nil {
					// A dial returns once the kernel completed the
					// handshake, before the server accepted: one ping
					// first, so that no scenario's measured window pays
					// for the server's accepts. (Any well-formed reply
					// will do: dflockd 1.10 answers ping with error.)
					_ = c.nc.SetDeadline(time.Now().Add(d.d.Timeout))
					if _, err = c.roundTrip(&codec.Request{Cmd: codec.CmdPing}, "ping"); err == nil {
						err = c.nc.SetDeadline(time.Time{})
					}
					if err != nil {
						c.close()
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("dial %s: %w", addrs[i], err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if first != nil {
		for _, c := range conns {
			c.close()
		}
		return nil, first
	}
	return conns, nil
}

// closeOnCancel closes conns when ctx ends or at deadline, so no worker
// stays blocked on a server that does not answer. Call the returned
// function when the workers are done.
func closeOnCancel(ctx context.Context, conns []*wconn, deadline time.Time) func() {
	for _, c := range conns {
		_ = c.nc.SetDeadline(deadline)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range conns {
				_ = c.nc.SetDeadline(time.Now())
			}
		case <-done:
		}
	}()
	return func() { close(done) }
}
