package codec

import "bytes"

// Code is a reply status: the first word of a response line.
type Code uint8

// Reply statuses. CodeInvalid is the zero value and never on the wire.
const (
	CodeInvalid Code = iota
	CodeOK
	CodeAcquired
	CodeQueued
	CodeTimeout
	CodeError
	CodeErrorAuth
	CodeErrorMaxLocks
	CodeErrorMaxWaiters
	CodeErrorLimitMismatch
	CodeErrorNotEnqueued
	CodeErrorAlreadyEnqueued
	CodeErrorLeaseExpired
	CodeErrorDraining
	numCodes
)

// codeText is the one table of status words; nothing else in the project
// spells them.
var codeText = [numCodes]string{
	CodeOK:                   "ok",
	CodeAcquired:             "acquired",
	CodeQueued:               "queued",
	CodeTimeout:              "timeout",
	CodeError:                "error",
	CodeErrorAuth:            "error_auth",
	CodeErrorMaxLocks:        "error_max_locks",
	CodeErrorMaxWaiters:      "error_max_waiters",
	CodeErrorLimitMismatch:   "error_limit_mismatch",
	CodeErrorNotEnqueued:     "error_not_enqueued",
	CodeErrorAlreadyEnqueued: "error_already_enqueued",
	CodeErrorLeaseExpired:    "error_lease_expired",
	CodeErrorDraining:        "error_draining",
}

// codeLine holds each status followed by '\n', precomputed so that a bare
// status reply is one append.
var codeLine = func() (t [numCodes][]byte) {
	for c := CodeOK; c < numCodes; c++ {
		t[c] = []byte(codeText[c] + "\n")
	}
	return t
}()

// Codes returns every valid reply status, in declaration order.
func Codes() []Code {
	cs := make([]Code, 0, numCodes-1)
	for c := CodeOK; c < numCodes; c++ {
		cs = append(cs, c)
	}
	return cs
}

// String returns the status word as on the wire.
func (c Code) String() string {
	if c == CodeInvalid || c >= numCodes {
		return "invalid"
	}
	return codeText[c]
}

// AppendStatus appends a bare status reply: "<status>\n".
func AppendStatus(dst []byte, c Code) []byte {
	if c == CodeInvalid || c >= numCodes {
		c = CodeError
	}
	return append(dst, codeLine[c]...)
}

// AppendGrant appends "<status> <token> <lease>\n" where status is CodeOK
// (l, sl, w, sw) or CodeAcquired (e, se).
func AppendGrant(dst []byte, c Code, t Token, lease int64) []byte {
	dst = append(dst, codeText[c]...)
	dst = append(dst, ' ')
	dst = t.AppendText(dst)
	dst = append(dst, ' ')
	dst = appendInt(dst, lease)
	return append(dst, '\n')
}

// AppendRenewed appends "ok <lease>\n", the reply to n and sn.
func AppendRenewed(dst []byte, lease int64) []byte {
	dst = append(dst, codeText[CodeOK]...)
	dst = append(dst, ' ')
	dst = appendInt(dst, lease)
	return append(dst, '\n')
}

// AppendStats appends "ok <json>\n". body must be one line of JSON.
func AppendStats(dst []byte, body []byte) []byte {
	dst = append(dst, codeText[CodeOK]...)
	dst = append(dst, ' ')
	dst = append(dst, body...)
	return append(dst, '\n')
}

func appendInt(dst []byte, v int64) []byte {
	u := uint64(v)
	if v < 0 {
		dst = append(dst, '-')
		u = -u // magnitude in uint64, so MinInt64 is written correctly too
	}
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// Reply is a decoded response line, as a client sees it.
type Reply struct {
	Code Code
	// Token is set for grants (ok/acquired with a token).
	Token    Token
	HasToken bool
	// Lease is the lease of a grant or of a renewal; HasLease tells whether
	// the line carried one.
	Lease    int64
	HasLease bool
	// Body is the rest of the line after "ok " for stats replies (aliases
	// the input).
	Body []byte
}

// ParseReply decodes one response line (without its '\n'; a trailing '\r'
// is tolerated). It returns ok == false for a line this protocol never
// sends.
func ParseReply(line []byte, r *Reply) bool {
	*r = Reply{}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	word, rest := line, []byte(nil)
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		word, rest = line[:i], line[i+1:]
	}
	code := CodeInvalid
	for c := CodeOK; c < numCodes; c++ {
		if string(word) == codeText[c] {
			code = c
			break
		}
	}
	if code == CodeInvalid {
		return false
	}
	r.Code = code
	if rest == nil {
		return code != CodeAcquired
	}
	if code != CodeOK && code != CodeAcquired {
		return false
	}
	if len(rest) > 0 && rest[0] == '{' {
		r.Body = rest
		return code == CodeOK
	}
	if i := bytes.IndexByte(rest, ' '); i >= 0 {
		t, ok := ParseToken(rest[:i])
		if !ok {
			return false
		}
		r.Token, r.HasToken = t, true
		rest = rest[i+1:]
	} else if code == CodeAcquired {
		return false
	}
	v, err := parseInt(rest)
	if err != nil || len(rest) > 0 && rest[0] == '+' {
		return false
	}
	r.Lease, r.HasLease = v, true
	return true
}
