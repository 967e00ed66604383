package loadtest

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"strconv"

	"github.com/go-echarts/go-echarts/v2/charts"
	"github.com/go-echarts/go-echarts/v2/components"
	"github.com/go-echarts/go-echarts/v2/opts"
)

// latencySeries is one latency-by-percentile curve of a report.
type latencySeries struct {
	name string
	st   LatencyStats
}

// timelineSeries is one throughput-over-time curve of a report.
type timelineSeries struct {
	name    string
	samples []Sample
}

// grantsSeries is one per-worker grant count bar series.
type grantsSeries struct {
	name   string
	grants []int64
}

// ReportConfig configures an HTML report.
type ReportConfig struct {
	// AssetsHost is the URL prefix echarts.min.js is loaded from (default:
	// go-echarts' CDN). For offline viewing put echarts.min.js beside the
	// report and use a relative prefix such as "./" (file:// URLs are
	// refused by the HTML template's URL sanitiser).
	AssetsHost string
}

type reportData struct {
	cfg      ReportConfig
	title    string
	unit     string // throughput unit
	latency  []latencySeries
	timeline []timelineSeries
	grants   []grantsSeries
	text     string
}

// WriteReport writes an HTML report of one run: latency by percentile for
// each histogram, throughput over time, and the text report.
func WriteReport(w io.Writer, r *Result, cfg ReportConfig) error {
	d := reportData{cfg: cfg, title: r.Scenario + ": " + r.Header, unit: throughputUnit(r)}
	for _, name := range r.LatencyOrder {
		d.latency = append(d.latency, latencySeries{name: name, st: r.Latency[name]})
	}
	d.timeline = append(d.timeline, timelineSeries{name: r.Scenario, samples: r.Timeline})
	if r.Fairness != nil {
		d.grants = append(d.grants, grantsSeries{name: r.Scenario, grants: r.Fairness.Grants})
	}
	var b bytes.Buffer
	r.WriteText(&b)
	d.text = b.String()
	return d.render(w)
}

// WriteABReport writes an HTML report of an A/B comparison, the two sides
// overlaid: each side's latency curves (merged over its rounds) and the
// throughput over time of every run (A#1, B#1, A#2, …).
func WriteABReport(w io.Writer, ab *ABResult, cfg ReportConfig) error {
	title := ab.Header
	if ab.Label != "" {
		title = ab.Label + ": " + title
	}
	d := reportData{cfg: cfg, title: "ab " + title}
	for _, side := range []*ABSide{&ab.A, &ab.B} {
		for _, name := range side.LatencyOrder {
			d.latency = append(d.latency, latencySeries{name: side.Name + " " + name, st: side.Latency[name]})
		}
	}
	for i := range ab.Rounds {
		for _, side := range []*ABSide{&ab.A, &ab.B} {
			if i < len(side.Runs) {
				r := side.Runs[i]
				d.unit = throughputUnit(r)
				d.timeline = append(d.timeline, timelineSeries{name: side.Name + "#" + strconv.Itoa(i+1), samples: r.Timeline})
				if r.Fairness != nil {
					d.grants = append(d.grants, grantsSeries{name: side.Name + "#" + strconv.Itoa(i+1), grants: r.Fairness.Grants})
				}
			}
		}
	}
	var b bytes.Buffer
	ab.WriteText(&b)
	d.text = b.String()
	return d.render(w)
}

func throughputUnit(r *Result) string {
	if f, ok := r.Figure("throughput"); ok {
		return f.Unit
	}
	return "ops/s"
}

func (d *reportData) render(w io.Writer) error {
	page := components.NewPage()
	page.SetPageTitle("dflockd-loadtest: " + d.title)
	page.SetLayout(components.PageFlexLayout)
	if d.cfg.AssetsHost != "" {
		page.SetAssetsHost(d.cfg.AssetsHost)
	}

	// Latency by percentile.
	lat := charts.NewLine()
	lat.SetGlobalOptions(
		charts.WithInitializationOpts(opts.Initialization{Width: "1100px", Height: "480px", AssetsHost: d.cfg.AssetsHost}),
		charts.WithAnimation(false),
		charts.WithTitleOpts(opts.Title{Title: "Latency by percentile", Subtitle: d.title}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "bottom", Type: "scroll"}),
		charts.WithXAxisOpts(opts.XAxis{Name: "percentile", Type: "category"}),
		charts.WithYAxisOpts(opts.YAxis{Name: "ms (log)", Type: "log"}),
	)
	var labels []string
	for _, p := range curvePercentiles {
		switch p {
		case 0:
			labels = append(labels, "min")
		case 100:
			labels = append(labels, "max")
		default:
			labels = append(labels, "p"+strconv.FormatFloat(p, 'f', -1, 64))
		}
	}
	lat.SetXAxis(labels)
	for _, s := range d.latency {
		data := make([]opts.LineData, len(curvePercentiles))
		for i := range data {
			var v float64
			if i < len(s.st.Percentiles) {
				v = s.st.Percentiles[i].Ms
			}
			data[i] = opts.LineData{Value: v}
		}
		lat.AddSeries(s.name, data)
	}

	// Throughput over time.
	tp := charts.NewLine()
	tp.SetGlobalOptions(
		charts.WithInitializationOpts(opts.Initialization{Width: "1100px", Height: "420px", AssetsHost: d.cfg.AssetsHost}),
		charts.WithAnimation(false),
		charts.WithTitleOpts(opts.Title{Title: "Throughput over time", Subtitle: d.title}),
		charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
		charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "bottom", Type: "scroll"}),
		charts.WithXAxisOpts(opts.XAxis{Name: "s", Type: "value"}),
		charts.WithYAxisOpts(opts.YAxis{Name: d.unit, Type: "value"}),
	)
	for _, s := range d.timeline {
		data := make([]opts.LineData, len(s.samples))
		for i, p := range s.samples {
			data[i] = opts.LineData{Value: []float64{round3(p.T), round3(p.Rate)}}
		}
		tp.AddSeries(s.name, data, charts.WithLineChartOpts(opts.LineChart{ShowSymbol: opts.Bool(false)}))
	}
	page.AddCharts(lat, tp)

	if len(d.grants) > 0 {
		bar := charts.NewBar()
		bar.SetGlobalOptions(
			charts.WithInitializationOpts(opts.Initialization{Width: "1100px", Height: "380px", AssetsHost: d.cfg.AssetsHost}),
			charts.WithAnimation(false),
			charts.WithTitleOpts(opts.Title{Title: "Grants per worker (fairness)"}),
			charts.WithTooltipOpts(opts.Tooltip{Show: opts.Bool(true), Trigger: "axis"}),
			charts.WithLegendOpts(opts.Legend{Show: opts.Bool(true), Top: "bottom", Type: "scroll"}),
		)
		n := 0
		for _, g := range d.grants {
			n = max(n, len(g.grants))
		}
		workers := make([]string, n)
		for i := range workers {
			workers[i] = strconv.Itoa(i)
		}
		bar.SetXAxis(workers)
		for _, g := range d.grants {
			data := make([]opts.BarData, len(g.grants))
			for i, v := range g.grants {
				data[i] = opts.BarData{Value: v}
			}
			bar.AddSeries(g.name, data)
		}
		page.AddCharts(bar)
	}

	var buf bytes.Buffer
	if err := page.Render(&buf); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	out := buf.Bytes()
	pre := "<pre style=\"font: 13px monospace; margin: 24px\">" + html.EscapeString(d.text) + "</pre>\n"
	if i := bytes.LastIndex(out, []byte("</body>")); i >= 0 {
		out = append(out[:i:i], append([]byte(pre), out[i:]...)...)
	} else {
		out = append(out, pre...)
	}
	_, err := w.Write(out)
	return err
}

func round3(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', 3, 64), 64)
	return f
}
