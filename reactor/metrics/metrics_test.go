package metrics_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
	"github.com/lockreactor/dflockd/reactor"
	"github.com/lockreactor/dflockd/reactor/metrics"
	"github.com/lockreactor/dflockd/reactor/reactortest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet's global goroutine pool (see reactor's TestMain).
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// scrape gathers reg into "name{k=v,...}" → value; a histogram gives
// its _count and _sum.
func scrape(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				name, labels, _ := strings.Cut(key, "{")
				if labels != "" {
					labels = "{" + labels
				}
				out[name+"_count"+labels] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+labels] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// waitMetric scrapes until series reaches want, failing after 10 s.
func waitMetric(t testing.TB, reg prometheus.Gatherer, series string, want float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := scrape(t, reg)
		if got[series] == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v; scrape:\n%v", series, got[series], want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func start(t *testing.T, tls bool, configure func(*reactortest.Config)) (*reactortest.Server, *prometheus.Registry) {
	srv := reactortest.Start(t, func(c *reactortest.Config) {
		c.Server.Metrics = true
		c.SelfSignedTLS = tls
		c.Core.MaxWaiters = 1
		if configure != nil {
			configure(c)
		}
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.New(srv.Server, srv.Table))
	return srv, reg
}

func req(cmd, result string) string {
	return fmt.Sprintf("dflockd_requests_total{command=%s,result=%s}", cmd, result)
}

// TestEvents drives each event once, scraping while the traffic runs, and
// checks that each moves its own series.
func TestEvents(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} {
		transport := map[bool]string{false: "plain", true: "tls"}[tls]
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			srv, reg := start(t, tls, nil)
			ok, timeout := codec.CodeOK.String(), codec.CodeTimeout.String()

			// A grant.
			holder := srv.Connect(t)
			tok := strings.Fields(holder.Do("l", "k", "10"))[1]
			m := scrape(t, reg)
			assert.Equal(t, 1.0, m[req("l", ok)])
			assert.Equal(t, 1.0, m["dflockd_grants_total{namespace=lock}"])
			assert.Equal(t, 1.0, m["dflockd_held{namespace=lock}"])
			assert.Equal(t, 1.0, m["dflockd_connections{transport="+transport+"}"])
			assert.Equal(t, 1.0, m["dflockd_timers_pending{wheel=lockcore}"], "the lease")
			assert.Equal(t, 1.0, m["dflockd_connections_accepted_total"])
			// The latency is recorded after the reply's write returns,
			// which may be after the client has read it.
			waitMetric(t, reg, "dflockd_request_duration_seconds_count{command=l}", 1)

			// A parked waiter, then a max-waiters rejection behind it.
			waiter := srv.Connect(t)
			waiter.Request("l", "k", "10")
			waitMetric(t, reg, "dflockd_parked_requests", 1)
			waitMetric(t, reg, "dflockd_waiters{namespace=lock}", 1)
			other := srv.Connect(t)
			require.Equal(t, codec.CodeErrorMaxWaiters.String(), other.Do("l", "k", "10"))
			m = scrape(t, reg)
			assert.Equal(t, 1.0, m["dflockd_rejections_total{reason=max_waiters}"])
			assert.Equal(t, 1.0, m[req("l", codec.CodeErrorMaxWaiters.String())])

			// Release: a hand-off to the waiter.
			require.Equal(t, ok, holder.Do("r", "k", tok))
			require.True(t, strings.HasPrefix(waiter.Line(), ok+" "))
			m = waitMetric(t, reg, "dflockd_handoffs_total{namespace=lock}", 1)
			assert.Equal(t, 2.0, m["dflockd_grants_total{namespace=lock}"])
			assert.Equal(t, 0.0, m["dflockd_waiters{namespace=lock}"])
			assert.Equal(t, 1.0, m[req("r", ok)])
			assert.Equal(t, 2.0, m[req("l", ok)])
			assert.Equal(t, 1.0, m["dflockd_parked_wait_seconds_count{command=l}"])

			// A timeout: parked behind the new holder for 1 s.
			other.Request("l", "k", "1")
			require.Equal(t, timeout, other.Line())
			m = waitMetric(t, reg, "dflockd_waiter_timeouts_total{namespace=lock}", 1)
			assert.Equal(t, 1.0, m[req("l", timeout)])
			assert.Equal(t, 2.0, m["dflockd_parked_wait_seconds_count{command=l}"])
			assert.GreaterOrEqual(t, m["dflockd_parked_wait_seconds_sum{command=l}"], 1.0)

			// A lease expiry: a 1 s lease left to run out.
			require.True(t, strings.HasPrefix(holder.Do("l", "short", "0 1"), ok+" "))
			waitMetric(t, reg, "dflockd_lease_expiries_total{namespace=lock}", 1)

			// A disconnect release: a semaphore slot holder goes away.
			sem := srv.Connect(t)
			require.True(t, strings.HasPrefix(sem.Do("sl", "s", "0 2"), ok+" "))
			waitMetric(t, reg, "dflockd_held{namespace=semaphore}", 1)
			require.NoError(t, sem.Close())
			m = waitMetric(t, reg, "dflockd_disconnect_releases_total{namespace=semaphore}", 1)
			assert.Equal(t, 0.0, m["dflockd_held{namespace=semaphore}"])

			// Errors by kind; stats and ping count too.
			require.Equal(t, codec.CodeError.String(), holder.Do("bogus", "k", "1"))
			require.Equal(t, codec.CodeError.String(), holder.Do("r", "nokey", strings.Repeat("0", 32)))
			require.Equal(t, ok, holder.Do("ping", "_", "_"))
			m = scrape(t, reg)
			assert.Equal(t, 1.0, m[req("invalid", codec.CodeError.String())])
			assert.Equal(t, 1.0, m[req("r", codec.CodeError.String())])
			assert.Equal(t, 1.0, m[req("ping", ok)])
			assert.Equal(t, 3.0, m["dflockd_keys"], "k, short (idle) and s (idle)")
			assert.Equal(t, 1024.0, m["dflockd_max_locks"])
			if !tls {
				assert.Greater(t, m["dflockd_event_loop_busy_seconds_total{loop=0}"], 0.0)
				assert.Greater(t, m["dflockd_timers_pending{wheel=connections}"], 0.0, "read timeouts")
			}
			assert.NotContains(t, m, "dflockd_event_loop_busy_ratio{loop=0}", "dropped: scrape-state dependent")
		})
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	srv, reg := start(t, false, func(c *reactortest.Config) {
		c.Core.MaxLocks = 1
		c.Server.MaxConnections = 1
	})
	c := srv.Connect(t)
	require.True(t, strings.HasPrefix(c.Do("l", "a", "0"), codec.CodeOK.String()+" "))
	require.Equal(t, codec.CodeErrorMaxLocks.String(), c.Do("l", "b", "0"))
	m := scrape(t, reg)
	assert.Equal(t, 1.0, m["dflockd_rejections_total{reason=max_locks}"])
	assert.Equal(t, 1.0, m["dflockd_keys"])
	assert.Equal(t, 1.0, m["dflockd_max_locks"])

	// A second connection is over --max-connections: closed at accept,
	// and not counted as accepted.
	srv.Dial(t).Closed(5 * time.Second)
	m = waitMetric(t, reg, "dflockd_rejections_total{reason=max_connections}", 1)
	assert.Equal(t, 1.0, m["dflockd_connections_accepted_total"])
}

// Closes by the server are exported by reason, every reason always.
func TestClosesExported(t *testing.T) {
	t.Parallel()
	srv, reg := start(t, false, func(c *reactortest.Config) { c.Server.ReadTimeout = 100 * time.Millisecond })
	c := srv.Connect(t)
	require.Equal(t, codec.CodeError.String(), c.Line())
	c.Closed(5 * time.Second)
	m := waitMetric(t, reg, "dflockd_connections_closed_total{reason=read_timeout}", 1)
	for r := range reactor.NumCloseReasons {
		if r != reactor.CloseReadTimeout {
			name := "dflockd_connections_closed_total{reason=" + r.String() + "}"
			require.Contains(t, m, name)
			assert.Zero(t, m[name], name)
		}
	}
}

// fakeSource serves fixed figures to a Collector.
type fakeSource struct{ m reactor.Metrics }

func (f fakeSource) Metrics() reactor.Metrics { return f.m }

type fakeTable struct{}

func (fakeTable) Counters() lockcore.Counters { return lockcore.Counters{} }

// TestConnectionTimersUnknown: when an event loop does not answer the
// timer-count request in time, the connections wheel's series is left out
// of the scrape instead of reporting a sum that is too low; the other
// series stay.
func TestConnectionTimersUnknown(t *testing.T) {
	t.Parallel()
	const series = "dflockd_timers_pending{wheel=connections}"
	gather := func(loops ...reactor.LoopMetrics) map[string]float64 {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(metrics.New(fakeSource{reactor.Metrics{Loops: loops}}, fakeTable{}))
		return scrape(t, reg)
	}
	m := gather(reactor.LoopMetrics{Index: 0, Timers: 3}, reactor.LoopMetrics{Index: 1, Timers: 4})
	assert.Equal(t, 7.0, m[series])
	m = gather(reactor.LoopMetrics{Index: 0, Timers: 3}, reactor.LoopMetrics{Index: 1, Timers: -1, Busy: time.Second})
	assert.NotContains(t, m, series)
	assert.Contains(t, m, "dflockd_timers_pending{wheel=lockcore}")
	assert.Equal(t, 1.0, m["dflockd_event_loop_busy_seconds_total{loop=1}"])
	m = gather()
	assert.Equal(t, 0.0, m[series])
	assert.Contains(t, m, series, "no loops yet: 0, known")
}

func TestDraining(t *testing.T) {
	t.Parallel()
	srv, reg := start(t, false, nil)
	assert.Equal(t, 0.0, scrape(t, reg)["dflockd_draining"])
	go func() { _ = srv.Shutdown(t.Context()) }()
	waitMetric(t, reg, "dflockd_draining", 1)
}

// TestLint runs the exposition through promlint (what `promtool check
// metrics` checks) with every series present, and checks it against a
// pedantic registry (descriptors match what is collected).
func TestLint(t *testing.T) {
	t.Parallel()
	srv, reg := start(t, false, nil)
	c := srv.Connect(t)
	c.Request("l", "k", "0")
	c.Line()
	c.Request("l", "k", "1") // parks and times out: the wait histogram
	c.Line()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	m := scrape(t, reg)
	assert.Contains(t, m, "dflockd_parked_wait_seconds_count{command=l}")
	assert.Contains(t, m, "go_goroutines")
}

// TestMetricsOff: without Config.Metrics no request series appear, and
// the lock table's figures still do.
func TestMetricsOff(t *testing.T) {
	t.Parallel()
	srv, reg := start(t, false, func(c *reactortest.Config) { c.Server.Metrics = false })
	c := srv.Connect(t)
	require.True(t, strings.HasPrefix(c.Do("l", "k", "0"), codec.CodeOK.String()+" "))
	m := scrape(t, reg)
	assert.NotContains(t, m, req("l", codec.CodeOK.String()))
	assert.Equal(t, 1.0, m["dflockd_grants_total{namespace=lock}"])
	assert.Empty(t, srv.Metrics().Loops)
}

// TestHistogramBounds: the bound arrays are increasing, so observe's
// linear scan finds the right bucket.
func TestHistogramBounds(t *testing.T) {
	for _, b := range [][reactor.HistogramBuckets]time.Duration{reactor.LatencyBounds, reactor.WaitBounds} {
		for i := 1; i < len(b); i++ {
			assert.Less(t, b[i-1], b[i])
		}
	}
	// Every command and status fits the counters.
	assert.Equal(t, "invalid", codec.Command(reactor.NumCommands).String())
	assert.Len(t, codec.Codes(), reactor.NumCodes-1)
}
