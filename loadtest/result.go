package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"
)

// Result is what one scenario run measured.
type Result struct {
	Scenario string         `json:"scenario"`
	Servers  []string       `json:"servers"`
	Params   map[string]any `json:"params"`
	// Header is the first line of the text report.
	Header string    `json:"header"`
	Start  time.Time `json:"start"`
	Wall   float64   `json:"wall_s"`
	// Ops is the number of completed operations (bench: acquire+release
	// pairs) and Requests the number of wire requests answered.
	Ops          int64    `json:"ops"`
	Requests     int64    `json:"requests"`
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Throughput is Ops per second of wall time.
	Throughput float64 `json:"throughput_ops_s"`
	// Latency holds one summary per histogram, by name (see LatencyOrder).
	Latency      map[string]LatencyStats `json:"latency"`
	LatencyOrder []string                `json:"latency_order"`
	Timeline     []Sample                `json:"timeline"`
	CPU          *CPUStats               `json:"cpu,omitempty"`
	Fairness     *Fairness               `json:"fairness,omitempty"`
	Conns        *ConnStats              `json:"conns,omitempty"`
	Waiters      *WaiterStats            `json:"waiters,omitempty"`
	// Figures are the comparable numbers of the run, used by ab.
	Figures []Figure `json:"figures"`

	hists map[string]*Hist
}

// Figure is one comparable number of a run.
type Figure struct {
	Key   string `json:"key"`
	Label string `json:"label"`
	Unit  string `json:"unit"`
	// Value is nil when the run could not produce it (no samples, no PID).
	Value *float64 `json:"value"`
	// Higher tells whether a larger value is better.
	Higher bool `json:"higher_is_better"`
	// Headline figures go into summary tables.
	Headline bool `json:"headline,omitempty"`
	// FirstRound: ab reports round 1 rather than the median (memory
	// growth, which later rounds hide by reusing what round 1 left).
	FirstRound bool `json:"first_round,omitempty"`
}

// Fairness describes how evenly contended grants went around.
type Fairness struct {
	Grants []int64 `json:"grants_per_worker"`
	Min    int64   `json:"min"`
	Max    int64   `json:"max"`
	Mean   float64 `json:"mean"`
	// Jain is Jain's fairness index, (Σx)² / (n·Σx²): 1 when every worker
	// got the same number of grants, 1/n when one got them all.
	Jain float64 `json:"jain_index"`
}

func newFairness(grants []int64) *Fairness {
	f := &Fairness{Grants: grants}
	if len(grants) == 0 {
		return f
	}
	var sum, sumsq float64
	f.Min, f.Max = grants[0], grants[0]
	for _, g := range grants {
		f.Min = min(f.Min, g)
		f.Max = max(f.Max, g)
		sum += float64(g)
		sumsq += float64(g) * float64(g)
	}
	f.Mean = sum / float64(len(grants))
	if sumsq > 0 {
		f.Jain = sum * sum / (float64(len(grants)) * sumsq)
	}
	return f
}

// addHist attaches a histogram under name (in order of addition).
func (r *Result) addHist(name string, h *Hist) {
	if r.hists == nil {
		r.hists = map[string]*Hist{}
	}
	if r.Latency == nil {
		r.Latency = map[string]LatencyStats{}
	}
	r.hists[name] = h
	r.Latency[name] = h.Stats()
	r.LatencyOrder = append(r.LatencyOrder, name)
}

// Hist returns the named histogram of the run (nil if none).
func (r *Result) Hist(name string) *Hist { return r.hists[name] }

// figure appends a comparable figure.
func (r *Result) figure(key, label, unit string, v float64, valid, higher, headline bool) {
	f := Figure{Key: key, Label: label, Unit: unit, Higher: higher, Headline: headline}
	if valid && !math.IsNaN(v) && !math.IsInf(v, 0) {
		f.Value = &v
	}
	r.Figures = append(r.Figures, f)
}

// latencyFigures appends p50/p99 (headline) and p90/p99.9/max of hist name.
func (r *Result) latencyFigures(name, label string, headline bool) {
	s, ok := r.Latency[name]
	valid := ok && s.Count > 0
	r.figure(name+".p50", label+" p50", "ms", s.P50, valid, false, headline)
	r.figure(name+".p90", label+" p90", "ms", s.P90, valid, false, false)
	r.figure(name+".p99", label+" p99", "ms", s.P99, valid, false, headline)
	r.figure(name+".p99.9", label+" p99.9", "ms", s.P999, valid, false, false)
	r.figure(name+".max", label+" max", "ms", s.Max, valid, false, false)
}

// cpuFigures appends the server and generator CPU-per-request figures
// (the server's a headline figure unless noHeadline).
func (r *Result) cpuFigures(noHeadline ...bool) {
	headline := len(noHeadline) == 0 || !noHeadline[0]
	c := r.CPU
	if c == nil {
		c = &CPUStats{}
	}
	r.figure("server_cpu_us_per_req", "server CPU per request", "µs", c.ServerUsPerReq, c.ServerCPU > 0 && r.Requests > 0, false, headline)
	r.figure("server_cores", "server cores busy", "cores", c.ServerCores, c.ServerCPU > 0, false, false)
	r.figure("gen_cpu_us_per_req", "generator CPU per request", "µs", c.GenUsPerReq, r.Requests > 0, false, false)
}

// Figure returns the figure with key, if any.
func (r *Result) Figure(key string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.Key == key {
			return f, true
		}
	}
	return Figure{}, false
}

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the human report. Its first block has the shape of
// dflockd's cmd/bench report (total ops, wall time, throughput, mean, min,
// max, p50, p99, stdev) for the run's main histogram.
func (r *Result) WriteText(w io.Writer) {
	p := func(format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }
	if r.Header != "" {
		p("%s\n\n", r.Header)
	}
	p("  total ops : %d\n", r.Ops)
	p("  wall time : %.3fs\n", r.Wall)
	p("  throughput: %.1f ops/s\n", r.Throughput)
	p("\n")
	if len(r.LatencyOrder) > 0 {
		s := r.Latency[r.LatencyOrder[0]]
		p("  mean      : %.3f ms\n", s.Mean)
		p("  min       : %.3f ms\n", s.Min)
		p("  max       : %.3f ms\n", s.Max)
		p("  p50       : %.3f ms\n", s.P50)
		p("  p99       : %.3f ms\n", s.P99)
		p("  stdev     : %.3f ms\n", s.Stdev)
		p("\n")
	}
	p("  latency (ms)         count        p50        p90        p99      p99.9        max\n")
	for _, name := range r.LatencyOrder {
		s := r.Latency[name]
		p("  %-16s %9d %10.3f %10.3f %10.3f %10.3f %10.3f", name, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max)
		if s.Early > 0 {
			p("  (%d early, min %.3f)", s.Early, s.Min)
		}
		p("\n")
	}
	if f := r.Fairness; f != nil && len(f.Grants) > 0 {
		p("\n  fairness  : grants per worker min %d, max %d, mean %.1f, Jain index %.4f\n", f.Min, f.Max, f.Mean, f.Jain)
	}
	if c := r.Conns; c != nil {
		c.writeText(w)
	}
	if ws := r.Waiters; ws != nil {
		ws.writeText(w)
	}
	p("\n  requests  : %d", r.Requests)
	p("   errors: %d\n", r.Errors)
	for _, e := range r.ErrorSamples {
		p("    error: %s\n", e)
	}
	if c := r.CPU; c != nil {
		if c.ServerCPU > 0 {
			p("  server cpu: %.3fs, %.2f µs/request, %.2f cores", c.ServerCPU, c.ServerUsPerReq, c.ServerCores)
			if c.ServerRSSAfter > 0 {
				p(", rss %.1f MiB", float64(c.ServerRSSAfter)/(1<<20))
			}
			p("\n")
		} else if c.PIDErr != "" {
			p("  server cpu: unavailable (%s)\n", c.PIDErr)
		}
		p("  load gen  : %.3fs CPU, %.2f µs/request, %.2f cores\n", c.GenCPU, c.GenUsPerReq, c.GenCores)
	}
}
