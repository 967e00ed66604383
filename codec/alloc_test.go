//go:build !race

package codec

import (
	"testing"
)

// The race detector makes allocations of its own; these run without it.

func assertNoAllocs(t *testing.T, name string, f func()) {
	t.Helper()
	if n := testing.AllocsPerRun(100, f); n != 0 {
		t.Errorf("%s: %v allocs per run, want 0", name, n)
	}
}

func TestDecodeAllocs(t *testing.T) {
	inputs := append(append([]string(nil), sampleRequests...), sampleErrors...)
	inputs = append(inputs, string(pipelined(32)))
	for _, in := range inputs {
		buf := []byte(in)
		var req Request
		assertNoAllocs(t, "Decode "+in, func() {
			for off := 0; off < len(buf); {
				n, _ := Decode(buf[off:], &req)
				if n == 0 {
					break
				}
				off += n
			}
		})
		assertNoAllocs(t, "CompleteLines "+in, func() { CompleteLines(buf) })
	}
	long := make([]byte, 2*MaxLineLen)
	var req Request
	assertNoAllocs(t, "Decode too long", func() { _, _ = Decode(long, &req) })
}

func TestEncodeAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	reqs := []Request{
		{Cmd: CmdLock, Key: []byte("my-key"), Timeout: 10, Lease: 30},
		{Cmd: CmdRenew, Key: []byte("my-key"), Token: testToken, Lease: 60},
		{Cmd: CmdEnqueue, Key: []byte("my-key")},
		{Cmd: CmdSemLock, Key: []byte("sem"), Timeout: 5, Limit: 3, Lease: 60},
		{Cmd: CmdSemRelease, Key: []byte("sem"), Token: testToken},
		{Cmd: CmdAuth, Arg: []byte("secret")},
		{Cmd: CmdStats},
		{Cmd: CmdPing},
	}
	for i := range reqs {
		assertNoAllocs(t, "AppendRequest "+reqs[i].Cmd.String(), func() { buf = AppendRequest(buf[:0], &reqs[i]) })
	}
	assertNoAllocs(t, "AppendGrant", func() { buf = AppendGrant(buf[:0], CodeOK, testToken, 33) })
	assertNoAllocs(t, "AppendGrant acquired", func() { buf = AppendGrant(buf[:0], CodeAcquired, testToken, MaxSeconds) })
	for _, c := range append(Codes(), CodeInvalid) {
		assertNoAllocs(t, "AppendStatus "+c.String(), func() { buf = AppendStatus(buf[:0], c) })
	}
	assertNoAllocs(t, "AppendRenewed", func() { buf = AppendRenewed(buf[:0], 33) })
	body := []byte(statsEmpty)
	assertNoAllocs(t, "AppendStats", func() { buf = AppendStats(buf[:0], body) })
	assertNoAllocs(t, "Token.AppendText", func() { buf = testToken.AppendText(buf[:0]) })
}

func TestParseAllocs(t *testing.T) {
	text := []byte(testTokenText)
	bad := []byte(testTokenText[:31] + "G")
	var tok Token
	assertNoAllocs(t, "ParseToken", func() { tok, _ = ParseToken(text) })
	assertNoAllocs(t, "ParseToken bad", func() { tok, _ = ParseToken(bad) })
	_ = tok

	var r Reply
	for _, line := range []string{
		"ok",
		"error_draining",
		"ok " + testTokenText + " 33",
		"acquired " + testTokenText + " 33\r",
		"ok 60",
		"ok " + statsEmpty,
		"bogus reply",
	} {
		b := []byte(line)
		assertNoAllocs(t, "ParseReply "+line, func() { ParseReply(b, &r) })
	}
}
