package reactor

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/lockreactor/dflockd/codec"
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
	// capClosed: the reader ended the connection at the inbound cap.
	capClosed bool
	// pc is the TCP connection under nc (see progressConn); unsent is
	// how many bytes of replies the processor's current write has not
	// handed to it yet (0 while it is not writing), in 16 KiB steps.
	pc     *progressConn
	unsent atomic.Int64
	kick   chan struct{}
	resume chan struct{}
	done   chan struct{} // closed when the processor returns
}

func (t *tlsConn) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (s *Server) startTLS(raw net.Conn) {
	pc := &progressConn{Conn: raw, timeout: s.cfg.WriteTimeout}
	t := &tlsConn{
		nc:     tls.Server(pc, s.cfg.TLS),
		pc:     pc,
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

	// The handshake comes before authentication: AuthTimeout bounds it
	// too, also with the read timeout off.
	hsTimeout := s.cfg.AuthTimeout
	if rt := s.cfg.ReadTimeout; rt > 0 && rt < hsTimeout {
		hsTimeout = rt
	}
	_ = t.nc.SetDeadline(time.Now().Add(hsTimeout))
	if err := t.nc.Handshake(); err != nil {
		t.handshakeFailed(s, err)
		if ce := s.log.Check(zap.DebugLevel, "tls handshake failed"); ce != nil {
			fields := []zap.Field{zap.Error(err), zap.Stringer("remote", t.nc.RemoteAddr())}
			if why := t.closeReason(); why != "" {
				fields = append(fields, zap.String("reason", why))
			}
			ce.Write(fields...)
		}
		return
	}
	_ = t.nc.SetDeadline(time.Time{})
	s.logConn("tls connection opened", t.owner.ID(), t.nc.RemoteAddr(), "")
	defer func() { s.logConn("tls connection closed", t.owner.ID(), t.nc.RemoteAddr(), t.closeReason()) }()
	// The deadline still counts from the connect (the handshake took
	// part of it): convert it with the clock as it is now.
	t.setReadDeadline(s.table.Now())
	go t.read(s.cfg.InboundCap, s.cfg.OutboundHighWater)
	t.process(s)
	t.mu.Lock()
	if t.capClosed {
		t.closeFor(CloseInboundCap)
	}
	t.stopped = true
	t.room.Broadcast()
	t.mu.Unlock()
	close(t.done)
}

// handshakeFailed records why the handshake ended the connection: too
// slow (auth_timeout: the handshake counts toward the time a connection
// may stay unauthenticated) or a TLS protocol failure (tls_handshake). A
// client that closed or reset (a load balancer's TCP check, a port scan)
// and the shutdown's closes are no reason.
func (t *tlsConn) handshakeFailed(s *Server, err error) {
	select {
	case <-s.stopCh:
		return
	default:
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.closeFor(CloseAuthTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
	default:
		t.closeFor(CloseTLSHandshake)
	}
}

// read moves bytes from the socket into in until the connection ends.
//
// The inbound cap applies as on the event loops: while the session
// decodes, a reader that is more than the cap ahead waits for the
// processor (TCP pushes back on the client); while it does not (a request
// is parked), the reader keeps reading, so that a disconnect is seen at
// once, and more than the cap unread closes the connection. The same
// holds while the processor's write of at least highWater bytes of
// replies has made no progress for stallCheck (the event loops stop
// decoding when that much is unsent). A closing session's input is
// dropped.
func (t *tlsConn) read(inboundCap, highWater int) {
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
			if t.parked && !t.resolved.Load() {
				over = len(t.in) > inboundCap
				break
			}
			// Slack for one incomplete request, which the processor
			// cannot decode yet: waiting for it would spin.
			if len(t.in) <= inboundCap+3*(codec.MaxLineLen+1) {
				break
			}
			if t.unsent.Load() >= int64(highWater) && t.pc.writing.Load() {
				// As on the event loops, a client that does not read
				// its replies while it sends more than the cap is
				// closed, long before the write timeout.
				stalled := time.Duration(time.Now().UnixNano() - t.pc.progress.Load())
				if stalled >= stallCheck {
					over = true
					_ = t.nc.NetConn().Close() // ends the blocked write
					break
				}
				t.mu.Unlock()
				time.Sleep(stallCheck - stalled)
				t.mu.Lock()
				continue
			}
			t.wake()
			t.room.Wait()
		}
		if over {
			t.capClosed = true
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

// consumed returns in without its first n bytes, which the session has
// decoded. An empty buffer is dropped. Otherwise what is left moves to the
// front, so that the reader appends after it rather than after a dead
// front; and a buffer over 4 KiB that is now at most an eighth full is
// replaced by one just large enough: what piled up while a request was
// parked would otherwise stay allocated under the few bytes of an
// unfinished request left behind, for as long as they stay.
func consumed(in []byte, n int) []byte {
	rest := len(in) - n
	switch {
	case rest == 0:
		return nil
	case cap(in) > 4<<10 && rest <= cap(in)/8:
		return append([]byte(nil), in[n:]...)
	default:
		return in[:copy(in, in[n:])]
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
			t.in = consumed(t.in, t.handle(t.in, now, hw))
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
			err := t.writeOut(s)
			t.out = emptyOut(t.out)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.closeFor(CloseWriteTimeout)
				}
				// The TLS close would try a close_notify (up to 5 s on
				// a client that does not read): close the socket.
				_ = t.nc.NetConn().Close()
				return
			}
			// The write deadline is moved on below (setDeadlines).
			t.sent()
			t.releaseBig()
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
		if eof && !more {
			// Half-closed (or gone): every complete request it sent is
			// answered (more: some wait behind the reply cap), unless one
			// blocks, which counts the half-close as a disconnect: the
			// close drops it. One decided already (its result on the way)
			// is answered first: the next kick is its result.
			t.mu.Lock()
			decided := t.parked && !t.srv.table.CancelParked(&t.owner, now)
			t.mu.Unlock()
			if !decided {
				return
			}
			continue
		}
		// A fresh clock reading: a long write moved lastProgress on.
		t.setReadDeadline(s.table.Now())
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

// tlsWriteChunk is the piece of the replies the processor hands to
// crypto/tls at a time (one record): what is left counts as unsent.
const tlsWriteChunk = 16 << 10

// writeOut writes t.out in chunks (progressConn bounds each piece of
// them by the write timeout). A chunk written counts as progress for the
// read timeout, as replies drained do on the event loops.
func (t *tlsConn) writeOut(s *Server) error {
	defer t.unsent.Store(0)
	for b := t.out; len(b) > 0; {
		t.unsent.Store(int64(len(b)))
		n := min(len(b), tlsWriteChunk)
		start := time.Now()
		_, err := t.nc.Write(b[:n])
		if err != nil {
			return err
		}
		b = b[n:]
		if len(b) > 0 || time.Since(start) > time.Millisecond {
			t.mu.Lock()
			t.lastProgress = s.table.Now()
			t.mu.Unlock()
		}
	}
	return nil
}

// progressPiece is the most progressConn writes with one deadline.
const progressPiece = 4 << 10

// progressConn is the TCP connection under a TLS session. It writes in
// pieces of at most progressPiece bytes, each within the write timeout,
// so that the timeout bounds a stall (a client that stopped reading), as
// on the event loops, not how long a large reply takes a slow but steady
// reader; and it records when the current piece began, for the inbound
// cap's stall check (tlsConn.read). crypto/tls serializes its writes.
type progressConn struct {
	net.Conn
	timeout  time.Duration
	progress atomic.Int64 // unix ns: when the piece being written began
	writing  atomic.Bool
}

func (p *progressConn) Write(b []byte) (int, error) {
	p.writing.Store(true)
	defer p.writing.Store(false)
	n := 0
	for n < len(b) {
		m := min(len(b)-n, progressPiece)
		start := time.Now()
		p.progress.Store(start.UnixNano())
		if err := p.SetWriteDeadline(start.Add(p.timeout)); err != nil {
			return n, err
		}
		k, err := p.Conn.Write(b[n : n+m])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// setReadDeadline applies the session's read timeout to the socket (none
// while parked), and bounds the writes crypto/tls makes inside the
// reader's Read (an alert for a bad record, the answer to a KeyUpdate) to
// the write timeout past it. Those writes must neither fail at once (a
// deadline left from the last reply would fail a KeyUpdate's answer, and
// crypto/tls keeps that error for the next reply) nor block for ever on a
// client that stopped reading: the read deadline could not fire then.
// Without a read deadline they wait for the next reply's write, whose
// deadline bounds them too.
func (t *tlsConn) setReadDeadline(now int64) {
	var rdl, wdl time.Time
	if d := t.readDeadline(); d > 0 {
		rdl = time.Now().Add(time.Duration(d - now))
		wdl = rdl.Add(t.srv.cfg.WriteTimeout)
	}
	if err := t.nc.SetReadDeadline(rdl); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		t.srv.log.Debug("set read deadline", zap.Error(err))
	}
	_ = t.nc.SetWriteDeadline(wdl)
}
