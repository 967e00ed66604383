package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"
)

// ServerStats is the part of a stats reply the leak check reads.
type ServerStats struct {
	Connections int64 `json:"connections"`
	Locks       []struct {
		Key     string `json:"key"`
		Waiters int64  `json:"waiters"`
	} `json:"locks"`
	Semaphores []struct {
		Key     string `json:"key"`
		Holders int64  `json:"holders"`
		Waiters int64  `json:"waiters"`
	} `json:"semaphores"`
}

// Quiet reports whether the server is back to rest: conns connections
// (the observer, and any idle connections the caller keeps), no key with a
// holder or waiter.
func (s *ServerStats) Quiet(conns int64) bool {
	return s.Connections == conns && len(s.Locks) == 0 && len(s.Semaphores) == 0
}

// Observer is one connection that asks for stats. It redials when the
// server has dropped it (the read timeout closes an idle connection).
type Observer struct {
	addr string
	nc   net.Conn
	br   *bufio.Reader
}

// Observe dials addr.
func Observe(addr string) (*Observer, error) {
	o := &Observer{addr: addr}
	return o, o.dial()
}

func (o *Observer) dial() error {
	if o.nc != nil {
		_ = o.nc.Close()
	}
	nc, err := net.DialTimeout("tcp", o.addr, 10*time.Second)
	if err != nil {
		return err
	}
	o.nc, o.br = nc, bufio.NewReader(nc)
	return nil
}

// Close closes the observer's connection.
func (o *Observer) Close() error { return o.nc.Close() }

// Stats asks for stats on a fresh connection: an idle one may have been
// closed by the server's read timeout.
func (o *Observer) Stats() (*ServerStats, error) {
	if err := o.dial(); err != nil {
		return nil, err
	}
	_ = o.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := o.nc.Write([]byte("stats\n_\n_\n")); err != nil {
		return nil, err
	}
	line, err := o.br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	body, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ok ")
	if !ok {
		return nil, fmt.Errorf("chaos: stats reply %q", line)
	}
	var s ServerStats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return nil, fmt.Errorf("chaos: stats reply %q: %w", line, err)
	}
	return &s, nil
}

// WaitQuiet polls stats until the server is quiet (see ServerStats.Quiet;
// conns counts the observer) or within passes; it returns the last stats
// and a leak violation if the server never got quiet.
func (o *Observer) WaitQuiet(within time.Duration, conns int64) (*ServerStats, []Violation) {
	deadline := time.Now().Add(within)
	for {
		s, err := o.statsRetry()
		if err != nil {
			return nil, []Violation{{Check: "leak", Msg: "stats: " + err.Error()}}
		}
		if s.Quiet(conns) {
			return s, nil
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(s)
			return s, []Violation{{Check: "leak", Msg: fmt.Sprintf("server not at rest %v after every client left: %s", within, b)}}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statsRetry is Stats, tried a few times: a dial or read error (a busy
// accept queue, a connection reset under load) is not yet a leak.
func (o *Observer) statsRetry() (*ServerStats, error) {
	var err error
	for i := range 5 {
		var s *ServerStats
		if s, err = o.Stats(); err == nil {
			return s, nil
		}
		time.Sleep(time.Duration(50<<i) * time.Millisecond)
	}
	return nil, err
}
