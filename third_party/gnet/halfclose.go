package gnet

// ReadEOFHandler is implemented by an EventHandler that serves a
// half-closed connection (dflockd patch; Linux only, elsewhere a read EOF
// closes the connection as upstream does).
//
// When the peer shuts down its sending side, OnReadEOF is called instead
// of closing the connection. The connection is no longer read from;
// buffered input stays readable with Peek/Next, Write and Wake work as
// before, and the connection stays open until the handler closes it
// (returns Close, or calls Close). Errors and hang-ups still close it.
type ReadEOFHandler interface {
	OnReadEOF(c Conn) (action Action)
}
