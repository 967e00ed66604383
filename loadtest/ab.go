package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Runner is a configured scenario.
type Runner interface {
	Name() string
	// Settings returns the scenario's common settings, which the caller
	// may change between runs (ab points them at A, then at B).
	Settings() *Common
	Run(ctx context.Context) (*Result, error)
}

// Target is one side of an A/B comparison.
type Target struct {
	Name    string   `json:"name"`
	Servers []string `json:"servers"`
	PIDs    []int    `json:"pids,omitempty"`
}

// ABConfig configures an A/B comparison.
type ABConfig struct {
	A, B Target
	// Runs is the number of rounds; each round runs A then B (default 3).
	Runs int
	// Pause between runs, letting the machine settle (default 500 ms).
	Pause time.Duration
	// Label names the comparison in summaries.
	Label string
	// Log, when set, gets one line per finished run.
	Log io.Writer
}

// ABSide is what one side measured over all rounds.
type ABSide struct {
	Target
	Runs []*Result `json:"runs"`
	// Latency merges each histogram over the rounds.
	Latency      map[string]LatencyStats `json:"latency"`
	LatencyOrder []string                `json:"latency_order"`
	Errors       int64                   `json:"errors"`
	hists        map[string]*Hist
}

// ABFigure is one figure compared: per-round values, medians and ratios.
type ABFigure struct {
	Key      string `json:"key"`
	Label    string `json:"label"`
	Unit     string `json:"unit"`
	Higher   bool   `json:"higher_is_better"`
	Headline bool   `json:"headline,omitempty"`
	// FirstRound: MedianA/MedianB hold round 1's values, not medians.
	FirstRound bool `json:"first_round,omitempty"`
	// A and B are the values of each round (null where missing).
	A []*float64 `json:"a"`
	B []*float64 `json:"b"`
	// MedianA and MedianB are the medians over the rounds.
	MedianA *float64 `json:"median_a"`
	MedianB *float64 `json:"median_b"`
	// Ratios are A/B per round; Ratio is MedianA/MedianB.
	Ratios []*float64 `json:"ratios"`
	Ratio  *float64   `json:"ratio"`
}

// ABResult is an A/B comparison.
type ABResult struct {
	Label    string         `json:"label"`
	Scenario string         `json:"scenario"`
	Header   string         `json:"header"`
	Params   map[string]any `json:"params"`
	Rounds   int            `json:"rounds"`
	A        ABSide         `json:"a"`
	B        ABSide         `json:"b"`
	Figures  []ABFigure     `json:"figures"`
}

// AB runs the scenario against A and B alternately (A B A B …) for
// cfg.Runs rounds, so slow drifts of a shared machine hit both sides
// alike, and compares the medians.
func AB(ctx context.Context, cfg ABConfig, sc Runner) (*ABResult, error) {
	if cfg.Runs <= 0 {
		cfg.Runs = 3
	}
	if cfg.Pause <= 0 {
		cfg.Pause = 500 * time.Millisecond
	}
	if cfg.A.Name == "" {
		cfg.A.Name = "A"
	}
	if cfg.B.Name == "" {
		cfg.B.Name = "B"
	}
	base := *sc.Settings()
	ab := &ABResult{Label: cfg.Label, Scenario: sc.Name(), Rounds: cfg.Runs,
		A: ABSide{Target: cfg.A}, B: ABSide{Target: cfg.B}}
	for round := range cfg.Runs {
		for _, side := range []*ABSide{&ab.A, &ab.B} {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s := sc.Settings()
			*s = base
			s.Servers, s.PIDs = side.Servers, side.PIDs
			s.Label = fmt.Sprintf("%s#%d", side.Name, round+1)
			res, err := sc.Run(ctx)
			if err != nil {
				return nil, fmt.Errorf("ab: %s round %d: %w", side.Name, round+1, err)
			}
			side.Runs = append(side.Runs, res)
			if cfg.Log != nil {
				_, _ = fmt.Fprintf(cfg.Log, "ab: %s round %d: %s\n", side.Name, round+1, oneLine(res))
			}
			select {
			case <-time.After(cfg.Pause):
			case <-ctx.Done():
			}
		}
	}
	*sc.Settings() = base
	ab.finish()
	return ab, nil
}

// oneLine is a run's progress line.
func oneLine(r *Result) string {
	var b strings.Builder
	_, _ = fmt.Fprintf(&b, "%d ops in %.2fs", r.Ops, r.Wall)
	for _, f := range r.Figures {
		if f.Headline && f.Value != nil {
			_, _ = fmt.Fprintf(&b, ", %s %s %s", f.Label, fmtNum(*f.Value), f.Unit)
		}
	}
	if r.Errors > 0 {
		_, _ = fmt.Fprintf(&b, ", %d errors", r.Errors)
	}
	return b.String()
}

// finish merges histograms and computes medians and ratios.
func (ab *ABResult) finish() {
	for _, side := range []*ABSide{&ab.A, &ab.B} {
		side.hists = map[string]*Hist{}
		side.Latency = map[string]LatencyStats{}
		for _, r := range side.Runs {
			side.Errors += r.Errors
			for _, name := range r.LatencyOrder {
				h := side.hists[name]
				if h == nil {
					h = NewHist()
					side.hists[name] = h
					side.LatencyOrder = append(side.LatencyOrder, name)
				}
				h.Merge(r.hists[name])
			}
		}
		for name, h := range side.hists {
			side.Latency[name] = h.Stats()
		}
	}
	if len(ab.A.Runs) > 0 {
		first := ab.A.Runs[0]
		ab.Header, ab.Params = first.Header, first.Params
	}
	// Figures in the order the first run lists them.
	var keys []Figure
	seen := map[string]bool{}
	for _, side := range []*ABSide{&ab.A, &ab.B} {
		for _, r := range side.Runs {
			for _, f := range r.Figures {
				if !seen[f.Key] {
					seen[f.Key] = true
					keys = append(keys, f)
				}
			}
		}
	}
	for _, k := range keys {
		f := ABFigure{Key: k.Key, Label: k.Label, Unit: k.Unit, Higher: k.Higher, Headline: k.Headline, FirstRound: k.FirstRound}
		for i := range ab.Rounds {
			a, b := figureOf(ab.A.Runs, i, k.Key), figureOf(ab.B.Runs, i, k.Key)
			f.A = append(f.A, a)
			f.B = append(f.B, b)
			f.Ratios = append(f.Ratios, ratio(a, b))
		}
		f.MedianA, f.MedianB = Median(f.A), Median(f.B)
		if k.FirstRound && len(f.A) > 0 {
			f.MedianA, f.MedianB = f.A[0], f.B[0]
		}
		f.Ratio = ratio(f.MedianA, f.MedianB)
		ab.Figures = append(ab.Figures, f)
	}
}

func figureOf(runs []*Result, i int, key string) *float64 {
	if i >= len(runs) {
		return nil
	}
	f, ok := runs[i].Figure(key)
	if !ok {
		return nil
	}
	return f.Value
}

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	v := *a / *b
	return &v
}

// Median is the median of the present values (nil if none): the middle
// one, or the mean of the middle two.
func Median(vs []*float64) *float64 {
	var xs []float64
	for _, v := range vs {
		if v != nil {
			xs = append(xs, *v)
		}
	}
	if len(xs) == 0 {
		return nil
	}
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return &m
}

// fmtNum prints a figure with sensible precision.
func fmtNum(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmtNum(*v)
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f", *v)
}

// WriteJSON writes the comparison as indented JSON.
func (ab *ABResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ab)
}

// WriteText writes the comparison table: each figure's median on A and B,
// the ratio of the medians, and the ratio of every round.
func (ab *ABResult) WriteText(w io.Writer) {
	p := func(format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }
	title := ab.Header
	if ab.Label != "" {
		title = ab.Label + ": " + title
	}
	p("ab %s\n", title)
	p("  A = %s (%s)   B = %s (%s)   %d rounds, order A B A B …\n\n",
		ab.A.Name, strings.Join(ab.A.Servers, ","), ab.B.Name, strings.Join(ab.B.Servers, ","), ab.Rounds)
	p("   %-34s %-9s %12s %12s %8s   %s\n", "figure", "unit", "A median", "B median", "A/B", "A/B per round")
	for _, f := range ab.Figures {
		var rounds []string
		for _, r := range f.Ratios {
			rounds = append(rounds, fmtRatio(r))
		}
		mark := " "
		if f.Headline {
			mark = "*"
		}
		if f.FirstRound {
			mark += "¹"
		}
		p("%-2s %-34s %-9s %12s %12s %8s   %s\n", mark, f.Label, f.Unit, fmtPtr(f.MedianA), fmtPtr(f.MedianB),
			fmtRatio(f.Ratio), strings.Join(rounds, " "))
	}
	p("\n  errors: A %d, B %d", ab.A.Errors, ab.B.Errors)
	for _, side := range []*ABSide{&ab.A, &ab.B} {
		for _, r := range side.Runs {
			if len(r.ErrorSamples) > 0 {
				p("\n  first %s error: %s", side.Name, r.ErrorSamples[0])
				break
			}
		}
	}
	p("\n  (* headline figure; ¹ round 1's value, not the median: memory growth that later rounds hide by\n" +
		"   reusing what round 1 left; A/B > 1 means A is larger: better for higher-is-better figures such\n" +
		"   as throughput, worse for latencies, CPU and memory; — where a side cannot produce the figure)\n")
}
