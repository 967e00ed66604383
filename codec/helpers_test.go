package codec

import (
	"fmt"
	"strings"
)

// Shared fixtures and helpers of the codec tests, fuzz targets and
// benchmarks.

// testToken and testTokenText are a token with distinct fence and salt
// nibbles and its wire text.
var testToken = Token{Fence: 0x0123456789abcdef, Salt: 0xfedcba9876543210}

const testTokenText = "0123456789abcdeffedcba9876543210"

// decoded is a Request with its aliased slices copied into strings, so it
// stays valid after the decode buffer is reused, and compares with ==.
type decoded struct {
	Cmd     Command
	Key     string
	Arg     string
	Timeout int64
	Limit   int64
	Lease   int64
	Token   Token
}

func snapshot(r *Request) decoded {
	return decoded{
		Cmd:     r.Cmd,
		Key:     string(r.Key),
		Arg:     string(r.Arg),
		Timeout: r.Timeout,
		Limit:   r.Limit,
		Lease:   r.Lease,
		Token:   r.Token,
	}
}

// request turns a snapshot back into a Request (fresh slices).
func (d decoded) request() Request {
	return Request{
		Cmd:     d.Cmd,
		Key:     []byte(d.Key),
		Arg:     []byte(d.Arg),
		Timeout: d.Timeout,
		Limit:   d.Limit,
		Lease:   d.Lease,
		Token:   d.Token,
	}
}

// meaningful drops what the command ignores: the argument line of every
// command but auth (it is reformatted by AppendRequest) and the key of the
// unkeyed commands.
func (d decoded) meaningful() decoded {
	if d.Cmd != CmdAuth {
		d.Arg = ""
	}
	if !d.Cmd.Keyed() {
		d.Key = ""
	}
	return d
}

// result is one step of decoding a stream: a request, or an error.
type result struct {
	N   int // bytes consumed; 0 only with ErrLineTooLong
	Err error
	Req decoded // only when Err == nil
}

func (r result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("{n=%d err=%v}", r.N, r.Err)
	}
	return fmt.Sprintf("{n=%d %+v}", r.N, r.Req)
}

// checkStep validates the contract of one Decode call; it returns a
// description of the violation, or "".
func checkStep(buf []byte, n int, err error, req *Request) string {
	switch {
	case n < 0 || n > len(buf):
		return fmt.Sprintf("n=%d out of range [0,%d]", n, len(buf))
	case n == 0 && err != nil && err != ErrLineTooLong:
		return fmt.Sprintf("n=0 with in-sync error %v", err)
	case n > 0 && err == ErrLineTooLong:
		return fmt.Sprintf("n=%d with ErrLineTooLong", n)
	case n > 0 && err == nil && (req.Cmd == CmdInvalid || req.Cmd >= numCommands):
		return fmt.Sprintf("success with command %d", req.Cmd)
	case n > 0 && buf[n-1] != '\n':
		return fmt.Sprintf("request of %d bytes does not end in a newline", n)
	}
	complete := CompleteLines(buf)
	if (n > 0) != (complete == 3) {
		return fmt.Sprintf("CompleteLines=%d but Decode n=%d err=%v", complete, n, err)
	}
	return ""
}

// decodeAll decodes buf in a loop from an offset, as a server does with
// everything it has read. It stops at "need more" or ErrLineTooLong and
// returns the steps and the number of bytes left over (-1 after
// ErrLineTooLong: the connection is closed, what has arrived of the line
// depends on the chunking).
func decodeAll(buf []byte) (steps []result, rest int, bad string) {
	var req Request
	off := 0
	for {
		n, err := Decode(buf[off:], &req)
		if bad := checkStep(buf[off:], n, err, &req); bad != "" {
			return steps, len(buf) - off, bad
		}
		if n == 0 {
			if err != nil {
				return append(steps, result{Err: err}), -1, ""
			}
			return steps, len(buf) - off, ""
		}
		r := result{N: n, Err: err}
		if err == nil {
			r.Req = snapshot(&req)
		}
		steps = append(steps, r)
		off += n
	}
}

// decodeChunks feeds the chunks one after the other into a streaming
// decoder: it accumulates a buffer, decodes from an offset while it can, and
// consumes (compacts) what it decoded before the next chunk arrives. After
// ErrLineTooLong it stops, as a server closes the connection, and reports
// rest -1.
func decodeChunks(chunks ...[]byte) (steps []result, rest int, bad string) {
	var (
		acc []byte
		req Request
	)
	for _, c := range chunks {
		acc = append(acc, c...)
		off := 0
		for {
			n, err := Decode(acc[off:], &req)
			if bad := checkStep(acc[off:], n, err, &req); bad != "" {
				return steps, len(acc) - off, bad
			}
			if n == 0 {
				if err != nil {
					return append(steps, result{Err: err}), -1, ""
				}
				break
			}
			r := result{N: n, Err: err}
			if err == nil {
				r.Req = snapshot(&req)
			}
			steps = append(steps, r)
			off += n
		}
		acc = append(acc[:0], acc[off:]...) // consume
	}
	return steps, len(acc), ""
}

// bytewise splits b into one-byte chunks.
func bytewise(b []byte) [][]byte {
	cs := make([][]byte, len(b))
	for i := range b {
		cs[i] = b[i : i+1]
	}
	return cs
}

// diffSteps describes the first difference between two step sequences, or
// returns "".
func diffSteps(got, want []result) string {
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("step %d: missing, want %v", i, want[i])
		case i >= len(want):
			return fmt.Sprintf("step %d: unexpected %v", i, got[i])
		case got[i] != want[i]:
			return fmt.Sprintf("step %d: got %v, want %v", i, got[i], want[i])
		}
	}
	return ""
}

// Representative requests of every command, used by the chunking tests, the
// fuzz seeds, the alloc tests and the benchmarks.
var sampleRequests = []string{
	"l\nmy-key\n10\n",
	"l\nmy-key\n10 30\n",
	"l\r\nmy-key\r\n+0 +30\r\n",
	"r\nmy-key\n" + testTokenText + "\n",
	"n\nmy-key\n" + testTokenText + "\n",
	"n\nmy-key\n" + testTokenText + " 60\n",
	"e\nmy-key\n\n",
	"e\nmy-key\n 45 \n",
	"w\nmy-key\n5\n",
	"sl\nsem\n5 3\n",
	"sl\nsem\n\t5  3   60\t\n",
	"sr\nsem\n" + testTokenText + "\n",
	"sn\nsem\n" + testTokenText + "\n",
	"sn\r\nsem\r\n" + testTokenText + " 99999999999\r\n",
	"se\nsem\n3\n",
	"se\nsem\n3 20\n",
	"sw\nsem\n0\n",
	"auth\n_\n  s3cret \t\n",
	"auth\n\nsecret\r\n",
	"stats\n_\n_\n",
	"stats\n\n\n",
	"ping\n_\n_\n",
	"ping\nwhatever you like\n1 2 3\n",
}

// sampleErrors are malformed requests after which the stream stays in sync.
var sampleErrors = []string{
	"x\nk\n1\n",
	"\nk\n1\n",
	"l\n\n1\n",
	"l\na b\n1\n",
	"l\nk\n-1\n",
	"l\nk\n10 0\n",
	"se\nk\n0\n",
	"l\nk\n1 2 3\n",
	"r\nk\n\n",
	"r\nk\n" + strings.ToUpper(testTokenText) + "\n",
	"l\nk\n9223372036854775808\n",
}

// pipelined returns count requests cycling through sampleRequests.
func pipelined(count int) []byte {
	var b []byte
	for i := 0; i < count; i++ {
		b = append(b, sampleRequests[i%len(sampleRequests)]...)
	}
	return b
}
