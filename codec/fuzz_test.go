package codec

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// fuzzSplit derives a split point in [0, len(data)] from the input (FNV-1a),
// so that the fuzzer explores it along with the bytes.
func fuzzSplit(data []byte) int {
	h := uint32(2166136261)
	for _, c := range data {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % uint32(len(data)+1))
}

func FuzzDecode(f *testing.F) {
	for _, s := range sampleRequests {
		f.Add([]byte(s))
	}
	for _, s := range sampleErrors {
		f.Add([]byte(s))
	}
	long := strings.Repeat("a", MaxLineLen)
	for _, s := range []string{
		"",
		"\n",
		"\n\n\n",
		"l\nk\n10",
		"l\r\nk\r\n10 30\r\n",
		"l\nk\n" + strings.Repeat("9", 30) + "\n",
		"l\nk\n3155760001 3155760001\n",
		"sl\nk\n+1 +2 +3\n",
		"auth\n_\n \t s e c r e t \r \r\n",
		"auth\n_\n\xc2\x85secret\xc2\xa0\n", // unicode spaces
		"stats\nk\r\r\n\r\n",
		"l\n" + long + "\n1\n",
		"l\n" + long[1:] + "\r\n1\n",
		"l\n" + long + "\r\n1\n",
		long + "a",
		"l\nk\n1\n" + long + "a",
		"r\nk\n" + strings.ToUpper(testTokenText) + "\n",
		"n\nk\n" + testTokenText + " 0\n",
		string(pipelined(32)),
		string(pipelined(5)) + "x\ny\nz\n" + string(pipelined(3)) + "l\n",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantRest, bad := decodeAll(data)
		if bad != "" {
			t.Fatalf("whole input: %s", bad)
		}
		if d := checkReference(data); d != "" {
			t.Fatalf("optimised and reference decoders differ: %s", d)
		}

		split := fuzzSplit(data)
		got, rest, bad := decodeChunks(data[:split], data[split:])
		if bad != "" {
			t.Fatalf("split at %d: %s", split, bad)
		}
		if d := diffSteps(got, want); d != "" || rest != wantRest {
			t.Fatalf("split at %d: %s (rest %d, want %d)", split, d, rest, wantRest)
		}
		if len(data) <= 1024 {
			got, rest, bad := decodeChunks(bytewise(data)...)
			if bad != "" {
				t.Fatalf("byte by byte: %s", bad)
			}
			if d := diffSteps(got, want); d != "" || rest != wantRest {
				t.Fatalf("byte by byte: %s (rest %d, want %d)", d, rest, wantRest)
			}
		}

		// Every decoded request re-encodes to one that decodes the same.
		var enc []byte
		var req Request
		for _, s := range want {
			if s.Err != nil {
				continue
			}
			in := s.Req.request()
			enc = AppendRequest(enc[:0], &in)
			n, err := Decode(enc, &req)
			if err != nil || n != len(enc) {
				t.Fatalf("re-decode of %+v encoded as %q: n, err = %d, %v", s.Req, enc, n, err)
			}
			if g, w := snapshot(&req).meaningful(), s.Req.meaningful(); g != w {
				t.Fatalf("re-decode of %q:\n got %+v\nwant %+v", enc, g, w)
			}
			if !req.Cmd.Keyed() && len(s.Req.Key) == 0 && string(req.Key) != "_" {
				t.Fatalf("empty key of %v encoded as %q", req.Cmd, req.Key)
			}
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"ok", "ok\r", "queued", "error_auth", "acquired",
		"ok " + testTokenText + " 33",
		"acquired " + testTokenText + " 1\r",
		"ok 60",
		"ok " + statsEmpty,
		"ok ", "ok +1", "ok  1", "ok " + testTokenText,
		"ok 9223372036854775808",
	} {
		f.Add([]byte(s), uint64(0x0123456789abcdef), uint64(0xfedcba9876543210), int64(33))
	}
	f.Add([]byte(""), uint64(0), uint64(0), int64(0))
	f.Add([]byte("x"), uint64(math.MaxUint64), uint64(math.MaxUint64), int64(math.MaxInt64))
	f.Add([]byte("x"), uint64(1), uint64(2), int64(math.MinInt64))

	f.Fuzz(func(t *testing.T, line []byte, fence, salt uint64, lease int64) {
		var r Reply
		if ParseReply(line, &r) {
			if r.Code == CodeInvalid || r.Code >= numCodes {
				t.Fatalf("ParseReply(%q) ok with code %d", line, r.Code)
			}
			if r.HasToken && !r.HasLease || r.Lease < 0 || r.Body != nil && (r.HasToken || r.HasLease) {
				t.Fatalf("ParseReply(%q) = %+v: inconsistent", line, r)
			}
			// What parsed re-encodes to a line that parses the same.
			var enc []byte
			switch {
			case r.Body != nil:
				enc = AppendStats(nil, r.Body)
			case r.HasToken:
				enc = AppendGrant(nil, r.Code, r.Token, r.Lease)
			case r.HasLease:
				enc = AppendRenewed(nil, r.Lease)
			default:
				enc = AppendStatus(nil, r.Code)
			}
			var r2 Reply
			if !ParseReply(enc[:len(enc)-1], &r2) {
				t.Fatalf("re-encoded %q of %q does not parse", enc, line)
			}
			if !bytes.HasSuffix(r.Body, []byte("\r")) && !replyEqual(r, r2) {
				t.Fatalf("re-encoded %q of %q: got %+v, want %+v", enc, line, r2, r)
			}
		}

		// Everything the server writes parses back.
		if lease < 0 {
			lease = -(lease + 1)
		}
		tok := Token{Fence: fence, Salt: salt}
		for _, c := range []Code{CodeOK, CodeAcquired} {
			enc := AppendGrant(nil, c, tok, lease)
			want := Reply{Code: c, Token: tok, HasToken: true, Lease: lease, HasLease: true}
			if !ParseReply(enc[:len(enc)-1], &r) || !replyEqual(r, want) {
				t.Fatalf("AppendGrant %q parsed as %+v, want %+v", enc, r, want)
			}
		}
		enc := AppendRenewed(nil, lease)
		if want := (Reply{Code: CodeOK, Lease: lease, HasLease: true}); !ParseReply(enc[:len(enc)-1], &r) || !replyEqual(r, want) {
			t.Fatalf("AppendRenewed %q parsed as %+v, want %+v", enc, r, want)
		}
		text := tok.AppendText(nil)
		if back, ok := ParseToken(text); !ok || back != tok || string(text) != tok.String() {
			t.Fatalf("token %#v: text %q parses as %#v, %v", tok, text, back, ok)
		}
	})
}
