package chaos

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/lockreactor/dflockd/codec"
)

// LinearKind is an operation of the linearizability histories.
type LinearKind uint8

// Operations of the linearizability histories: all non-blocking.
const (
	LinAcquire LinearKind = iota // l/sl with timeout 0
	LinRelease                   // r/sr
	LinRenew                     // n/sn
)

// LinearInput is a porcupine operation input.
type LinearInput struct {
	Kind  LinearKind
	Res   string // resource: "l/key" or "s/key"
	Limit int    // of an acquire: the limit asked for (1 for locks)
	Token codec.Token
}

// LinearOutput is a porcupine operation output: the reply.
type LinearOutput struct {
	Code  codec.Code
	Token codec.Token // of a grant
	Raw   string      // set when the reply was not one the protocol sends
}

// maxLinearLimit bounds the semaphore limit of the linear histories.
const maxLinearLimit = 3

// lockState is the sequential model's state of one resource: its holders
// (sorted by fence), the largest fence granted and the limit the key was
// created with (0: never granted). It is comparable, so porcupine's
// default equality works.
type lockState struct {
	n        int
	holders  [maxLinearLimit]codec.Token
	maxFence uint64
	limit    int
}

func (s lockState) find(t codec.Token) int {
	for i := range s.n {
		if s.holders[i] == t {
			return i
		}
	}
	return -1
}

// LockModel is the sequential specification of one key of the lock table,
// for non-blocking operations with leases that never run out:
//   - the first acquire granted fixes the key's limit; an acquire with
//     another limit answers error_limit_mismatch while the key is held, and
//     while it is free either that or (the server dropped the idle key) ok,
//     recreating the key with the new limit;
//   - an acquire answers ok with a new token when fewer than limit tokens
//     are held, and its fence is larger than every fence granted before;
//     it answers timeout when limit tokens are held;
//   - a release answers ok and frees the token if it is held on this key,
//     else error (a token of another key or namespace included);
//   - a renewal answers ok if the token is held on this key, else error.
//
// Histories are partitioned by resource (fences are checked per key).
var LockModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			res := op.Input.(LinearInput).Res
			if _, ok := by[res]; !ok {
				keys = append(keys, res)
			}
			by[res] = append(by[res], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return lockState{} },
	Step: func(state, input, output any) (bool, any) {
		s := state.(lockState)
		in := input.(LinearInput)
		out := output.(LinearOutput)
		held := s.find(in.Token)
		switch in.Kind {
		case LinAcquire:
			if s.limit != 0 && in.Limit != s.limit {
				switch {
				case out.Code == codec.CodeErrorLimitMismatch:
					return true, s
				case out.Code == codec.CodeOK && s.n == 0:
					s.limit = 0 // dropped while idle, recreated below
				default:
					return false, s
				}
			}
			switch out.Code {
			case codec.CodeOK:
				if s.limit == 0 {
					s.limit = in.Limit
				}
				if s.n >= s.limit || out.Token.Fence <= s.maxFence || s.find(out.Token) >= 0 {
					return false, s
				}
				s.holders[s.n] = out.Token
				s.n++
				s.maxFence = out.Token.Fence
				return true, s
			case codec.CodeTimeout:
				return s.limit != 0 && s.n >= s.limit, s
			}
		case LinRelease:
			switch out.Code {
			case codec.CodeOK:
				if held < 0 {
					return false, s
				}
				copy(s.holders[held:], s.holders[held+1:s.n])
				s.n--
				s.holders[s.n] = codec.Token{}
				return true, s
			case codec.CodeError:
				return held < 0, s
			}
		case LinRenew:
			switch out.Code {
			case codec.CodeOK:
				return held >= 0, s
			case codec.CodeError:
				return held < 0, s
			}
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in := input.(LinearInput)
		out := output.(LinearOutput)
		name := [...]string{"acquire", "release", "renew"}[in.Kind]
		arg := ""
		switch {
		case in.Kind != LinAcquire:
			arg = fmt.Sprint(in.Token.Fence)
		case in.Res[0] == 's':
			arg = fmt.Sprint("limit ", in.Limit)
		}
		res := out.Code.String()
		if out.Raw != "" {
			res = fmt.Sprintf("%q", out.Raw)
		} else if out.Code == codec.CodeOK && in.Kind == LinAcquire {
			res = fmt.Sprint("ok fence ", out.Token.Fence)
		}
		return fmt.Sprintf("%s(%s %s) -> %s", name, in.Res, arg, res)
	},
	DescribeState: func(state any) string {
		s := state.(lockState)
		var f []string
		for i := range s.n {
			f = append(f, fmt.Sprint(s.holders[i].Fence))
		}
		return fmt.Sprintf("holders [%s], max fence %d, limit %d", strings.Join(f, " "), s.maxFence, s.limit)
	},
}

// LinearConfig configures the linearizability recorder.
type LinearConfig struct {
	Addr string
	// Clients run concurrently, one connection each (default 6);
	// OpsPerClient requests each per history (default 12).
	Clients, OpsPerClient int
	// Lease of every grant, long enough never to run out during the run
	// (default 3600 s).
	Lease int64
}

// LinearRecorder records short concurrent histories over persistent
// connections; each history uses fresh keys.
type LinearRecorder struct {
	cfg   LinearConfig
	conns []*lconn
	start time.Time
	n     int
}

type lconn struct {
	nc net.Conn
	br *bufio.Reader
}

// NewLinearRecorder dials cfg.Clients connections.
func NewLinearRecorder(cfg LinearConfig) (*LinearRecorder, error) {
	if cfg.Clients <= 0 {
		cfg.Clients = 6
	}
	if cfg.OpsPerClient <= 0 {
		cfg.OpsPerClient = 12
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 3600
	}
	r := &LinearRecorder{cfg: cfg, start: time.Now()}
	for range cfg.Clients {
		nc, err := net.DialTimeout("tcp", cfg.Addr, 10*time.Second)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.conns = append(r.conns, &lconn{nc: nc, br: bufio.NewReader(nc)})
	}
	return r, nil
}

// Close closes the connections.
func (r *LinearRecorder) Close() {
	for _, c := range r.conns {
		_ = c.nc.Close()
	}
}

func (c *lconn) do(req *codec.Request) (LinearOutput, error) {
	_ = c.nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.nc.Write(codec.AppendRequest(nil, req)); err != nil {
		return LinearOutput{}, err
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return LinearOutput{}, err
	}
	line = strings.TrimSuffix(line, "\n")
	var rep codec.Reply
	if !codec.ParseReply([]byte(line), &rep) {
		return LinearOutput{Raw: line}, nil
	}
	return LinearOutput{Code: rep.Code, Token: rep.Token}, nil
}

// Record runs one history with the given seed and returns its operations.
// Tokens still held at the end are released afterwards (outside the
// history), so the next history starts from an empty table.
func (r *LinearRecorder) Record(seed int64) ([]porcupine.Operation, error) {
	r.n++
	prefix := fmt.Sprintf("lin%d-%d-", r.n, seed)
	resources := []struct {
		cmd   codec.Command // acquire command
		key   string
		limit int
	}{
		{codec.CmdLock, prefix + "a", 1},
		{codec.CmdLock, prefix + "b", 1},
		{codec.CmdSemLock, prefix + "s", 2},
	}
	var (
		mu     sync.Mutex
		known  []LinearInput // every token granted so far, as a release input
		ops    []porcupine.Operation
		errs   []error
		wg     sync.WaitGroup
		tstamp = func() int64 { return int64(time.Since(r.start)) }
	)
	for ci, c := range r.conns {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(ci)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []LinearInput
			for range r.cfg.OpsPerClient {
				var in LinearInput
				var req codec.Request
				res := resources[rng.IntN(len(resources))]
				switch k := rng.IntN(10); {
				case k < 5 || len(mine) == 0 && k < 8:
					in = LinearInput{Kind: LinAcquire, Res: resource(res.cmd, res.key), Limit: res.limit}
					req = codec.Request{Cmd: res.cmd, Key: []byte(res.key), Lease: r.cfg.Lease}
					if res.cmd == codec.CmdSemLock {
						if rng.IntN(6) == 0 {
							in.Limit++ // error_limit_mismatch, or the key's limit if first
						}
						req.Limit = int64(in.Limit)
					}
				default:
					// A token of ours (often), anyone's (sometimes), or
					// a made-up one.
					tok := LinearInput{Res: resource(res.cmd, res.key), Limit: res.limit, Token: codec.Token{Fence: 1, Salt: rng.Uint64()}}
					switch {
					case len(mine) > 0 && rng.IntN(4) > 0:
						tok = mine[rng.IntN(len(mine))]
					default:
						mu.Lock()
						if len(known) > 0 {
							tok = known[rng.IntN(len(known))]
						}
						mu.Unlock()
					}
					in = tok
					if rng.IntN(5) == 0 {
						// A token of another key or of the other
						// namespace: the model expects error.
						other := resources[rng.IntN(len(resources))]
						in.Res, in.Limit = resource(other.cmd, other.key), other.limit
						if in.Res == tok.Res {
							in.Res = "s" + in.Res[1:]
							if tok.Res[0] == 's' {
								in.Res = "l" + in.Res[1:]
							}
						}
					}
					in.Kind = LinRelease
					if rng.IntN(3) == 0 {
						in.Kind = LinRenew
					}
					req = codec.Request{Cmd: cmdFor(in), Key: []byte(in.Res[2:]), Token: in.Token}
					if in.Kind == LinRenew {
						req.Lease = r.cfg.Lease
					}
				}
				call := tstamp()
				out, err := c.do(&req)
				ret := tstamp()
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if in.Kind == LinAcquire && out.Code == codec.CodeOK {
					g := LinearInput{Res: in.Res, Limit: in.Limit, Token: out.Token}
					mine = append(mine, g)
					mu.Lock()
					known = append(known, g)
					mu.Unlock()
				}
				mu.Lock()
				ops = append(ops, porcupine.Operation{ClientId: ci, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return ops, errs[0]
	}
	// Clean up outside the history.
	for _, k := range known {
		req := codec.Request{Cmd: cmdFor(LinearInput{Kind: LinRelease, Res: k.Res}), Key: []byte(k.Res[2:]), Token: k.Token}
		if _, err := r.conns[0].do(&req); err != nil {
			return ops, err
		}
	}
	return ops, nil
}

func cmdFor(in LinearInput) codec.Command {
	sem := in.Res[0] == 's'
	switch {
	case in.Kind == LinRenew && sem:
		return codec.CmdSemRenew
	case in.Kind == LinRenew:
		return codec.CmdRenew
	case sem:
		return codec.CmdSemRelease
	}
	return codec.CmdRelease
}
