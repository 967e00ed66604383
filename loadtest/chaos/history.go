package chaos

import (
	"fmt"
	"strings"

	"github.com/lockreactor/dflockd/codec"
)

// Kind is what a recorded request was on the wire.
type Kind uint8

// Request kinds.
const (
	// KindRequest is a well-formed request of command Op.Cmd.
	KindRequest Kind = iota
	// KindGarbage is a malformed three-line request: the protocol answers
	// error and keeps the connection.
	KindGarbage
	// KindOverlong is a line over 256 bytes: the protocol answers error and
	// closes the connection.
	KindOverlong
)

// Status is what became of a request.
type Status uint8

// Request outcomes.
const (
	// Pending: no outcome recorded (a recorder bug if it survives a run).
	Pending Status = iota
	// Replied: exactly one reply line arrived for it.
	Replied
	// Abandoned: the client closed the connection before the reply
	// arrived; the server may or may not have processed it.
	Abandoned
	// Missing: the connection was still the client's to read but no reply
	// came (the server closed it, or the reply did not arrive in time).
	Missing
)

func (s Status) String() string {
	switch s {
	case Replied:
		return "replied"
	case Abandoned:
		return "abandoned"
	case Missing:
		return "missing"
	}
	return "pending"
}

// Op is one request and its reply. Times are nanoseconds since the start
// of the run on the recorder's monotonic clock: Invoke is taken before the
// request is written, Return after its reply line has been read, so the
// server handled the request somewhere inside [Invoke, Return].
type Op struct {
	ID     int
	Client int32 // worker
	Conn   int32 // connection serial, unique within the history
	Kind   Kind
	Cmd    codec.Command
	Key    string
	// Request arguments as sent; Lease 0 means "not given" (the server
	// default applies).
	Timeout, Limit, Lease int64
	Token                 codec.Token // r, n, sr, sn
	Invoke, Return        int64
	Status                Status
	Reply                 codec.Reply // Body is not kept
	// Raw is the reply line when it did not parse (kept for messages).
	Raw string
}

// ConnEnd is how a connection ended. At is a lower bound of the moment
// the server dropped the connection (and, with auto-release, every hold of
// it): the time the client called close, or, for a connection the server
// closed, the send time of the last request the server is known to have
// handled on it.
type ConnEnd struct {
	At       int64
	ByClient bool
}

// History is a recorded run.
type History struct {
	Seed int64
	// DefaultLease is the server's lease (seconds) for requests without one.
	DefaultLease int64
	// Limits holds each semaphore key's intended limit (locks have limit
	// 1), the one the run creates it with. The checkers judge each grant by
	// the limit its own request asked for.
	Limits map[string]int64
	Ops    []Op
	Conns  map[int32]ConnEnd
	// Recorded are violations the recorder saw directly (a reply line with
	// no request, a connection that outlived its requests' replies).
	Recorded []Violation
}

// Violation is one failed check.
type Violation struct {
	Check string // "exclusion", "fifo", "replies", "leak", …
	Msg   string
	Ops   []int // IDs of the ops involved
}

func (v Violation) String() string { return v.Check + ": " + v.Msg }

// Describe renders v with its ops in full.
func (h *History) Describe(v Violation) string {
	var b strings.Builder
	b.WriteString(v.String())
	for _, id := range v.Ops {
		if id >= 0 && id < len(h.Ops) {
			b.WriteString("\n    ")
			b.WriteString(h.Ops[id].String())
		}
	}
	return b.String()
}

// String renders an op for failure messages.
func (o *Op) String() string {
	var req string
	switch o.Kind {
	case KindGarbage:
		req = "garbage"
	case KindOverlong:
		req = "over-long line"
	default:
		r := codec.Request{Cmd: o.Cmd, Key: []byte(o.Key), Timeout: o.Timeout, Limit: o.Limit, Lease: o.Lease, Token: o.Token}
		req = strings.ReplaceAll(strings.TrimSuffix(string(codec.AppendRequest(nil, &r)), "\n"), "\n", " ")
	}
	rep := o.Status.String()
	if o.Status == Replied {
		rep = o.replyText()
	}
	return fmt.Sprintf("#%d client %d conn %d: %q sent %.6fs -> %s at %.6fs", o.ID, o.Client, o.Conn, req,
		float64(o.Invoke)/1e9, rep, float64(o.Return)/1e9)
}

func (o *Op) replyText() string {
	if o.Raw != "" {
		return fmt.Sprintf("%q", o.Raw)
	}
	r := &o.Reply
	var line []byte
	switch {
	case r.HasToken:
		line = codec.AppendGrant(nil, r.Code, r.Token, r.Lease)
	case r.HasLease:
		line = codec.AppendRenewed(nil, r.Lease)
	case r.Code == codec.CodeOK && o.Cmd == codec.CmdStats:
		line = []byte("ok {...}\n")
	default:
		line = codec.AppendStatus(nil, r.Code)
	}
	return fmt.Sprintf("%q", strings.TrimSuffix(string(line), "\n"))
}
