//go:build !linux

package loadtest

import (
	"net"
	"syscall"
	"time"
)

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }

func enableRxTimestamps(net.Conn) bool { return false }

func readStamped(nc net.Conn, buf []byte) (int, int64, error) {
	n, err := nc.Read(buf)
	return n, time.Now().UnixNano(), err
}

func enableTxTimestamps(net.Conn) bool { return false }

func txStamp(net.Conn) (int64, bool) { return 0, false }
