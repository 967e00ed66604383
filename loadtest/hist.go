package loadtest

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1 ns to one hour at 3 significant digits (0.1 %
// resolution). Larger values are clamped to the top and counted.
const (
	histLowest  = 1
	histHighest = int64(time.Hour)
	histDigits  = 3
)

// Hist is a latency histogram in nanoseconds: an HDR histogram for the
// percentiles plus exact count, sum, sum of squares, min and max (so the
// mean, stdev, min and max are exact, not bucketed). It is safe for
// concurrent use; workers record through a Recorder, which batches.
//
// Negative values (a reply that came before it was due: a timeout answered
// early) are kept exactly in Min and counted in Early, and enter the HDR
// histogram as 0, so the percentiles cannot show them: the targets read
// Min (see earlyTolerance).
type Hist struct {
	mu      sync.Mutex
	h       *hdrhistogram.Histogram
	n       int64
	sum     float64
	sumsq   float64
	min     int64
	max     int64
	early   int64
	clamped int64
}

// NewHist returns an empty histogram.
func NewHist() *Hist {
	return &Hist{h: hdrhistogram.New(histLowest, histHighest, histDigits)}
}

// Record adds one value (ns).
func (h *Hist) Record(v int64) {
	h.mu.Lock()
	h.add(v)
	h.mu.Unlock()
}

// add records v; h.mu is held.
func (h *Hist) add(v int64) {
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if h.n == 0 || v > h.max {
		h.max = v
	}
	h.n++
	f := float64(v)
	h.sum += f
	h.sumsq += f * f
	switch {
	case v < 0:
		h.early++
		v = 0
	case v > histHighest:
		h.clamped++
		v = histHighest
	}
	_ = h.h.RecordValue(v)
}

// Merge adds every value of o to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o == h {
		return
	}
	o.mu.Lock()
	oh := o.h.Clone()
	on, osum, osumsq, omin, omax, oearly, oclamped := o.n, o.sum, o.sumsq, o.min, o.max, o.early, o.clamped
	o.mu.Unlock()
	if on == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Merge(oh)
	if h.n == 0 || omin < h.min {
		h.min = omin
	}
	if h.n == 0 || omax > h.max {
		h.max = omax
	}
	h.n += on
	h.sum += osum
	h.sumsq += osumsq
	h.early += oearly
	h.clamped += oclamped
}

// Count is the number of values recorded.
func (h *Hist) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Quantile returns the value (ns) at quantile q in [0, 1] by nearest
// rank: the ceil(q·n)-th smallest value, so that at least q of the values
// are at or below it (HDR precision: within 0.1 %). For q == 1 it returns
// the exact maximum.
func (h *Hist) Quantile(q float64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quantile(q)
}

func (h *Hist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	// HDR's own rank is int(q·n + 0.5), q·n rounded to nearest, one rank
	// low whenever q·n has a fraction below one half. Ask it for the
	// percentile whose rank is exactly the nearest rank: for an integer k,
	// int((100·k/n)/100·n + 0.5) is k. The epsilon keeps a q·n that is an
	// integer but for float error (0.99 × 10000) from gaining a rank.
	n := h.h.TotalCount()
	rank := min(max(int64(math.Ceil(q*float64(n)-1e-9)), 1), n)
	v := h.h.ValueAtQuantile(100 * float64(rank) / float64(n))
	// The HDR value is the top of its bucket: never report more than the
	// exact maximum, nor less than the exact minimum.
	return max(min(v, h.max), h.min)
}

// LatencyStats summarises a Hist; durations are in milliseconds.
type LatencyStats struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Stdev float64 `json:"stdev_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	// Early counts negative values (replies before they were due).
	Early int64 `json:"early,omitempty"`
	// Clamped counts values above the histogram's one-hour range.
	Clamped int64 `json:"clamped,omitempty"`
	// Percentiles is the latency curve (percentile → ms) used by charts.
	Percentiles []PercentilePoint `json:"percentiles"`
}

// PercentilePoint is one point of a latency-by-percentile curve.
type PercentilePoint struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// curvePercentiles are the points of the latency-by-percentile curve.
var curvePercentiles = []float64{0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// Stats summarises the histogram. Stdev is the sample standard deviation
// (n-1), as dflockd's cmd/bench prints it.
func (h *Hist) Stats() LatencyStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := LatencyStats{Count: h.n, Early: h.early, Clamped: h.clamped}
	if h.n == 0 {
		return s
	}
	n := float64(h.n)
	mean := h.sum / n
	s.Mean = mean / 1e6
	if h.n > 1 {
		v := (h.sumsq - n*mean*mean) / (n - 1)
		s.Stdev = math.Sqrt(max(v, 0)) / 1e6
	}
	s.Min = ms(h.min)
	s.Max = ms(h.max)
	s.P50 = ms(h.quantile(0.50))
	s.P90 = ms(h.quantile(0.90))
	s.P99 = ms(h.quantile(0.99))
	s.P999 = ms(h.quantile(0.999))
	for _, p := range curvePercentiles {
		var v int64
		if p == 0 {
			v = h.min
		} else {
			v = h.quantile(p / 100)
		}
		s.Percentiles = append(s.Percentiles, PercentilePoint{Percentile: p, Ms: ms(v)})
	}
	return s
}

// Recorder batches one worker's values into a shared Hist, so the hot
// loop takes the histogram's lock once per batch and never allocates. It
// is owned by one goroutine; call Flush when the worker ends.
type Recorder struct {
	h   *Hist
	n   int
	buf [256]int64
}

// NewRecorder returns a recorder that feeds h.
func NewRecorder(h *Hist) *Recorder { return &Recorder{h: h} }

// Record adds one value (ns).
func (r *Recorder) Record(v int64) {
	r.buf[r.n] = v
	r.n++
	if r.n == len(r.buf) {
		r.Flush()
	}
}

// Flush hands the batched values to the histogram.
func (r *Recorder) Flush() {
	if r.n == 0 {
		return
	}
	r.h.mu.Lock()
	for _, v := range r.buf[:r.n] {
		r.h.add(v)
	}
	r.h.mu.Unlock()
	r.n = 0
}

// Counter is a per-worker completion counter on its own cache line: the
// worker adds, the timeline sampler reads.
type Counter struct {
	atomic.Int64
	_ [56]byte
}
