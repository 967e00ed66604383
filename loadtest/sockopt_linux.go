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
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
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
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS {
			data := oob[unix.CmsgLen(0):l]
			if len(data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
				return ts.Nano(), true
			}
		}
		oob = oob[unix.CmsgSpace(l-unix.CmsgLen(0)):]
	}
	return 0, false
}
