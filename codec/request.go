package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
)

// MaxLineLen is the longest request line accepted, counted before the '\n'
// and including a '\r' that precedes it.
const MaxLineLen = 256

// MaxSeconds is the largest timeout or lease the server honours: 100 years
// of 365.25 days. Larger values are clamped to it, so deadlines computed from
// them never overflow a clock.
const MaxSeconds int64 = 3_155_760_000

// Command is a request verb.
type Command uint8

// The commands of the protocol. CmdInvalid is the zero value and is never
// returned by a successful Decode.
const (
	CmdInvalid    Command = iota
	CmdLock               // l   key  timeout [lease]
	CmdRelease            // r   key  token
	CmdRenew              // n   key  token [lease]
	CmdEnqueue            // e   key  [lease]
	CmdWait               // w   key  timeout
	CmdSemLock            // sl  key  timeout limit [lease]
	CmdSemRelease         // sr  key  token
	CmdSemRenew           // sn  key  token [lease]
	CmdSemEnqueue         // se  key  limit [lease]
	CmdSemWait            // sw  key  timeout
	CmdAuth               // auth _ secret
	CmdStats              // stats _ _
	CmdPing               // ping _ _
	numCommands
)

// argKind names one positional argument of the third line.
type argKind uint8

const (
	argNone argKind = iota
	argTimeout
	argLimit
	argToken
)

// commandSpec is the one table of argument rules; Decode has no branch per
// command.
type commandSpec struct {
	verb  string
	keyed bool       // the key line must be a valid key; otherwise it is ignored
	args  [2]argKind // required positional arguments, in order
	lease bool       // an optional trailing lease is accepted
	raw   bool       // the argument line is taken verbatim (auth secret)
	free  bool       // the argument line is ignored (stats, ping)
}

var commandSpecs = [numCommands]commandSpec{
	CmdLock:       {verb: "l", keyed: true, args: [2]argKind{argTimeout}, lease: true},
	CmdRelease:    {verb: "r", keyed: true, args: [2]argKind{argToken}},
	CmdRenew:      {verb: "n", keyed: true, args: [2]argKind{argToken}, lease: true},
	CmdEnqueue:    {verb: "e", keyed: true, lease: true},
	CmdWait:       {verb: "w", keyed: true, args: [2]argKind{argTimeout}},
	CmdSemLock:    {verb: "sl", keyed: true, args: [2]argKind{argTimeout, argLimit}, lease: true},
	CmdSemRelease: {verb: "sr", keyed: true, args: [2]argKind{argToken}},
	CmdSemRenew:   {verb: "sn", keyed: true, args: [2]argKind{argToken}, lease: true},
	CmdSemEnqueue: {verb: "se", keyed: true, args: [2]argKind{argLimit}, lease: true},
	CmdSemWait:    {verb: "sw", keyed: true, args: [2]argKind{argTimeout}},
	CmdAuth:       {verb: "auth", raw: true},
	CmdStats:      {verb: "stats", free: true},
	CmdPing:       {verb: "ping", free: true},
}

// String returns the command's wire verb.
func (c Command) String() string {
	if c == CmdInvalid || c >= numCommands {
		return "invalid"
	}
	return commandSpecs[c].verb
}

// IsSemaphore reports whether c addresses the semaphore namespace.
func (c Command) IsSemaphore() bool { return c >= CmdSemLock && c <= CmdSemWait }

// Keyed reports whether c names a resource on its key line.
func (c Command) Keyed() bool { return c < numCommands && commandSpecs[c].keyed }

// lookupCommand maps a verb to its Command without allocating.
func lookupCommand(b []byte) Command {
	switch string(b) {
	case "l":
		return CmdLock
	case "r":
		return CmdRelease
	case "n":
		return CmdRenew
	case "e":
		return CmdEnqueue
	case "w":
		return CmdWait
	case "sl":
		return CmdSemLock
	case "sr":
		return CmdSemRelease
	case "sn":
		return CmdSemRenew
	case "se":
		return CmdSemEnqueue
	case "sw":
		return CmdSemWait
	case "auth":
		return CmdAuth
	case "stats":
		return CmdStats
	case "ping":
		return CmdPing
	}
	return CmdInvalid
}

// Request is one decoded request. Key and Arg alias the decoded buffer and
// are valid only as long as it is.
type Request struct {
	Cmd Command
	// Key is the key line (validated for keyed commands, raw otherwise).
	Key []byte
	// Arg is the argument line with a trailing '\r' removed. For CmdAuth it
	// holds the secret with surrounding whitespace trimmed.
	Arg []byte
	// Timeout in whole seconds (l, w, sl, sw), clamped to MaxSeconds.
	Timeout int64
	// Limit of a semaphore (sl, se), > 0.
	Limit int64
	// Lease in whole seconds, clamped to MaxSeconds; 0 means "not given"
	// (the server default applies).
	Lease int64
	// Token presented by r, n, sr, sn.
	Token Token
}

// Decode errors. All but ErrLineTooLong leave the stream in sync: the server
// answers `error`, skips the request (Decode returned its length) and goes
// on. After ErrLineTooLong the stream cannot be resynchronised: answer
// `error` and close.
var (
	ErrLineTooLong    = errors.New("codec: line longer than 256 bytes")
	ErrUnknownCommand = errors.New("codec: unknown command")
	ErrBadKey         = errors.New("codec: key is empty or contains whitespace")
	ErrArgCount       = errors.New("codec: wrong number of arguments")
	ErrBadInteger     = errors.New("codec: malformed or out-of-range integer")
	ErrBadValue       = errors.New("codec: argument out of range")
	ErrBadToken       = errors.New("codec: malformed token")
)

// InSync reports whether the stream can continue after the decode error err
// (the request was skipped). It is false only for ErrLineTooLong.
func InSync(err error) bool { return err != ErrLineTooLong }

// nextLine returns the length of the line starting at buf[off] (without the
// '\n') or -1 when the line is not complete yet. It fails as soon as
// MaxLineLen+1 bytes are present without a newline.
func nextLine(buf []byte, off int) (int, error) {
	b := buf[off:min(len(buf), off+MaxLineLen+1)]
	if i := indexNewline(b); i >= 0 {
		return i, nil
	}
	if len(b) > MaxLineLen {
		return -1, ErrLineTooLong
	}
	return -1, nil
}

// indexNewline is bytes.IndexByte(b, '\n') for the short lines of this
// protocol: it tests eight bytes at a time in a register (SWAR), which beats
// the vectorised IndexByte's setup cost on lines of a few dozen bytes.
func indexNewline(b []byte) int {
	const (
		lo = 0x0101010101010101
		hi = 0x8080808080808080
		nl = '\n' * lo
	)
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:]) ^ nl // a '\n' byte becomes 0
		// The lowest byte flagged is the first zero byte (a borrow can
		// only flag bytes above a zero byte).
		if m := (w - lo) &^ w & hi; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if b[i] == '\n' {
			return i
		}
	}
	return -1
}

// Decode decodes one request from the front of buf.
//
//   - n > 0, err == nil: req holds a request of n bytes.
//   - n > 0, err != nil: a malformed request of n bytes; answer `error`,
//     discard n bytes and go on (InSync(err) is true).
//   - n == 0, err == nil: buf holds no complete request yet; need more.
//   - n == 0, err == ErrLineTooLong: answer `error` and close.
//
// req's slices alias buf. Decode never allocates.
func Decode(buf []byte, req *Request) (n int, err error) {
	var lines [3][]byte
	rest := buf
	for i := range lines {
		// nextLine, inlined by hand: this is the hot path.
		b := rest[:min(len(rest), MaxLineLen+1)]
		l := indexNewline(b)
		if l < 0 {
			if len(b) > MaxLineLen {
				return 0, ErrLineTooLong
			}
			return 0, nil
		}
		line := b[:l]
		if l > 0 && line[l-1] == '\r' {
			line = line[:l-1]
		}
		lines[i] = line
		rest = rest[l+1:]
	}
	*req = Request{}
	off := len(buf) - len(rest)
	return off, parse(lines[0], lines[1], lines[2], req)
}

// CompleteLines reports how many complete lines (0, 1 or 2) the incomplete
// request at the front of buf already has. Servers use it to apply the read
// timeout per line rather than per byte.
func CompleteLines(buf []byte) int {
	off := 0
	for i := 0; i < 3; i++ {
		l, err := nextLine(buf, off)
		if err != nil || l < 0 {
			return i
		}
		off += l + 1
	}
	return 3
}

func parse(cmdLine, key, arg []byte, req *Request) error {
	cmd := lookupCommand(cmdLine)
	if cmd == CmdInvalid {
		return ErrUnknownCommand
	}
	spec := &commandSpecs[cmd]
	req.Cmd = cmd
	req.Key = key
	req.Arg = arg
	if spec.keyed && !validKey(key) {
		return ErrBadKey
	}
	switch {
	case spec.free:
		return nil
	case spec.raw:
		req.Arg = bytes.TrimSpace(arg)
		return nil
	}

	// Each field is parsed where it lies: skipSpace finds its start and the
	// integer or token parser its end (a field ends at whitespace or the
	// end of the line), so no byte is scanned twice.
	rest := arg
	for _, kind := range spec.args {
		if kind == argNone {
			break
		}
		if rest = skipSpace(rest); len(rest) == 0 {
			return ErrArgCount
		}
		switch kind {
		case argTimeout:
			v, r, err := parseIntField(rest)
			if err != nil {
				return err
			}
			req.Timeout, rest = min(v, MaxSeconds), r
		case argLimit:
			v, r, err := parseIntField(rest)
			if err != nil {
				return err
			}
			if v == 0 {
				return ErrBadValue
			}
			req.Limit, rest = v, r
		case argToken:
			// The field is a token only if exactly TokenLen bytes long.
			if len(rest) < TokenLen || len(rest) > TokenLen && !isSpace(rest[TokenLen]) {
				return ErrBadToken
			}
			t, ok := ParseToken(rest[:TokenLen])
			if !ok {
				return ErrBadToken
			}
			req.Token, rest = t, rest[TokenLen:]
		}
	}
	if spec.lease {
		if rest = skipSpace(rest); len(rest) > 0 {
			v, r, err := parseIntField(rest)
			if err != nil {
				return err
			}
			if v == 0 {
				return ErrBadValue
			}
			req.Lease, rest = min(v, MaxSeconds), r
		}
	}
	if len(skipSpace(rest)) > 0 {
		return ErrArgCount
	}
	return nil
}

// validKey: non-empty, no space, tab or '\r'.
func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c == ' ' || c == '\t' || c == '\r' {
			return false
		}
	}
	return true
}

// isSpace: the ASCII whitespace that separates arguments (space, tab,
// '\v', '\f', '\r'), as dflockd's strings.Fields split them. ('\n' ends
// the line; the non-ASCII spaces strings.Fields also splits on are not
// accepted.)
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// skipSpace drops leading whitespace (isSpace).
func skipSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}

// parseIntField parses the integer field at the front of b (non-empty, not
// starting with a space) as parseInt does, and returns what follows it. A
// field ends at whitespace (isSpace) or the end of b.
func parseIntField(b []byte) (int64, []byte, error) {
	i := 0
	if b[0] == '+' {
		i = 1
	}
	start := i
	var v uint64
	for ; i < len(b); i++ {
		c := b[i]
		d := uint64(c - '0')
		if d > 9 {
			if isSpace(c) {
				break
			}
			return 0, nil, ErrBadInteger
		}
		if v > (1<<63-1-d)/10 {
			return 0, nil, ErrBadInteger
		}
		v = v*10 + d
	}
	if i == start {
		return 0, nil, ErrBadInteger
	}
	return int64(v), b[i:], nil
}

// parseInt parses a non-negative decimal with an optional leading '+'. A
// value that does not fit in an int64 is an error, never wrapped.
func parseInt(b []byte) (int64, error) {
	if len(b) > 0 && b[0] == '+' {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, ErrBadInteger
	}
	var v uint64
	for _, c := range b {
		d := uint64(c - '0')
		if d > 9 {
			return 0, ErrBadInteger
		}
		if v > (1<<63-1-d)/10 {
			return 0, ErrBadInteger
		}
		v = v*10 + d
	}
	return int64(v), nil
}

// AppendRequest appends the wire form of req to dst. Fields that req.Cmd does
// not take are ignored; Lease 0 is omitted. Key and Arg are written as given
// (Arg is used only by auth).
func AppendRequest(dst []byte, req *Request) []byte {
	if req.Cmd == CmdInvalid || req.Cmd >= numCommands {
		return dst
	}
	spec := &commandSpecs[req.Cmd]
	dst = append(dst, spec.verb...)
	dst = append(dst, '\n')
	if len(req.Key) == 0 && !spec.keyed {
		dst = append(dst, '_')
	}
	dst = append(dst, req.Key...)
	dst = append(dst, '\n')
	if spec.raw {
		dst = append(dst, req.Arg...)
		return append(dst, '\n')
	}
	sep := false
	field := func(dst []byte) []byte {
		if sep {
			dst = append(dst, ' ')
		}
		sep = true
		return dst
	}
	for _, kind := range spec.args {
		switch kind {
		case argTimeout:
			dst = appendInt(field(dst), req.Timeout)
		case argLimit:
			dst = appendInt(field(dst), req.Limit)
		case argToken:
			dst = req.Token.AppendText(field(dst))
		}
	}
	if spec.lease && req.Lease > 0 {
		dst = appendInt(field(dst), req.Lease)
	}
	return append(dst, '\n')
}
