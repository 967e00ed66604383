package codec

import (
	"math"
	"strconv"
	"testing"
)

func TestAppendRequest(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	tests := []struct {
		name string
		give Request
		want string
	}{
		{"l", Request{Cmd: CmdLock, Key: []byte("k"), Timeout: 10}, "l\nk\n10\n"},
		{"l/lease", Request{Cmd: CmdLock, Key: []byte("k"), Timeout: 0, Lease: 30}, "l\nk\n0 30\n"},
		{"r", Request{Cmd: CmdRelease, Key: []byte("k"), Token: testToken}, "r\nk\n" + tok + "\n"},
		{"n", Request{Cmd: CmdRenew, Key: []byte("k"), Token: testToken}, "n\nk\n" + tok + "\n"},
		{"n/lease", Request{Cmd: CmdRenew, Key: []byte("k"), Token: testToken, Lease: 60}, "n\nk\n" + tok + " 60\n"},
		{"e", Request{Cmd: CmdEnqueue, Key: []byte("k")}, "e\nk\n\n"},
		{"e/lease", Request{Cmd: CmdEnqueue, Key: []byte("k"), Lease: 45}, "e\nk\n45\n"},
		{"w", Request{Cmd: CmdWait, Key: []byte("k"), Timeout: 5}, "w\nk\n5\n"},
		{"sl", Request{Cmd: CmdSemLock, Key: []byte("k"), Timeout: 5, Limit: 3}, "sl\nk\n5 3\n"},
		{"sl/lease", Request{Cmd: CmdSemLock, Key: []byte("k"), Timeout: 5, Limit: 3, Lease: 60}, "sl\nk\n5 3 60\n"},
		{"sr", Request{Cmd: CmdSemRelease, Key: []byte("k"), Token: testToken}, "sr\nk\n" + tok + "\n"},
		{"sn", Request{Cmd: CmdSemRenew, Key: []byte("k"), Token: testToken, Lease: 7}, "sn\nk\n" + tok + " 7\n"},
		{"se", Request{Cmd: CmdSemEnqueue, Key: []byte("k"), Limit: 3}, "se\nk\n3\n"},
		{"se/lease", Request{Cmd: CmdSemEnqueue, Key: []byte("k"), Limit: 3, Lease: 20}, "se\nk\n3 20\n"},
		{"sw", Request{Cmd: CmdSemWait, Key: []byte("k"), Timeout: 0}, "sw\nk\n0\n"},
		{"auth", Request{Cmd: CmdAuth, Arg: []byte("secret")}, "auth\n_\nsecret\n"},
		{"auth/key", Request{Cmd: CmdAuth, Key: []byte("x"), Arg: []byte("s s")}, "auth\nx\ns s\n"},
		{"stats", Request{Cmd: CmdStats}, "stats\n_\n\n"},
		{"ping", Request{Cmd: CmdPing}, "ping\n_\n\n"},
		{"ignored fields", Request{Cmd: CmdWait, Key: []byte("k"), Timeout: 1, Limit: 9, Lease: 9, Token: testToken, Arg: []byte("x")}, "w\nk\n1\n"},
		{"negative lease omitted", Request{Cmd: CmdEnqueue, Key: []byte("k"), Lease: -1}, "e\nk\n\n"},
		{"min int64", Request{Cmd: CmdLock, Key: []byte("k"), Timeout: math.MinInt64}, "l\nk\n-9223372036854775808\n"},
		{"invalid", Request{Cmd: CmdInvalid, Key: []byte("k")}, ""},
		{"out of range", Request{Cmd: numCommands, Key: []byte("k")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			if got := string(AppendRequest(nil, &tt.give)); got != tt.want {
				t.Errorf("AppendRequest = %q, want %q", got, tt.want)
			}
			prefix := []byte("ping\n_\n_\n")
			if got := string(AppendRequest(prefix, &tt.give)); got != string(prefix)+tt.want {
				t.Errorf("AppendRequest(prefix) = %q, want %q", got, string(prefix)+tt.want)
			}
		})
	}
}

// TestAppendRequestRoundTrip encodes requests of every command with
// AppendRequest and decodes them back.
func TestAppendRequestRoundTrip(t *testing.T) {
	t.Parallel()

	tok2 := Token{Fence: math.MaxUint64, Salt: 1}
	tests := []decoded{
		{Cmd: CmdLock, Key: "k", Timeout: 10},
		{Cmd: CmdLock, Key: "my/key:1", Timeout: 0, Lease: 1},
		{Cmd: CmdLock, Key: "ключ", Timeout: MaxSeconds, Lease: MaxSeconds},
		{Cmd: CmdRelease, Key: "k", Token: testToken},
		{Cmd: CmdRelease, Key: "k", Token: Token{}},
		{Cmd: CmdRenew, Key: "k", Token: tok2},
		{Cmd: CmdRenew, Key: "k", Token: testToken, Lease: 60},
		{Cmd: CmdEnqueue, Key: "k"},
		{Cmd: CmdEnqueue, Key: "k", Lease: 45},
		{Cmd: CmdWait, Key: "k", Timeout: 5},
		{Cmd: CmdSemLock, Key: "s", Timeout: 5, Limit: 3},
		{Cmd: CmdSemLock, Key: "s", Timeout: 0, Limit: math.MaxInt64, Lease: 9},
		{Cmd: CmdSemRelease, Key: "s", Token: testToken},
		{Cmd: CmdSemRenew, Key: "s", Token: tok2},
		{Cmd: CmdSemRenew, Key: "s", Token: testToken, Lease: 3},
		{Cmd: CmdSemEnqueue, Key: "s", Limit: 1},
		{Cmd: CmdSemEnqueue, Key: "s", Limit: 2, Lease: 20},
		{Cmd: CmdSemWait, Key: "s", Timeout: 12},
		{Cmd: CmdAuth, Key: "_", Arg: "secret"},
		{Cmd: CmdAuth, Key: "", Arg: "a secret\twith spaces"},
		{Cmd: CmdAuth, Key: "_", Arg: ""},
		{Cmd: CmdStats},
		{Cmd: CmdPing},
	}
	for _, want := range tests {
		name := want.Cmd.String() + "/" + strconv.FormatInt(want.Lease, 10)
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			in := want.request()
			buf := AppendRequest(nil, &in)
			var req Request
			n, err := Decode(buf, &req)
			if err != nil || n != len(buf) {
				t.Fatalf("Decode(%q) = %d, %v; want %d, nil", buf, n, err, len(buf))
			}
			if got := snapshot(&req).meaningful(); got != want.meaningful() {
				t.Errorf("round trip of %q:\n got %+v\nwant %+v", buf, got, want.meaningful())
			}
			if !want.Cmd.Keyed() && string(req.Key) != "_" && want.Key == "" {
				t.Errorf("empty key of %v encoded as %q, want _", want.Cmd, req.Key)
			}
		})
	}
}

func TestAppendInt(t *testing.T) {
	t.Parallel()

	for _, v := range []int64{0, 1, 9, 10, 99, 100, 33, MaxSeconds, math.MaxInt64, -1, -10, math.MinInt64 + 1, math.MinInt64} {
		if got, want := string(appendInt([]byte("x"), v)), "x"+strconv.FormatInt(v, 10); got != want {
			t.Errorf("appendInt(%d) = %q, want %q", v, got, want)
		}
	}
}
