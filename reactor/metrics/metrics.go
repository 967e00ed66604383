// Package metrics exports a dflockd server's counters in the Prometheus
// format. It owns the metric names and nothing else: the counters live in
// the reactor (per event loop) and the lock table (per shard), where the
// request path updates them without locks or client_golang objects, and
// the Collector reads them only when Prometheus scrapes.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
)

// Source is what the Collector reads: a server and its lock table.
type Source interface {
	Metrics() reactor.Metrics
}

// CounterSource is the lock table side (lockcore.Table).
type CounterSource interface {
	Counters() lockcore.Counters
}

// Collector is a prometheus.Collector for one server and its table. Every
// value is computed at scrape time, and it keeps no state between scrapes:
// any number of Prometheus servers may scrape it and see the same series.
type Collector struct {
	srv   Source
	table CounterSource
}

// New returns a Collector for srv and table.
func New(srv Source, table CounterSource) *Collector {
	return &Collector{srv: srv, table: table}
}

const ns = "dflockd"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	dConnections  = desc("connections", "Open client connections by transport (plain or tls).", "transport")
	dAccepted     = desc("connections_accepted_total", "Client connections accepted and served: past the connection cap and the drain check (connections refused at the cap or out of descriptors, or closed while draining, are not counted).")
	dConnCap      = desc("connection_cap", "Effective connection cap: --max-connections or the open-file limit less a reserve, whichever is lower.")
	dRejections   = desc("rejections_total", "Requests and connections refused by a limit: max_locks and max_waiters (replies error_max_locks, error_max_waiters) and max_connections (connections closed at accept).", "reason")
	dCloses       = desc("connections_closed_total", "Connections the server closed, by reason: auth_failed, auth_timeout (no auth in time, TLS handshake included), read_timeout, line_too_long, write_timeout, inbound_cap, tls_handshake (failed). Closes by the client or the shutdown are not counted.", "reason")
	dRequests     = desc("requests_total", "Requests answered, by command and result (the reply status; command \"invalid\" for requests that did not decode).", "command", "result")
	dLatency      = desc("request_duration_seconds", "Server-side request latency by command: from reading the request to writing its reply, time parked on a lock excluded.", "command")
	dWait         = desc("parked_wait_seconds", "Time requests spent parked on a lock before their grant or timeout, by command.", "command")
	dGrants       = desc("grants_total", "Grants of locks and semaphore slots, immediate and handed off.", "namespace")
	dHandoffs     = desc("handoffs_total", "Grants handed to a queued waiter when a slot freed up.", "namespace")
	dExpiries     = desc("lease_expiries_total", "Leases that ran out before being released.", "namespace")
	dDisconnects  = desc("disconnect_releases_total", "Holdings released because their connection closed.", "namespace")
	dWaitTimeouts = desc("waiter_timeouts_total", "Queued waiters whose acquire timeout fired.", "namespace")
	dHeld         = desc("held", "Locks held and semaphore slots in use.", "namespace")
	dWaiters      = desc("waiters", "Queued waiters: parked acquires and two-phase enqueues.", "namespace")
	dParked       = desc("parked_requests", "Requests parked on a lock, waiting for a grant or their timeout.")
	dDirect       = desc("parked_results_direct_total", "Parked results (grants, timeouts) written to the socket by the goroutine that completed them, without waking the connection's event loop.")
	dKeys         = desc("keys", "Keys tracked (locks and semaphores, idle ones included).")
	dMaxLocks     = desc("max_locks", "The --max-locks budget for tracked keys (0 = unlimited).")
	dTimers       = desc("timers_pending", "Timers pending in the timing wheels: lockcore (acquire timeouts and leases) and connections (read and write timeouts; absent from a scrape in which an event loop did not answer in time).", "wheel")
	dBusy         = desc("event_loop_busy_seconds_total", "Time each event loop spent in the server's callbacks (reads, closes, results delivered on the loop) and connection-timer runs; its rate is the loop's busy ratio.", "loop")
	dDraining     = desc("draining", "1 while the server drains (shutting down; not accepting new work), else 0.")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		dConnections, dAccepted, dConnCap, dRejections, dCloses, dRequests, dLatency, dWait,
		dGrants, dHandoffs, dExpiries, dDisconnects, dWaitTimeouts, dHeld, dWaiters,
		dParked, dDirect, dKeys, dMaxLocks, dTimers, dBusy, dDraining,
	} {
		ch <- d
	}
}

var nsLabels = [2]string{lockcore.Locks: "lock", lockcore.Semaphores: "semaphore"}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	m := c.srv.Metrics()
	lc := c.table.Counters()

	// A closing TLS connection leaves the count a moment before the TLS
	// set: never report a negative plain count.
	gauge(ch, dConnections, float64(max(m.Connections-m.TLSConnections, 0)), "plain")
	gauge(ch, dConnections, float64(m.TLSConnections), "tls")
	counter(ch, dAccepted, float64(m.Accepted))
	gauge(ch, dConnCap, float64(m.ConnCap))
	var maxLocks, maxWaiters uint64
	for cmd := range m.Requests {
		maxLocks += m.Requests[cmd][codec.CodeErrorMaxLocks]
		maxWaiters += m.Requests[cmd][codec.CodeErrorMaxWaiters]
	}
	counter(ch, dRejections, float64(maxLocks), "max_locks")
	counter(ch, dRejections, float64(maxWaiters), "max_waiters")
	counter(ch, dRejections, float64(m.Refused), "max_connections")
	for r, n := range m.Closes {
		counter(ch, dCloses, float64(n), reactor.CloseReason(r).String())
	}
	draining := 0.0
	if m.Draining {
		draining = 1
	}
	gauge(ch, dDraining, draining)
	gauge(ch, dParked, float64(m.Parked))
	counter(ch, dDirect, float64(m.DirectResults))

	for cmd := range m.Requests {
		name := codec.Command(cmd).String()
		for code, n := range m.Requests[cmd] {
			// Only series that happened: 14 commands × 14 statuses would
			// be mostly zeros. Alert on rejections_total, always present.
			if n > 0 {
				counter(ch, dRequests, float64(n), name, codec.Code(code).String())
			}
		}
		if h := &m.Latency[cmd]; h.Count() > 0 {
			ch <- constHistogram(dLatency, h, &reactor.LatencyBounds, name)
		}
		if h := &m.Wait[cmd]; h.Count() > 0 {
			ch <- constHistogram(dWait, h, &reactor.WaitBounds, name)
		}
	}

	for i, l := range nsLabels {
		counter(ch, dGrants, float64(lc.Grants[i]), l)
		counter(ch, dHandoffs, float64(lc.Handoffs[i]), l)
		counter(ch, dExpiries, float64(lc.Expiries[i]), l)
		counter(ch, dDisconnects, float64(lc.DisconnectReleases[i]), l)
		counter(ch, dWaitTimeouts, float64(lc.WaiterTimeouts[i]), l)
		gauge(ch, dHeld, float64(lc.Held[i]), l)
		gauge(ch, dWaiters, float64(lc.Waiting[i]), l)
	}
	gauge(ch, dKeys, float64(lc.Keys))
	gauge(ch, dMaxLocks, float64(lc.MaxLocks))
	gauge(ch, dTimers, float64(lc.Timers), "lockcore")

	// A loop that did not answer in time (Timers -1) leaves the sum
	// unknown: skip the series for this scrape rather than report it low.
	connTimers, known := 0, true
	for _, l := range m.Loops {
		if l.Timers < 0 {
			known = false
		} else {
			connTimers += l.Timers
		}
		counter(ch, dBusy, l.Busy.Seconds(), strconv.Itoa(l.Index))
	}
	if known {
		gauge(ch, dTimers, float64(connTimers), "connections")
	}
}

func constHistogram(d *prometheus.Desc, h *reactor.Histogram, bounds *[reactor.HistogramBuckets]time.Duration, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		cum += h.Counts[i]
		buckets[b.Seconds()] = cum
	}
	count := cum + h.Counts[len(bounds)]
	return prometheus.MustNewConstHistogram(d, count, h.Sum.Seconds(), buckets, labels...)
}
