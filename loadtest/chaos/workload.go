package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// Config is one chaos run.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// Seed makes the run's random choices reproducible (the interleaving
	// with the server is not).
	Seed int64
	// Clients is the number of concurrent workers, one connection each at
	// a time (default 64).
	Clients int
	// Ops bounds the requests sent (default 20,000); Duration bounds the
	// run's time (default 1 minute). The run ends at whichever comes first.
	Ops      int
	Duration time.Duration
	// KeyPrefix is put in front of every key, so runs against one server
	// do not share keys.
	KeyPrefix string
	// Locks is the number of lock keys (default 8); SemLimits gives one
	// semaphore key per entry with that limit (default 2, 2, 3).
	Locks     int
	SemLimits []int64
	// DefaultLease is the server's default lease in seconds (default 33).
	DefaultLease int64
	// Slack is how long past a request's own timeout a reply may take
	// before it counts as missing (default 20s).
	Slack time.Duration
}

func (c *Config) setDefaults() {
	if c.Clients <= 0 {
		c.Clients = 64
	}
	if c.Ops <= 0 {
		c.Ops = 20_000
	}
	if c.Duration <= 0 {
		c.Duration = time.Minute
	}
	if c.Locks <= 0 {
		c.Locks = 8
	}
	if c.SemLimits == nil {
		c.SemLimits = []int64{2, 2, 3}
	}
	if c.DefaultLease <= 0 {
		c.DefaultLease = 33
	}
	if c.Slack <= 0 {
		c.Slack = 20 * time.Second
	}
}

// Stats counts what a run did.
type Stats struct {
	Ops, Grants, Queued, Timeouts, Expired, Disconnects, Garbage, Bursts int64
}

// Run drives the server at cfg.Addr with the chaos workload until cfg.Ops
// requests have been sent, cfg.Duration has passed or ctx ends, closes
// every connection it opened, and returns the history. An error means the
// run itself could not proceed (the server refused connections); protocol
// misbehaviour is recorded in the history for the checkers.
func Run(ctx context.Context, cfg Config) (*History, Stats, error) {
	cfg.setDefaults()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	r := &run{cfg: cfg, start: time.Now(), pastLease: map[string]int64{}}
	r.h = &History{Seed: cfg.Seed, DefaultLease: cfg.DefaultLease, Limits: map[string]int64{}, Conns: map[int32]ConnEnd{}}
	for i := range cfg.Locks {
		r.locks = append(r.locks, fmt.Sprintf("%sL%d", cfg.KeyPrefix, i))
	}
	for i, l := range cfg.SemLimits {
		k := fmt.Sprintf("%sS%d", cfg.KeyPrefix, i)
		r.sems = append(r.sems, k)
		r.h.Limits[k] = l
	}
	setup, err := r.createSems()
	if err != nil {
		return nil, Stats{}, err
	}
	var wg sync.WaitGroup
	workers := make([]*worker, cfg.Clients, cfg.Clients+1)
	errs := make(chan error, cfg.Clients)
	for i := range workers {
		w := &worker{r: r, id: int32(i), rng: rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)))}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.loop(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	workers = append(workers, setup)
	var ops []Op
	for _, w := range workers {
		ops = append(ops, w.ops...)
		r.h.Recorded = append(r.h.Recorded, w.recorded...)
		for id, e := range w.ends {
			r.h.Conns[id] = e
		}
	}
	// Renumber in (connection, send) order: IDs follow each connection's
	// request order, which the checkers rely on.
	sort.SliceStable(ops, func(i, j int) bool {
		if ops[i].Conn != ops[j].Conn {
			return ops[i].Conn < ops[j].Conn
		}
		return ops[i].ID < ops[j].ID
	})
	old := make(map[int]int, len(ops))
	for i := range ops {
		old[ops[i].ID] = i
		ops[i].ID = i
	}
	for i := range r.h.Recorded {
		for j, id := range r.h.Recorded[i].Ops {
			r.h.Recorded[i].Ops[j] = old[id]
		}
	}
	r.h.Ops = ops
	st := r.stats
	st.Ops = int64(len(ops))
	return r.h, st, <-errs
}

type run struct {
	cfg         Config
	start       time.Time
	h           *History
	locks, sems []string
	sent        atomic.Int64 // requests sent (the Ops budget)
	nextConn    atomic.Int32
	nextOp      atomic.Int64
	// pastLease holds, per resource, when the hold kept past its lease
	// there ends (run time). Each blocks its key for over a second, so at
	// most maxPastLease keys, one hold each, are blocked at a time.
	pastLease   map[string]int64
	pastLeaseMu sync.Mutex
	stats       Stats
	statsMu     sync.Mutex
}

// maxPastLease bounds the keys blocked at once by holds kept past their
// lease.
const maxPastLease = 8

// reservePastLease reserves res for a hold kept past its lease until
// until, if res has none and fewer than maxPastLease keys are reserved.
func (r *run) reservePastLease(res string, now, until int64) bool {
	r.pastLeaseMu.Lock()
	defer r.pastLeaseMu.Unlock()
	n := 0
	for k, end := range r.pastLease {
		if end <= now {
			delete(r.pastLease, k)
			continue
		}
		if k == res {
			return false
		}
		n++
	}
	if n >= maxPastLease {
		return false
	}
	r.pastLease[res] = until
	return true
}

func (r *run) now() int64 { return int64(time.Since(r.start)) }

// createSems creates each semaphore key with its limit (sl with timeout 0,
// then sr) before the workers start, on a connection of its own whose ops
// join the history. The first request for a key fixes its limit while the
// key exists, so the workers' deliberate limit mismatches (sl/se with
// limit+1) cannot give a key the wrong limit; if the server drops an idle
// key and a mismatch recreates it, the checkers judge each grant by the
// limit its own request asked for.
func (r *run) createSems() (*worker, error) {
	w := &worker{r: r, id: int32(r.cfg.Clients), rng: rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(r.cfg.Clients))),
		ends: map[int32]ConnEnd{}}
	if len(r.sems) == 0 {
		return w, nil
	}
	if err := w.connect(); err != nil {
		return nil, err
	}
	for _, k := range r.sems {
		o := w.newOp(KindRequest, codec.CmdSemLock, k)
		o.Limit, o.Lease = r.h.Limits[k], 1
		if !w.exchange([]int{len(w.ops) - 1}, r.cfg.Slack) {
			return w, nil
		}
		for len(w.holds) > 0 {
			hd := w.holds[0]
			w.holds = w.holds[1:]
			w.release(hd)
			if w.nc == nil {
				return w, nil
			}
		}
	}
	w.leave(false)
	return w, nil
}

func (r *run) count(f func(*Stats)) {
	r.statsMu.Lock()
	f(&r.stats)
	r.statsMu.Unlock()
}

// held is a grant the worker holds.
type held struct {
	cmd   codec.Command // the acquiring command's namespace (l or sl)
	key   string
	token codec.Token
	due   int64 // when to release it (run time)
}

type worker struct {
	r        *run
	id       int32
	rng      *rand.Rand
	nc       net.Conn
	br       *bufio.Reader
	conn     int32
	holds    []held
	enq      map[string]bool // keys with an e/se not yet followed by w/sw
	ops      []Op
	recorded []Violation
	ends     map[int32]ConnEnd
	buf      []byte
}

func (w *worker) loop(ctx context.Context) error {
	w.ends = map[int32]ConnEnd{}
	defer w.disconnect(false)
	for ctx.Err() == nil && w.r.sent.Load() < int64(w.r.cfg.Ops) {
		if w.nc == nil {
			if err := w.connect(); err != nil {
				return err
			}
		}
		w.step()
	}
	if w.nc != nil {
		w.checkQuiet()
	}
	return nil
}

func (w *worker) connect() error {
	nc, err := net.DialTimeout("tcp", w.r.cfg.Addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("chaos: dial: %w", err)
	}
	w.nc = nc
	w.br = bufio.NewReaderSize(nc, 4096)
	w.conn = w.r.nextConn.Add(1)
	w.holds = w.holds[:0]
	w.enq = map[string]bool{}
	return nil
}

// disconnect closes the connection, with a TCP reset when reset is set,
// recording the close time: every hold of it ends no earlier.
func (w *worker) disconnect(reset bool) {
	if w.nc == nil {
		return
	}
	if tc, ok := w.nc.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	w.ends[w.conn] = ConnEnd{At: w.r.now(), ByClient: true}
	_ = w.nc.Close()
	w.nc = nil
	w.holds = w.holds[:0]
}

// leave closes a connection with no request outstanding. Before a plain
// close it mostly sends a last ping, which must be answered by exactly one
// ok with nothing after it: a reply duplicated late on the connection
// shows up as a wrong reply to the ping or as bytes after its ok.
func (w *worker) leave(reset bool) {
	if !reset && w.pick(500) {
		w.newOp(KindRequest, codec.CmdPing, "_")
		if !w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack) {
			return
		}
		w.checkQuiet()
	}
	w.disconnect(reset)
}

// serverClosed records a connection the server closed; at is a lower bound
// of when it did.
func (w *worker) serverClosed(at int64) {
	w.ends[w.conn] = ConnEnd{At: at}
	_ = w.nc.Close()
	w.nc = nil
	w.holds = w.holds[:0]
}

// checkQuiet verifies that nothing more arrives on an idle connection: a
// reply with no request would.
func (w *worker) checkQuiet() {
	_ = w.nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if line, _ := w.br.ReadString('\n'); line != "" {
		w.recorded = append(w.recorded, Violation{Check: "replies",
			Msg: fmt.Sprintf("conn %d: reply %q with no request", w.conn, line)})
	}
}

func (w *worker) newOp(kind Kind, cmd codec.Command, key string) *Op {
	w.ops = append(w.ops, Op{ID: int(w.r.nextOp.Add(1)), Client: w.id, Conn: w.conn, Kind: kind, Cmd: cmd, Key: key})
	return &w.ops[len(w.ops)-1]
}

func (w *worker) pick(p int) bool { return w.rng.IntN(1000) < p }

// pastLeasePermille is the chance (per mille) that a grant with a 1 s
// lease is kept past it, when reservePastLease allows.
const pastLeasePermille = 200

func (w *worker) lockKey() string { return w.r.locks[w.rng.IntN(len(w.r.locks))] }
func (w *worker) semKey() string  { return w.r.sems[w.rng.IntN(len(w.r.sems))] }

// acquireOp makes an l or sl request.
func (w *worker) acquireOp(timeout int64) (int, codec.Command) {
	lease := int64(1 + w.rng.IntN(3))
	if w.pick(30) {
		lease = 0 // the server default
	}
	var i int
	if w.rng.IntN(3) == 0 && len(w.r.sems) > 0 {
		k := w.semKey()
		limit := w.r.h.Limits[k]
		if w.pick(10) {
			limit++ // error_limit_mismatch
		}
		w.newOp(KindRequest, codec.CmdSemLock, k)
		i = len(w.ops) - 1
		w.ops[i].Limit = limit
	} else {
		w.newOp(KindRequest, codec.CmdLock, w.lockKey())
		i = len(w.ops) - 1
	}
	if timeout > 0 && w.pick(900) {
		// Waiting on a key this connection holds waits for its own lease.
		for _, hd := range w.holds {
			if hd.key == w.ops[i].Key && hd.cmd.IsSemaphore() == w.ops[i].Cmd.IsSemaphore() {
				timeout = 0
			}
		}
	}
	w.ops[i].Timeout = timeout
	w.ops[i].Lease = lease
	return i, w.ops[i].Cmd
}

func (w *worker) timeout() int64 {
	if len(w.holds) > 0 && w.pick(950) {
		return 0 // rarely wait on one key while holding another
	}
	switch n := w.rng.IntN(20); {
	case n < 14:
		return 0
	case n < 19:
		return 1
	default:
		return 2
	}
}

// step does one random action.
func (w *worker) step() {
	now := w.r.now()
	// Release or renew a hold that is due.
	for i := range w.holds {
		if w.holds[i].due <= now {
			hd := w.holds[i]
			if w.pick(200) {
				w.renew(i)
				return
			}
			w.holds = append(w.holds[:i], w.holds[i+1:]...)
			w.release(hd)
			return
		}
	}
	switch n := w.rng.IntN(1000); {
	case n < 330:
		timeout := w.timeout()
		i, _ := w.acquireOp(timeout)
		w.exchange([]int{i}, w.replyWait(timeout))
	case n < 430:
		w.twoPhase()
	case n < 480:
		if len(w.holds) > 0 {
			w.renew(w.rng.IntN(len(w.holds)))
		}
	case n < 560:
		w.newOp(KindRequest, codec.CmdPing, "_")
		w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack)
	case n < 575:
		w.newOp(KindRequest, codec.CmdStats, "_")
		w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack)
	case n < 640:
		w.burst()
	case n < 655:
		w.parkThenLeave()
	case n < 665:
		w.r.count(func(s *Stats) { s.Disconnects++ })
		w.leave(w.pick(500))
	case n < 685:
		w.garbage()
	case n < 687:
		w.overlong()
	case n < 697:
		// w/sw without e/se: error_not_enqueued (or a w of a pending e).
		cmd, key := codec.CmdWait, w.lockKey()
		if w.pick(300) {
			cmd, key = codec.CmdSemWait, w.semKey()
		}
		o := w.newOp(KindRequest, cmd, key)
		o.Timeout = 0
		delete(w.enq, resource(cmd, key))
		w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack)
	default:
		// Let holds age a little: most are released within milliseconds.
		time.Sleep(time.Duration(w.rng.IntN(2000)) * time.Microsecond)
	}
}

func (w *worker) replyWait(timeout int64) time.Duration {
	return time.Duration(timeout)*time.Second + w.r.cfg.Slack
}

// holdFor is how long to keep a fresh grant of res: mostly a few
// milliseconds, now and then past its lease (a few keys at a time,
// run-wide).
func (w *worker) holdFor(res string, lease int64) int64 {
	now := w.r.now()
	if lease == 1 && w.pick(pastLeasePermille) {
		d := secs(lease) + int64(30+w.rng.IntN(250))*int64(time.Millisecond)
		if w.r.reservePastLease(res, now, now+d) {
			w.r.count(func(s *Stats) { s.Expired++ })
			return d
		}
	}
	if w.pick(200) {
		return int64(5+w.rng.IntN(30)) * int64(time.Millisecond)
	}
	return int64(w.rng.IntN(3000)) * int64(time.Microsecond)
}

func (w *worker) release(hd held) {
	cmd := codec.CmdRelease
	if hd.cmd.IsSemaphore() {
		cmd = codec.CmdSemRelease
	}
	o := w.newOp(KindRequest, cmd, hd.key)
	o.Token = hd.token
	w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack)
}

func (w *worker) renew(i int) {
	hd := w.holds[i]
	cmd := codec.CmdRenew
	if hd.cmd.IsSemaphore() {
		cmd = codec.CmdSemRenew
	}
	o := w.newOp(KindRequest, cmd, hd.key)
	o.Token = hd.token
	o.Lease = int64(1 + w.rng.IntN(3))
	if w.pick(100) {
		o.Lease = 0
	}
	w.holds[i].due = w.r.now() + int64(w.rng.IntN(30))*int64(time.Millisecond)
	w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack)
}

// twoPhase sends e/se and, mostly at once, the w/sw that follows it.
func (w *worker) twoPhase() {
	cmd, key, limit := codec.CmdEnqueue, w.lockKey(), int64(0)
	if w.pick(350) && len(w.r.sems) > 0 {
		cmd, key = codec.CmdSemEnqueue, w.semKey()
		limit = w.r.h.Limits[key]
	}
	res := resource(cmd, key)
	o := w.newOp(KindRequest, cmd, key)
	o.Limit = limit
	o.Lease = int64(1 + w.rng.IntN(3))
	if !w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack) {
		return
	}
	rep := w.ops[len(w.ops)-1].Reply
	switch rep.Code {
	case codec.CodeAcquired, codec.CodeQueued:
		w.enq[res] = true
	default:
		return
	}
	if w.pick(50) {
		// Something else in between; a second e is error_already_enqueued.
		if w.pick(500) {
			o := w.newOp(KindRequest, cmd, key)
			o.Limit, o.Lease = limit, 1
		} else {
			w.newOp(KindRequest, codec.CmdPing, "_")
		}
		if !w.exchange([]int{len(w.ops) - 1}, w.r.cfg.Slack) {
			return
		}
	}
	if w.pick(20) {
		w.r.count(func(s *Stats) { s.Disconnects++ })
		w.leave(w.pick(500)) // leave while queued
		return
	}
	wcmd := codec.CmdWait
	if cmd == codec.CmdSemEnqueue {
		wcmd = codec.CmdSemWait
	}
	timeout := w.timeout()
	o = w.newOp(KindRequest, wcmd, key)
	o.Timeout = timeout
	delete(w.enq, res)
	w.exchange([]int{len(w.ops) - 1}, w.replyWait(timeout))
}

// parkThenLeave sends a blocking acquire and closes the connection (plain
// or reset) if it has not been answered within a few milliseconds: a
// disconnect while parked (or while holding, if it was granted).
func (w *worker) parkThenLeave() {
	i, _ := w.acquireOp(int64(1 + w.rng.IntN(2)))
	w.r.count(func(s *Stats) { s.Disconnects++ })
	w.exchange([]int{i}, time.Duration(w.rng.IntN(60))*time.Millisecond)
	if w.nc != nil {
		w.disconnect(w.pick(500))
	}
}

var garbageRequests = []string{
	"l\n%s\nabc\n",                     // bad integer
	"zz\n%s\n1\n",                      // unknown command
	"l\n\n1\n",                         // empty key
	"sl\n%s\n0 0\n",                    // limit 0
	"n\n%s\nnot-a-token\n",             // bad token
	"l\n%s x\n1\n",                     // key with a space
	"l\n%s\n1 2 3\n",                   // too many arguments
	"e\n%s\n-1\n",                      // negative lease
	"sw\n%s\n\n",                       // missing timeout
	"r\n%s\n\n",                        // empty token
	"l\n%s\n99999999999999999999999\n", // overflow
}

func (w *worker) garbage() {
	g := garbageRequests[w.rng.IntN(len(garbageRequests))]
	if strings.Contains(g, "%s") {
		g = fmt.Sprintf(g, w.lockKey())
	}
	w.r.count(func(s *Stats) { s.Garbage++ })
	w.newOp(KindGarbage, codec.CmdInvalid, "")
	w.exchangeRaw([]int{len(w.ops) - 1}, []byte(g), w.r.cfg.Slack)
}

// overlong sends a line over 256 bytes: error, then the server closes.
func (w *worker) overlong() {
	w.r.count(func(s *Stats) { s.Garbage++ })
	w.newOp(KindOverlong, codec.CmdInvalid, "")
	i := len(w.ops) - 1
	line := append([]byte("l\n"), strings.Repeat("k", 257+w.rng.IntN(200))...)
	if w.pick(500) {
		line = append(line, '\n')
	}
	if !w.exchangeRaw([]int{i}, line, w.r.cfg.Slack) {
		return
	}
	// The server must close now: its close is no earlier than our send.
	_ = w.nc.SetReadDeadline(time.Now().Add(w.r.cfg.Slack))
	extra, err := w.br.ReadString('\n')
	if err == nil || extra != "" {
		w.recorded = append(w.recorded, Violation{Check: "replies", Ops: []int{w.ops[i].ID},
			Msg: fmt.Sprintf("conn %d: %q after the reply to an over-long line (want a close)", w.conn, extra)})
	}
	w.serverClosed(w.ops[i].Invoke)
}

// burst pipelines several non-blocking requests in one write.
func (w *worker) burst() {
	w.r.count(func(s *Stats) { s.Bursts++ })
	n := 2 + w.rng.IntN(14)
	var idx []int
	released := map[codec.Token]bool{}
	for range n {
		switch k := w.rng.IntN(10); {
		case k < 4:
			i, _ := w.acquireOp(0)
			idx = append(idx, i)
		case k < 6 && len(w.holds) > 0:
			j := w.rng.IntN(len(w.holds))
			hd := w.holds[j]
			if released[hd.token] {
				continue
			}
			released[hd.token] = true
			w.holds = append(w.holds[:j], w.holds[j+1:]...)
			cmd := codec.CmdRelease
			if hd.cmd.IsSemaphore() {
				cmd = codec.CmdSemRelease
			}
			o := w.newOp(KindRequest, cmd, hd.key)
			o.Token = hd.token
			idx = append(idx, len(w.ops)-1)
		case k < 7 && len(w.holds) > 0:
			hd := w.holds[w.rng.IntN(len(w.holds))]
			cmd := codec.CmdRenew
			if hd.cmd.IsSemaphore() {
				cmd = codec.CmdSemRenew
			}
			o := w.newOp(KindRequest, cmd, hd.key)
			o.Token, o.Lease = hd.token, int64(1+w.rng.IntN(3))
			idx = append(idx, len(w.ops)-1)
		case k < 9:
			w.newOp(KindRequest, codec.CmdPing, "_")
			idx = append(idx, len(w.ops)-1)
		default:
			w.newOp(KindRequest, codec.CmdStats, "_")
			idx = append(idx, len(w.ops)-1)
		}
	}
	if len(idx) > 0 {
		w.exchange(idx, w.r.cfg.Slack)
	}
}

// exchange sends the requests w.ops[idx...] in one write and reads their
// replies, waiting up to wait for each. It reports whether the connection
// is still open.
func (w *worker) exchange(idx []int, wait time.Duration) bool {
	w.buf = w.buf[:0]
	for _, i := range idx {
		o := &w.ops[i]
		req := codec.Request{Cmd: o.Cmd, Key: []byte(o.Key), Timeout: o.Timeout, Limit: o.Limit, Lease: o.Lease, Token: o.Token}
		w.buf = codec.AppendRequest(w.buf, &req)
	}
	return w.exchangeRaw(idx, w.buf, wait)
}

func (w *worker) exchangeRaw(idx []int, payload []byte, wait time.Duration) bool {
	w.r.sent.Add(int64(len(idx)))
	now := w.r.now()
	for _, i := range idx {
		w.ops[i].Invoke = now
	}
	_ = w.nc.SetWriteDeadline(time.Now().Add(w.r.cfg.Slack))
	if _, err := w.nc.Write(payload); err != nil {
		// The server closed the connection under us: none of these
		// requests can be answered.
		for _, i := range idx {
			w.ops[i].Status = Missing
		}
		w.serverClosed(w.lastHandled())
		return false
	}
	for k, i := range idx {
		o := &w.ops[i]
		_ = w.nc.SetReadDeadline(time.Now().Add(wait))
		line, err := w.br.ReadString('\n')
		if err != nil {
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			for _, j := range idx[k:] {
				if timedOut && wait >= w.r.cfg.Slack || !timedOut {
					w.ops[j].Status = Missing
				} else {
					w.ops[j].Status = Abandoned // parkThenLeave gave up on it
				}
			}
			if timedOut {
				// Hand the connection back to parkThenLeave (short waits);
				// a real miss is closed here.
				if wait >= w.r.cfg.Slack {
					w.disconnect(false)
				}
			} else {
				w.serverClosed(w.lastHandled())
			}
			return false
		}
		o.Return = w.r.now()
		o.Status = Replied
		w.record(o, line)
	}
	return true
}

// lastHandled is the send time of the last request of the connection the
// server answered: the server closed it no earlier.
func (w *worker) lastHandled() int64 {
	for i := len(w.ops) - 1; i >= 0; i-- {
		o := &w.ops[i]
		if o.Conn != w.conn {
			break
		}
		if o.Status == Replied {
			return o.Invoke
		}
	}
	return 0
}

// record parses a reply and updates the worker's holds.
func (w *worker) record(o *Op, line string) {
	line = strings.TrimSuffix(line, "\n")
	if !codec.ParseReply([]byte(line), &o.Reply) {
		o.Raw = line
		if o.Raw == "" {
			o.Raw = "\n"
		}
		return
	}
	o.Reply.Body = nil
	if o.Cmd == codec.CmdStats && o.Reply.Code == codec.CodeOK && strings.HasPrefix(line, "ok {") {
		o.Reply.Body = []byte{}
	}
	if o.Kind != KindRequest {
		return
	}
	switch o.Reply.Code {
	case codec.CodeTimeout:
		w.r.count(func(s *Stats) { s.Timeouts++ })
	case codec.CodeQueued:
		w.r.count(func(s *Stats) { s.Queued++ })
	}
	if !isGrant(o) {
		return
	}
	w.r.count(func(s *Stats) { s.Grants++ })
	for _, hd := range w.holds {
		if hd.token == o.Reply.Token {
			return // w after a fast-path acquired: the same hold
		}
	}
	cmd := codec.CmdLock
	if o.Cmd.IsSemaphore() {
		cmd = codec.CmdSemLock
	}
	w.holds = append(w.holds, held{cmd: cmd, key: o.Key, token: o.Reply.Token, due: w.r.now() + w.holdFor(resource(o.Cmd, o.Key), o.Reply.Lease)})
}

// Add adds o's counts to s.
func (s *Stats) Add(o Stats) {
	s.Ops += o.Ops
	s.Grants += o.Grants
	s.Timeouts += o.Timeouts
	s.Expired += o.Expired
	s.Disconnects += o.Disconnects
	s.Queued += o.Queued
	s.Garbage += o.Garbage
	s.Bursts += o.Bursts
}

func (s Stats) String() string {
	return fmt.Sprintf("%d ops, %d grants, %d queued, %d timeouts, %d holds past lease, %d disconnects, %d garbage, %d bursts",
		s.Ops, s.Grants, s.Queued, s.Timeouts, s.Expired, s.Disconnects, s.Garbage, s.Bursts)
}
