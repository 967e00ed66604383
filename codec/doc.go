// Package codec owns the dflockd wire protocol: request framing, the argument
// rules of every command, every response byte string and the token text.
//
// The server, the client, the load tester and the tests all speak the wire
// through this package; no other package writes a protocol literal.
//
// Decode is a pure function over a byte slice: it returns one complete
// request as sub-slices of the input (no copy, no allocation) or "need more".
// It knows nothing about sockets, goroutines or lock semantics, and is safe
// for concurrent use on distinct buffers.
//
// Limits enforced here (see PROTOCOL.md, "Framing"):
//   - a line is at most MaxLineLen bytes before its '\n' (a '\r' counts); a
//     longer line is ErrLineTooLong as soon as MaxLineLen+1 bytes arrive
//     without a newline, and the stream cannot be resynchronised;
//   - timeouts and leases larger than MaxSeconds (100 years) are clamped to
//     it; an integer that does not fit in 64 bits is ErrBadInteger.
package codec
