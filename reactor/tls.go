package reactor

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// tlsConn is a session served over crypto/tls. TLS cannot run on gnet, so
// each TLS connection costs two goroutines: a reader that only moves bytes
// into in, and a processor that owns the session and does all writing.
// Large TLS fleets should terminate TLS in front of the server.
type tlsConn struct {
	session
	nc *tls.Conn

	mu       sync.Mutex
	in       []byte
	eof      bool // the reader stopped (EOF, error, or over the inbound cap)
	timedOut bool // the reader's deadline passed; it waits on resume
	// room is signalled (under mu) after each pass of the processor, and
	// when it stops: a reader holding more than the inbound cap waits on
	// it while the session decodes.
	room    sync.Cond
	stopped bool // the processor returned
	kick    chan struct{}
	resume  chan struct{}
	done    chan struct{} // closed when the processor returns
}

func (t *tlsConn) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (s *Server) startTLS(raw net.Conn) {
	t := &tlsConn{
		nc:     tls.Server(raw, s.cfg.TLS),
		kick:   make(chan struct{}, 1),
		resume: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	t.room.L = &t.mu
	s.tlsMu.Lock()
	s.tlsConns[t] = struct{}{}
	s.tlsMu.Unlock()
	s.tlsWG.Add(1)
	go t.serve(s)
}

func (t *tlsConn) serve(s *Server) {
	defer s.tlsWG.Done()
	defer func() {
		_ = t.nc.Close()
		s.tlsMu.Lock()
		delete(s.tlsConns, t)
		s.tlsMu.Unlock()
	}()
	now := s.table.Now()
	t.init(s, t, now)
	t.mt = s.meteredForTLS(t.owner.ID())
	defer func() { t.close(s.table.Now()) }()

	hsTimeout := s.cfg.ReadTimeout
	if hsTimeout <= 0 {
		hsTimeout = 30 * time.Second
	}
	_ = t.nc.SetDeadline(time.Now().Add(hsTimeout))
	if err := t.nc.Handshake(); err != nil {
		if ce := s.log.Check(zap.DebugLevel, "tls handshake failed"); ce != nil {
			ce.Write(zap.Error(err), zap.Stringer("remote", t.nc.RemoteAddr()))
		}
		return
	}
	_ = t.nc.SetDeadline(time.Time{})
	s.logConn("tls connection opened", t.owner.ID(), t.nc.RemoteAddr())
	defer s.logConn("tls connection closed", t.owner.ID(), t.nc.RemoteAddr())
	t.setReadDeadline(now)
	go t.read(s.cfg.InboundCap)
	t.process(s)
	t.mu.Lock()
	t.stopped = true
	t.room.Broadcast()
	t.mu.Unlock()
	close(t.done)
}

// read moves bytes from the socket into in until the connection ends.
//
// The inbound cap applies as on the event loops: while the session
// decodes, a reader that is more than the cap ahead waits for the
// processor (TCP pushes back on the client); while it does not (a request
// is parked), the reader keeps reading, so that a disconnect is seen at
// once, and more than the cap unread closes the connection. A closing
// session's input is dropped.
func (t *tlsConn) read(inboundCap int) {
	buf := make([]byte, 4096)
	for {
		n, err := t.nc.Read(buf)
		t.mu.Lock()
		t.in = append(t.in, buf[:n]...)
		over := false
		for !t.stopped {
			if t.closing {
				t.in = t.in[:0]
				break
			}
			if len(t.in) <= inboundCap {
				break
			}
			if t.parked && !t.resolved.Load() {
				over = true
				break
			}
			t.wake()
			t.room.Wait()
		}
		over = over || t.stopped
		var ne net.Error
		timeout := err != nil && errors.As(err, &ne) && ne.Timeout()
		switch {
		case over || err != nil && !timeout:
			t.eof = true
		case timeout:
			t.timedOut = true
		}
		eof := t.eof
		t.mu.Unlock()
		t.wake()
		if eof {
			return
		}
		if timeout {
			select {
			case <-t.resume:
			case <-t.done:
				return
			}
		}
	}
}

// process runs the session: on every kick (input, a parked result, a
// timeout) it decodes what it can and writes the replies.
func (t *tlsConn) process(s *Server) {
	for range t.kick {
		now := s.table.Now()
		t.mu.Lock()
		free := t.unpark(now)
		more := false
		if free && !t.closing {
			hw := s.cfg.OutboundHighWater
			n := t.handle(t.in, now, hw)
			t.in = t.in[n:]
			if len(t.in) == 0 {
				t.in = nil
			}
			// Stopped at the reply cap rather than for want of input.
			more = len(t.out) >= hw && !t.parked && !t.closing
		}
		resume := false
		if t.timedOut {
			t.timedOut = false
			resume = true
			if d := t.readDeadline(); d > 0 && now >= d {
				t.readTimedOut(now)
			}
		}
		eof := t.eof
		t.room.Broadcast()
		t.mu.Unlock()
		if len(t.out) > 0 {
			select {
			case <-s.stopCh:
				// Close has begun: its closing of other connections
				// releases locks and may grant a parked request here;
				// a grant the client cannot keep must not be sent.
				return
			default:
			}
			_ = t.nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			_, err := t.nc.Write(t.out)
			t.out = t.out[:0]
			if err != nil {
				// The TLS close would try a close_notify (up to 5 s on
				// a client that does not read): close the socket.
				_ = t.nc.NetConn().Close()
				return
			}
			// Clear the deadline: crypto/tls also writes inside the
			// reader's Read (the answer to a client's KeyUpdate), and an
			// expired deadline would fail that write and, through the
			// error crypto/tls keeps, the next reply.
			_ = t.nc.SetWriteDeadline(time.Time{})
			t.sent()
		}
		if t.mt != nil && t.mt.batch.mask != 0 {
			t.mt.endBatch(time.Duration(s.table.Now() - now))
		}
		if t.closing {
			if d := time.Duration(t.closeAt - now); d > 0 {
				pause := time.NewTimer(d)
				select {
				case <-pause.C:
				case <-s.stopCh: // Close stops the server at once
					pause.Stop()
				}
			}
			return
		}
		if eof {
			return
		}
		t.setReadDeadline(now)
		if resume {
			t.resume <- struct{}{}
		}
		// More decodable input may remain (high-water stop): go again.
		// Not for an incomplete request: the reader kicks when bytes
		// arrive, and kicking ourselves would spin.
		if more {
			t.wake()
		}
	}
}

// setReadDeadline applies the session's read timeout to the socket (none
// while parked).
func (t *tlsConn) setReadDeadline(now int64) {
	var dl time.Time
	if d := t.readDeadline(); d > 0 {
		dl = time.Now().Add(time.Duration(d - now))
	}
	if err := t.nc.SetReadDeadline(dl); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		t.srv.log.Debug("set read deadline", zap.Error(err))
	}
}
