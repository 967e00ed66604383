package client

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallServer is a minimal scripted dflockd for the Close/Release tests: grants
// every l/sl at once, answers r/sr and n/sn with ok unless stalled, and
// closes every connection (and waits for its goroutines) at cleanup.
type stallServer struct {
	addr         string
	ln           net.Listener
	mu           sync.Mutex
	conns        []net.Conn
	wg           sync.WaitGroup
	n            atomic.Int64
	stallRelease atomic.Bool
	stallRenew   atomic.Bool
	releases     atomic.Int64 // r/sr received
	closed       atomic.Int64 // connections the client closed
}

func newStallServer(t *testing.T) *stallServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallServer{addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, nc)
			s.mu.Unlock()
			s.wg.Add(1)
			go s.serve(nc)
		}
	}()
	t.Cleanup(s.shutdown)
	return s
}

func (s *stallServer) hangUpAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
}

func (s *stallServer) shutdown() {
	_ = s.ln.Close()
	s.hangUpAll()
	s.wg.Wait()
}

func (s *stallServer) serve(nc net.Conn) {
	defer s.wg.Done()
	defer func() { _ = nc.Close() }()
	br := bufio.NewReader(nc)
	for {
		verb, err := readRequest(br)
		if err != nil {
			s.closed.Add(1)
			return
		}
		i := s.n.Add(1)
		var reply string
		switch verb {
		case "l", "sl":
			reply = fmt.Sprintf("ok %016x%016x 30\n", i, 7)
		case "r", "sr":
			s.releases.Add(1)
			if !s.stallRelease.Load() {
				reply = "ok\n"
			}
		case "n", "sn":
			if !s.stallRenew.Load() {
				reply = "ok 30\n"
			}
		default:
			reply = "ok\n"
		}
		if reply == "" {
			continue
		}
		_ = nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := nc.Write([]byte(reply)); err != nil {
			return
		}
	}
}
