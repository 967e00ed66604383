package codec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

// Benchmarks of the codec next to a baseline decoder written the usual way
// (bufio.Reader, ReadString, strings.TrimRight, strings.Fields,
// strconv.Atoi), so that one run compares them:
//
//	go test -run='^$' -bench=. -benchmem -count=6 ./codec > bench.txt
//	benchstat -filter '.name:(Decode OR BaselineDecode)' \
//		-col '.name@(BaselineDecode Decode)' bench.txt

const benchLock = "l\nmy-key\n10\n"

func BenchmarkDecode(b *testing.B) {
	b.Run("l", func(b *testing.B) {
		buf := []byte(benchLock)
		var req Request
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			if n, err := Decode(buf, &req); n != len(buf) || err != nil {
				b.Fatalf("Decode = %d, %v", n, err)
			}
		}
	})
	b.Run("pipelined32", func(b *testing.B) {
		buf := pipelined(32)
		var req Request
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			count := 0
			for off := 0; off < len(buf); count++ {
				n, err := Decode(buf[off:], &req)
				if n == 0 || err != nil {
					b.Fatalf("Decode = %d, %v", n, err)
				}
				off += n
			}
			if count != 32 {
				b.Fatalf("decoded %d requests, want 32", count)
			}
		}
	})
}

func BenchmarkAppendGrant(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendGrant(buf[:0], CodeOK, testToken, 33)
	}
}

func BenchmarkAppendRequest(b *testing.B) {
	req := Request{Cmd: CmdLock, Key: []byte("my-key"), Timeout: 10, Lease: 30}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRequest(buf[:0], &req)
	}
}

func BenchmarkBaselineDecode(b *testing.B) {
	run := func(b *testing.B, buf []byte, count int) {
		rd := bytes.NewReader(buf)
		br := bufio.NewReader(rd)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(buf)
			br.Reset(rd)
			for i := 0; i < count; i++ {
				if _, err := baselineDecode(br); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("l", func(b *testing.B) { run(b, []byte(benchLock), 1) })
	b.Run("pipelined32", func(b *testing.B) { run(b, pipelined(32), 32) })
}

// baselineRequest is what the baseline decoder returns.
type baselineRequest struct {
	Cmd     string
	Key     string
	Arg     string
	Timeout int64
	Limit   int64
	Lease   int64
	Token   string
}

var errBaseline = errors.New("baseline: malformed request")

// baselineDecode reads one request the usual way. It applies the same rules
// as Decode (except the early line-length cut-off, which ReadString cannot
// do) so that the comparison is fair.
func baselineDecode(r *bufio.Reader) (baselineRequest, error) {
	var req baselineRequest
	var lines [3]string
	for i := range lines {
		s, err := r.ReadString('\n')
		if err != nil {
			return req, err
		}
		if len(s) > MaxLineLen+1 {
			return req, errBaseline
		}
		lines[i] = strings.TrimRight(s, "\r\n")
	}
	req.Cmd, req.Key, req.Arg = lines[0], lines[1], lines[2]

	num := func(s string) (int64, error) {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return 0, errBaseline
		}
		return min(int64(v), MaxSeconds), nil
	}
	positive := func(s string) (int64, error) {
		v, err := num(s)
		if err == nil && v == 0 {
			err = errBaseline
		}
		return v, err
	}
	token := func(s string) (string, error) {
		if len(s) != TokenLen || strings.Trim(s, "0123456789abcdef") != "" {
			return "", errBaseline
		}
		return s, nil
	}

	switch req.Cmd {
	case "auth":
		req.Arg = strings.TrimSpace(req.Arg)
		return req, nil
	case "stats", "ping":
		return req, nil
	}
	if req.Key == "" || strings.ContainsAny(req.Key, " \t\r") {
		return req, errBaseline
	}
	f := strings.Fields(req.Arg)
	var err error
	switch req.Cmd {
	case "l", "sl":
		want := 1
		if req.Cmd == "sl" {
			want = 2
		}
		if len(f) != want && len(f) != want+1 {
			return req, errBaseline
		}
		if req.Timeout, err = num(f[0]); err != nil {
			return req, err
		}
		if want == 2 {
			if req.Limit, err = positive(f[1]); err != nil {
				return req, err
			}
		}
		if len(f) > want {
			req.Lease, err = positive(f[want])
		}
	case "w", "sw":
		if len(f) != 1 {
			return req, errBaseline
		}
		req.Timeout, err = num(f[0])
	case "r", "sr":
		if len(f) != 1 {
			return req, errBaseline
		}
		req.Token, err = token(f[0])
	case "n", "sn":
		if len(f) != 1 && len(f) != 2 {
			return req, errBaseline
		}
		if req.Token, err = token(f[0]); err == nil && len(f) == 2 {
			req.Lease, err = positive(f[1])
		}
	case "e":
		if len(f) > 1 {
			return req, errBaseline
		}
		if len(f) == 1 {
			req.Lease, err = positive(f[0])
		}
	case "se":
		if len(f) != 1 && len(f) != 2 {
			return req, errBaseline
		}
		if req.Limit, err = positive(f[0]); err == nil && len(f) == 2 {
			req.Lease, err = positive(f[1])
		}
	default:
		return req, errBaseline
	}
	return req, err
}

// TestBaselineAgrees checks that the baseline decodes the benchmark inputs as
// the codec does, so the benchmarks compare equal work.
func TestBaselineAgrees(t *testing.T) {
	t.Parallel()

	buf := append([]byte(benchLock), pipelined(32)...)
	br := bufio.NewReader(bytes.NewReader(buf))
	var req Request
	for off := 0; off < len(buf); {
		n, err := Decode(buf[off:], &req)
		if n == 0 || err != nil {
			t.Fatalf("Decode at %d = %d, %v", off, n, err)
		}
		off += n
		got, err := baselineDecode(br)
		if err != nil {
			t.Fatalf("baseline at %d: %v", off, err)
		}
		want := snapshot(&req)
		var tok string
		if !want.Token.IsZero() {
			tok = want.Token.String()
		}
		if got.Cmd != want.Cmd.String() || got.Key != want.Key || got.Arg != want.Arg ||
			got.Timeout != want.Timeout || got.Limit != want.Limit || got.Lease != want.Lease || got.Token != tok {
			t.Errorf("baseline %+v, codec %+v", got, want)
		}
	}
	if _, err := baselineDecode(br); err != io.EOF {
		t.Errorf("baseline at end: %v, want EOF", err)
	}
}
