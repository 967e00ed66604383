package reactor

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/lockreactor/dflockd/codec"
	"github.com/lockreactor/dflockd/lockcore"
)

// FuzzSessions feeds one byte stream to several sessions over one lock
// table, in-process (no sockets, a fake clock): each session gets the
// whole stream, split at its own random points, the sessions interleaved
// at random, time advancing between steps so that timeouts, leases and
// read timeouts fire. After every step it asserts that every reply line
// is one the protocol allows for the request it answers, that the session
// answered request by request (one reply per request, only a parked
// request's reply outstanding) or closed after error for an over-long
// line (error_auth before authentication), and that the core's invariants
// hold. At the end every session closes and the table must be empty of
// holders and waiters.
//
// Real tokens carry random salts, so the stream names them by placeholder
// (see placeholder): before a chunk is handed to a session, each
// placeholder in it is replaced by a token granted earlier in the run, so
// releases and renewals can succeed; any other token is sent as it is.
func FuzzSessions(f *testing.F) {
	for _, s := range fuzzSessionSeeds {
		for _, mode := range fuzzSessionModes {
			f.Add(mode, []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		if len(data) > 8<<10 {
			return
		}
		runSessionFuzz(t, mode, data)
	})
}

// fuzzSessionModes are the seed modes: one session (0; 0x35: with auth,
// output limit 16 and MaxWaiters 3), two (0x40), four (0xC0), four without
// auto-release (0xC2).
var fuzzSessionModes = []byte{0, 0x35, 0x40, 0xC0, 0xC2}

// placeholderPrefix is the hex of "placeholder" (11 bytes, 22 hex digits).
const placeholderPrefix = "706c616365686f6c646572"

// placeholder is a token in the stream that the harness replaces with a
// token granted earlier in the run: the i-th (mod their number) granted to
// the session reading it when own is set, else to any session. Its 32 hex
// digits are "placeholder" in hex, 0 or 1 (own), and i in 9 hex digits.
// With no such grant yet it is sent as it is (a token never granted).
func placeholder(i int, own bool) string {
	scope := "0"
	if own {
		scope = "1"
	}
	return fmt.Sprintf("%s%s%09x", placeholderPrefix, scope, i)
}

// fuzzSessionSeeds are the seed streams.
var fuzzSessionSeeds = []string{
	"l\nk\n1 1\nl\nk\n0\nr\nk\n00000000000000010000000000000000\nping\n_\n_\n",
	"e\nk\n\nw\nk\n1\ne\nk\n2\nsw\nk\n0\n",
	"sl\ns\n1 2 1\nsl\ns\n0 3\nse\ns\n2\nsw\ns\n1\nsr\ns\nffffffffffffffff0000000000000000\n",
	"n\nk\n00000000000000010000000000000000 5\nsn\ns\n00000000000000010000000000000000\nstats\n_\n_\n",
	"l\r\nk\r\n0 1\r\nping\n\n\n" + "l\nk\n" + string(bytes.Repeat([]byte("x"), 300)) + "\n",
	"auth\n_\nsecret\nl\nk\n2 1\nauth\n_\nsecret\n",
	"l\nk\nabc\nzz\nk\n1\nl\n\n1\nsl\nk\n0 0\nl\nk\n1 2 3\ne\nk\n-1\n",
	"l\na\n0 1\nl\nb\n0 1\nl\nc\n0 1\nl\nd\n0 1\nl\ne\n0 1\nl\nf\n0 1\n",
	// Placeholders: own and others' tokens released and renewed, in the
	// right and the wrong namespace.
	"l\nk\n0 5\nn\nk\n" + placeholder(0, true) + " 3\nr\nk\n" + placeholder(0, true) + "\nr\nk\n" + placeholder(0, true) + "\n",
	"sl\ns\n0 2 5\nsn\ns\n" + placeholder(0, true) + "\nsr\ns\n" + placeholder(0, true) + "\nr\ns\n" + placeholder(0, true) + "\n",
	"e\nk\n5\nw\nk\n1\nn\nk\n" + placeholder(0, true) + "\nping\n_\n_\nr\nk\n" + placeholder(0, true) + "\n",
	"l\nk\n0 5\nl\nj\n1 4\nr\nk\n" + placeholder(0, false) + "\nsn\nk\n" + placeholder(1, false) + " 2\nn\nj\n" + placeholder(1, false) + "\nr\nj\n" + placeholder(1, true) + "\n",
	"se\ns\n3 5\nsw\ns\n1\nsl\ns\n0 3\nsn\ns\n" + placeholder(1, true) + "\nsr\ns\n" + placeholder(0, true) + "\nsr\ns\n" + placeholder(1, false) + "\n",
}

const fuzzSecret = "secret"

// fakeTransport records wakes.
type fakeTransport struct{ woken bool }

func (f *fakeTransport) wake() { f.woken = true }

type fuzzSession struct {
	s      session
	tr     fakeTransport
	pos    int    // next byte of the stream to deliver
	in     []byte // delivered, not yet consumed
	expect []expectedReply
	authed bool
	done   bool
	// granted: the tokens granted to this session, in order.
	granted []codec.Token
}

type expectedReply struct {
	cmd     codec.Command // CmdInvalid: a malformed request
	closing bool          // the reply ends the connection
	authErr bool          // must be error_auth
	auth    bool          // a correct auth before authentication: ok
}

type sessionFuzzer struct {
	t      *testing.T
	srv    *Server
	tbl    *lockcore.Table
	now    int64
	rng    *rand.Rand
	data   []byte
	holes  []int // offsets of the placeholders in data
	maxOut int
	ss     []*fuzzSession
	// granted: every token granted so far, in order.
	granted []codec.Token
	// okTokenOps counts ok replies to r/sr/n/sn (for the seed test).
	okTokenOps int
}

func runSessionFuzz(t *testing.T, mode byte, data []byte) *sessionFuzzer {
	h := fnv.New64a()
	_, _ = h.Write([]byte{mode})
	_, _ = h.Write(data)
	z := &sessionFuzzer{t: t, data: data, rng: rand.New(rand.NewPCG(h.Sum64(), 1)), holes: findPlaceholders(data)}
	z.now = int64(time.Hour)
	z.tbl = lockcore.New(lockcore.Config{
		Shards: 4, MaxLocks: 4, MaxWaiters: int64(mode>>4) & 3, AutoRelease: mode&2 == 0,
		DefaultLease: 2, FenceStart: 1, SaltSeed: [32]byte{1},
		Clock: func() int64 { return z.now },
	})
	cfg := Config{ReadTimeout: 5 * time.Second}
	if mode&1 != 0 {
		cfg.AuthToken = fuzzSecret
	}
	cfg.setDefaults()
	z.srv = &Server{cfg: cfg, table: z.tbl, log: cfg.Logger, authToken: []byte(cfg.AuthToken)}
	z.maxOut = []int{1, 16, 64 << 10, 64 << 10}[mode>>2&3]
	for range 1 + int(mode>>6) {
		z.open()
	}
	for steps := 0; steps < 4*len(data)+64; steps++ {
		if z.allDone() {
			break
		}
		switch k := z.rng.IntN(10); {
		case k < 7:
			fs := z.ss[z.rng.IntN(len(z.ss))]
			if !fs.done {
				z.feed(fs)
			}
		case k < 9:
			z.advance([]int64{int64(time.Millisecond), int64(300 * time.Millisecond), int64(time.Second), int64(3 * time.Second)}[z.rng.IntN(4)])
		default:
			if fs := z.ss[z.rng.IntN(len(z.ss))]; !fs.done && z.rng.IntN(4) == 0 {
				z.closeSession(fs)
			}
		}
		z.checkCore()
	}
	// Let everything parked resolve or time out, then close all.
	for range 8 {
		z.advance(int64(5 * time.Second))
	}
	for _, fs := range z.ss {
		if !fs.done {
			z.closeSession(fs)
		}
	}
	z.checkCore()
	snap := z.tbl.Stats(z.now)
	if mode&2 == 0 && (len(snap.Locks) > 0 || len(snap.Semaphores) > 0) {
		t.Fatalf("holders or waiters left after every session closed: %+v", snap)
	}
	if got := z.srv.parked.Load(); got != 0 {
		t.Fatalf("srv.parked = %d after every session closed", got)
	}
	if got := z.srv.conns.Load(); got != 0 {
		t.Fatalf("srv.conns = %d after every session closed", got)
	}
	return z
}

// findPlaceholders returns the offsets of the placeholders in data.
func findPlaceholders(data []byte) []int {
	var out []int
	for i := 0; i+codec.TokenLen <= len(data); {
		j := bytes.Index(data[i:], []byte(placeholderPrefix))
		if j < 0 || i+j+codec.TokenLen > len(data) {
			break
		}
		p := i + j
		if _, ok := codec.ParseToken(data[p : p+codec.TokenLen]); ok && (data[p+22] == '0' || data[p+22] == '1') {
			out = append(out, p)
			i = p + codec.TokenLen
			continue
		}
		i = p + 1
	}
	return out
}

// fill replaces the placeholders in chunk (the stream's bytes from offset
// off) by granted tokens.
func (z *sessionFuzzer) fill(fs *fuzzSession, chunk []byte, off int) {
	for _, p := range z.holes {
		if p < off || p+codec.TokenLen > off+len(chunk) {
			continue
		}
		ph := chunk[p-off : p-off+codec.TokenLen]
		tok, _ := codec.ParseToken(ph)
		from := z.granted
		if ph[22] == '1' {
			from = fs.granted
		}
		if len(from) == 0 {
			continue
		}
		i := int(tok.Salt & 0xfffffffff)
		from[i%len(from)].AppendText(ph[:0])
	}
}

func (z *sessionFuzzer) open() {
	fs := &fuzzSession{}
	z.srv.conns.Add(1)
	fs.s.init(z.srv, &fs.tr, z.now)
	fs.authed = fs.s.authed
	z.ss = append(z.ss, fs)
}

func (z *sessionFuzzer) allDone() bool {
	for _, fs := range z.ss {
		if !fs.done && (fs.pos < len(z.data) || fs.s.parked) {
			return false
		}
	}
	return true
}

func (z *sessionFuzzer) checkCore() {
	z.t.Helper()
	if err := z.tbl.CheckInvariants(); err != nil {
		z.t.Fatalf("core invariant broken: %v", err)
	}
}

// feed delivers the next chunk of the stream to fs and runs it.
func (z *sessionFuzzer) feed(fs *fuzzSession) {
	if fs.pos < len(z.data) {
		end := min(fs.pos+1+z.rng.IntN(48), len(z.data))
		for _, p := range z.holes {
			if p < end && end < p+codec.TokenLen {
				end = p + codec.TokenLen // a placeholder is filled whole
			}
		}
		start := len(fs.in)
		fs.in = append(fs.in, z.data[fs.pos:end]...)
		z.fill(fs, fs.in[start:], fs.pos)
		fs.pos = end
	}
	z.run(fs)
}

// run lets fs handle what it has, as the event loop would: unpark, decode
// until parked, closing, out of input or over the high-water mark, then
// write out.
func (z *sessionFuzzer) run(fs *fuzzSession) {
	s := &fs.s
	fs.tr.woken = false
	for !fs.done {
		if !s.unpark(z.now) {
			break
		}
		n := 0
		if !s.closing {
			n = s.handle(fs.in, z.now, z.maxOut)
			z.consumed(fs, fs.in[:n])
			fs.in = fs.in[n:]
		}
		more := len(s.out) >= z.maxOut && !s.parked && !s.closing
		z.write(fs)
		if s.closing {
			z.closeSession(fs)
			return
		}
		if !more && (n == 0 || s.parked) {
			break
		}
	}
	pending := 0
	if s.parked {
		pending = 1
	}
	if !fs.done && len(fs.expect) != pending {
		z.t.Fatalf("session %d: %d requests without a reply (parked %v)", s.owner.ID(), len(fs.expect), s.parked)
	}
}

// consumed records the requests in b (the bytes handle consumed) as owed
// a reply, mirroring the session's auth state.
func (z *sessionFuzzer) consumed(fs *fuzzSession, b []byte) {
	for len(b) > 0 {
		var req codec.Request
		n, err := codec.Decode(b, &req)
		if n == 0 {
			if err == nil {
				z.t.Fatalf("handle consumed an incomplete request %q", b)
			}
			fs.expect = append(fs.expect, expectedReply{closing: true, authErr: !fs.authed})
			return
		}
		b = b[n:]
		switch {
		case !fs.authed && err == nil && req.Cmd == codec.CmdAuth && string(req.Arg) == fuzzSecret:
			fs.authed = true
			fs.expect = append(fs.expect, expectedReply{cmd: codec.CmdAuth, auth: true})
		case !fs.authed:
			fs.expect = append(fs.expect, expectedReply{closing: true, authErr: true})
			return
		case err != nil:
			fs.expect = append(fs.expect, expectedReply{})
		default:
			fs.expect = append(fs.expect, expectedReply{cmd: req.Cmd})
		}
	}
}

// fuzzAllowed: the statuses each command may answer (PROTOCOL.md), with
// whether the reply carries a token (grant), a lease only (renew) or a
// JSON body (stats).
var fuzzAllowed = map[codec.Command]map[codec.Code]byte{
	codec.CmdLock:       {codec.CodeOK: 'g', codec.CodeTimeout: 0, codec.CodeErrorMaxLocks: 0, codec.CodeErrorMaxWaiters: 0},
	codec.CmdSemLock:    {codec.CodeOK: 'g', codec.CodeTimeout: 0, codec.CodeErrorMaxLocks: 0, codec.CodeErrorMaxWaiters: 0, codec.CodeErrorLimitMismatch: 0},
	codec.CmdRelease:    {codec.CodeOK: 0, codec.CodeError: 0},
	codec.CmdSemRelease: {codec.CodeOK: 0, codec.CodeError: 0},
	codec.CmdRenew:      {codec.CodeOK: 'n', codec.CodeError: 0},
	codec.CmdSemRenew:   {codec.CodeOK: 'n', codec.CodeError: 0},
	codec.CmdEnqueue: {codec.CodeAcquired: 'g', codec.CodeQueued: 0, codec.CodeErrorAlreadyEnqueued: 0,
		codec.CodeErrorMaxLocks: 0, codec.CodeErrorMaxWaiters: 0},
	codec.CmdSemEnqueue: {codec.CodeAcquired: 'g', codec.CodeQueued: 0, codec.CodeErrorAlreadyEnqueued: 0,
		codec.CodeErrorMaxLocks: 0, codec.CodeErrorMaxWaiters: 0, codec.CodeErrorLimitMismatch: 0},
	codec.CmdWait:    {codec.CodeOK: 'g', codec.CodeTimeout: 0, codec.CodeErrorNotEnqueued: 0, codec.CodeErrorLeaseExpired: 0},
	codec.CmdSemWait: {codec.CodeOK: 'g', codec.CodeTimeout: 0, codec.CodeErrorNotEnqueued: 0, codec.CodeErrorLeaseExpired: 0},
	codec.CmdPing:    {codec.CodeOK: 0},
	codec.CmdStats:   {codec.CodeOK: 'j'},
	codec.CmdAuth:    {codec.CodeError: 0},
}

// write takes the session's replies and matches them to the requests.
func (z *sessionFuzzer) write(fs *fuzzSession) {
	s := &fs.s
	out := s.out
	for len(out) > 0 {
		i := bytes.IndexByte(out, '\n')
		if i < 0 {
			z.t.Fatalf("reply bytes without a newline: %q", out)
		}
		line := out[:i]
		out = out[i+1:]
		if len(fs.expect) == 0 {
			z.t.Fatalf("session %d: reply %q with no request", s.owner.ID(), line)
		}
		e := fs.expect[0]
		fs.expect = fs.expect[1:]
		var r codec.Reply
		if !codec.ParseReply(line, &r) {
			z.t.Fatalf("reply %q is not a line the protocol sends", line)
		}
		kind := byte(0)
		switch {
		case r.HasToken:
			kind = 'g'
		case r.HasLease:
			kind = 'n'
		case r.Body != nil:
			kind = 'j'
		}
		switch {
		case e.authErr:
			if r.Code != codec.CodeErrorAuth || kind != 0 {
				z.t.Fatalf("reply %q, want error_auth", line)
			}
		case e.auth:
			if r.Code != codec.CodeOK || kind != 0 {
				z.t.Fatalf("reply %q to a correct auth, want ok", line)
			}
		case e.cmd == codec.CmdInvalid:
			if r.Code != codec.CodeError || kind != 0 {
				z.t.Fatalf("reply %q to a malformed request, want error", line)
			}
		default:
			if k, ok := fuzzAllowed[e.cmd][r.Code]; !ok || k != kind {
				z.t.Fatalf("reply %q not allowed for %s", line, e.cmd)
			}
			if kind == 'g' || kind == 'n' {
				if r.Lease <= 0 {
					z.t.Fatalf("reply %q: lease not positive", line)
				}
			}
			if kind == 'g' {
				fs.granted = append(fs.granted, r.Token)
				z.granted = append(z.granted, r.Token)
			}
			switch e.cmd {
			case codec.CmdRelease, codec.CmdSemRelease, codec.CmdRenew, codec.CmdSemRenew:
				if r.Code == codec.CodeOK {
					z.okTokenOps++
				}
			}
		}
		if e.closing && !s.closing {
			z.t.Fatalf("reply %q should end the connection", line)
		}
	}
	s.out = s.out[:0]
	s.sent()
}

// advance moves the clock, fires timers, runs woken sessions and applies
// read timeouts.
func (z *sessionFuzzer) advance(d int64) {
	z.now += d
	z.tbl.Advance(z.now)
	for _, fs := range z.ss {
		if fs.done {
			continue
		}
		if fs.tr.woken {
			z.run(fs)
		}
		if fs.done {
			continue
		}
		if dl := fs.s.readDeadline(); dl != 0 && z.now >= dl {
			fs.s.readTimedOut(z.now)
			fs.expect = append(fs.expect, expectedReply{closing: true, authErr: !fs.authed})
			z.write(fs)
			z.closeSession(fs)
		}
	}
}

func (z *sessionFuzzer) closeSession(fs *fuzzSession) {
	fs.s.close(z.now)
	fs.done = true
	fs.expect = nil
}

// TestFuzzSessionsSeedsUseTokens: the seed corpus reaches successful
// releases and renewals (placeholders filled with granted tokens).
func TestFuzzSessionsSeedsUseTokens(t *testing.T) {
	ok := 0
	for _, s := range fuzzSessionSeeds {
		for _, mode := range fuzzSessionModes {
			ok += runSessionFuzz(t, mode, []byte(s)).okTokenOps
		}
	}
	t.Logf("%d ok replies to r/sr/n/sn over the seeds", ok)
	if ok == 0 {
		t.Fatal("no release or renewal succeeded over the seed corpus")
	}
}
