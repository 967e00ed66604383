package client

import (
	"fmt"
	"time"

	"github.com/lockreactor/dflockd/codec"
)

// Grant is a lock or semaphore slot held on one server, or — when it comes
// from Conn.Enqueue with no token — a place in the key's queue awaiting
// Conn.Wait.
//
// A Grant is a plain value: the server knows the holder by its token (a
// bearer credential any connection may present to renew or release), so a
// Grant can be stored and used from another connection to the same server.
type Grant struct {
	// Key is the resource's key.
	Key string
	// Limit is 0 for a lock and the semaphore's limit for a slot; it selects
	// the namespace of Wait, Renew and Release.
	Limit int
	// Token is the server's 32-hex token; "" for a queued Grant.
	Token string
	// Lease is the lease the server applied at the grant or the last
	// renewal, counted from the moment it answered.
	Lease time.Duration

	tok codec.Token // parsed Token, zero until known
}

// Held reports whether g is a grant (it has a token) rather than a queued
// place.
func (g Grant) Held() bool { return g.Token != "" }

// Fence returns the grant's fence number: the first 64 bits of the token, a
// server-wide counter that strictly increases with every grant. Pass it to
// downstream storage with each write and have the storage reject a write
// whose fence is lower than one it has already seen: a holder that lost its
// lock (a GC pause, a partition) can then no longer clobber the work of the
// next holder. Fences of different servers are not comparable. Fence
// returns 0 for a queued Grant or a malformed token.
func (g Grant) Fence() uint64 {
	t, _ := g.token()
	return t.Fence
}

// token is g.Token parsed: the cached parse while it still matches Token
// (a caller may have set Token, which is what the docs call the token).
func (g Grant) token() (codec.Token, bool) {
	if !g.tok.IsZero() {
		var buf [codec.TokenLen]byte
		if string(g.tok.AppendText(buf[:0])) == g.Token {
			return g.tok, true
		}
	}
	return codec.ParseToken([]byte(g.Token))
}

func (g Grant) semaphore() bool { return g.Limit > 0 }

// FenceOf returns the fence number of a token string (see Grant.Fence), or
// 0 if tok is not a well-formed token. Useful with the dflockd-compatible
// functions, which return tokens as strings.
func FenceOf(token string) uint64 {
	t, _ := codec.ParseToken([]byte(token))
	return t.Fence
}

// FenceFromToken is FenceOf under the name dflockd's later clients give
// it: the fence number of a token string, or an error matching ErrInvalid
// if token is not 32 lowercase hex digits.
func FenceFromToken(token string) (uint64, error) {
	t, ok := codec.ParseToken([]byte(token))
	if !ok {
		return 0, fmt.Errorf("%w: %.40q is not a token (32 lowercase hex digits)", ErrInvalid, token)
	}
	return t.Fence, nil
}
