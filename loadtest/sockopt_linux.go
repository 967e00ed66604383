//go:build linux

package loadtest

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound
// to a source address: the port is chosen at connect time, so one source
// address can reuse a local port towards different destinations.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// enableRxTimestamps asks the kernel to stamp received data
// (SO_TIMESTAMPNS), so arrival times are not blurred by when the load
// generator gets around to reading.
func enableRxTimestamps(nc net.Conn) bool {
	return setSockopt(nc, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}

// setSockopt sets an integer socket option on a TCP connection and reports
// whether it took.
func setSockopt(nc net.Conn, level, opt, value int) bool {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), level, opt, value)
	}); err != nil {
		return false
	}
	return serr == nil
}

// readStamped reads from nc into buf and returns the kernel receive time
// of the data (wall clock, ns since the epoch) when the kernel supplied
// one, else the time the read returned.
func readStamped(nc net.Conn, buf []byte) (int, int64, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		n, err := nc.Read(buf)
		return n, time.Now().UnixNano(), err
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var (
		n, oobn int
		rerr    error
		oob     [128]byte
	)
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob[:], 0)
		return rerr != unix.EAGAIN
	})
	now := time.Now().UnixNano()
	if err != nil {
		return 0, now, err
	}
	if rerr != nil {
		return 0, now, rerr
	}
	if n == 0 {
		return 0, now, io.EOF
	}
	if ts, ok := parseTimestampNS(oob[:oobn]); ok {
		return n, ts, nil
	}
	return n, now, nil
}

// parseTimestampNS finds an SCM_TIMESTAMPNS control message.
func parseTimestampNS(oob []byte) (int64, bool) {
	return cmsgTimespec(oob, unix.SCM_TIMESTAMPNS)
}

// cmsgTimespec returns the first timespec of the first SOL_SOCKET control
// message of type typ in oob, in ns since the epoch; ok is false when
// there is none or it is zero.
func cmsgTimespec(oob []byte, typ int32) (int64, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == typ {
			data := oob[unix.CmsgLen(0):l]
			if len(data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
				if ns := ts.Nano(); ns > 0 {
					return ns, true
				}
			}
		}
		oob = oob[unix.CmsgSpace(l-unix.CmsgLen(0)):]
	}
	return 0, false
}

// enableTxTimestamps asks the kernel to stamp sent data when it leaves the
// TCP stack (SO_TIMESTAMPING, software transmit stamps, reported on the
// socket's error queue), so send times are not blurred by the generator
// being descheduled around its write. On loopback that is the moment the
// data reaches the server's socket.
func enableTxTimestamps(nc net.Conn) bool {
	flags := unix.SOF_TIMESTAMPING_TX_SOFTWARE | unix.SOF_TIMESTAMPING_SOFTWARE | unix.SOF_TIMESTAMPING_OPT_TSONLY
	return setSockopt(nc, unix.SOL_SOCKET, unix.SO_TIMESTAMPING, flags)
}

// txStamp returns the kernel's transmit time (wall clock, ns since the
// epoch) of the latest write on nc, draining the error queue; ok is false
// when none is there (stamps not enabled, or not delivered yet).
func txStamp(nc net.Conn) (int64, bool) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var (
		ts    int64
		found bool
		oob   [256]byte
	)
	_ = rc.Control(func(fd uintptr) {
		for {
			_, oobn, _, _, err := unix.Recvmsg(int(fd), nil, oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			if t, ok := parseTimestamping(oob[:oobn]); ok {
				ts, found = t, true
			}
		}
	})
	return ts, found
}

// parseTimestamping finds an SCM_TIMESTAMPING control message and returns
// its software stamp.
func parseTimestamping(oob []byte) (int64, bool) {
	return cmsgTimespec(oob, unix.SCM_TIMESTAMPING)
}
