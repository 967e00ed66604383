package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/lockreactor/dflockd/codec"
)

// The ceiling server answers every request (three lines) with the same
// reply of a grant's shape, `ok <32 hex> 33`, and does nothing else: no
// parsing, no state, no timers. Loading it measures the physical limit of
// this request/response shape on the machine (the kernel, loopback TCP,
// gnet and the load generator), so `ab` against it gives a server's
// "percent of ceiling". It must stay the simplest correct responder: one
// Peek, count three newlines per request, one Write per OnTraffic.

// ceilingReply is the one reply, built by the codec.
var ceilingReply = codec.AppendGrant(nil, codec.CodeOK,
	codec.Token{Fence: 0x0123456789abcdef, Salt: 0xfedcba9876543210}, 33)

// ceilingBlock holds ceilingBatch replies back to back, so a read of up
// to that many requests is answered by one Write of a slice of it.
const ceilingBatch = 4096

var ceilingBlock = bytes.Repeat(ceilingReply, ceilingBatch)

type ceilingHandler struct {
	gnet.BuiltinEventEngine
	mu    sync.Mutex
	eng   gnet.Engine
	addr  net.Addr
	ready chan struct{}
}

func (h *ceilingHandler) OnBoot(eng gnet.Engine) gnet.Action {
	h.mu.Lock()
	h.eng = eng
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			if in4, ok := sa.(*unix.SockaddrInet4); ok {
				h.addr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)))
			}
		}
		_ = unix.Close(fd)
	}
	h.mu.Unlock()
	close(h.ready)
	return gnet.None
}

func (h *ceilingHandler) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Peek(-1)
	n, end := 0, 0 // complete requests, and the bytes they span
	for i, nl := 0, 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		if nl++; nl == 3 {
			n, end, nl = n+1, i, 0
		}
	}
	if n == 0 {
		return gnet.None
	}
	_, _ = c.Discard(end)
	if n <= ceilingBatch {
		_, _ = c.Write(ceilingBlock[:n*len(ceilingReply)])
	} else {
		_, _ = c.Write(bytes.Repeat(ceilingReply, n))
	}
	return gnet.None
}

// quietLogger keeps gnet's warnings and errors, on stderr, and drops the
// rest.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)     {}
func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Warnf(f string, a ...any)  { fmt.Fprintf(os.Stderr, "ceiling: gnet: "+f+"\n", a...) }
func (quietLogger) Errorf(f string, a ...any) { fmt.Fprintf(os.Stderr, "ceiling: gnet: "+f+"\n", a...) }
func (quietLogger) Fatalf(f string, a ...any) { fmt.Fprintf(os.Stderr, "ceiling: gnet: "+f+"\n", a...) }

// Ceiling is a running ceiling server.
type Ceiling struct {
	h    *ceilingHandler
	done chan struct{}
	err  error
}

// StartCeiling starts a ceiling server on addr ("host:port"; port 0
// picks one) with loops event loops (0 = one per CPU). The open-file soft
// limit is raised to the hard limit first: gnet's acceptor stops the whole
// engine on EMFILE.
func StartCeiling(addr string, loops int) (*Ceiling, error) {
	RaiseNoFile()
	h := &ceilingHandler{ready: make(chan struct{})}
	c := &Ceiling{h: h, done: make(chan struct{})}
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithLogger(quietLogger{}),
		gnet.WithTCPKeepAlive(30 * time.Second),
	}
	if loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(loops))
	}
	go func() {
		c.err = gnet.Run(h, "tcp://"+addr, opts...)
		close(c.done)
	}()
	select {
	case <-h.ready:
	case <-c.done:
		err := c.err
		if err == nil {
			err = errors.New("stopped at once")
		}
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	return c, nil
}

// Addr is the bound address.
func (c *Ceiling) Addr() net.Addr {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	return c.h.addr
}

// Wait blocks until the server stops and returns gnet.Run's result (nil
// when it was stopped, and also when gnet gave up accepting, e.g. on
// EMFILE: the caller should treat an unexpected return as fatal).
func (c *Ceiling) Wait() error {
	<-c.done
	return c.err
}

// Close stops the server and waits for it.
func (c *Ceiling) Close() error {
	c.h.mu.Lock()
	eng := c.h.eng
	c.h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := eng.Stop(ctx); err != nil {
		return err
	}
	return c.Wait()
}
