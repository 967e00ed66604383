package codec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestDecodeValid(t *testing.T) {
	t.Parallel()

	key256 := strings.Repeat("k", MaxLineLen)
	secret256 := strings.Repeat("s", MaxLineLen)
	maxInt := strconv.FormatInt(1<<63-1, 10)
	maxSec := strconv.FormatInt(MaxSeconds, 10)
	overSec := strconv.FormatInt(MaxSeconds+1, 10)

	tests := []struct {
		name string
		give string
		want decoded
	}{
		// l key timeout [lease]
		{"l", "l\nk\n10\n", decoded{Cmd: CmdLock, Key: "k", Arg: "10", Timeout: 10}},
		{"l/lease", "l\nk\n10 30\n", decoded{Cmd: CmdLock, Key: "k", Arg: "10 30", Timeout: 10, Lease: 30}},
		{"l/zero timeout", "l\nk\n0\n", decoded{Cmd: CmdLock, Key: "k", Arg: "0", Timeout: 0}},
		{"l/plus", "l\nk\n+10 +30\n", decoded{Cmd: CmdLock, Key: "k", Arg: "+10 +30", Timeout: 10, Lease: 30}},
		{"l/plus zero timeout", "l\nk\n+0\n", decoded{Cmd: CmdLock, Key: "k", Arg: "+0", Timeout: 0}},
		{"l/leading zeros", "l\nk\n007 0030\n", decoded{Cmd: CmdLock, Key: "k", Arg: "007 0030", Timeout: 7, Lease: 30}},
		{"l/spaces and tabs", "l\nk\n \t 10 \t\t  30 \t\n", decoded{Cmd: CmdLock, Key: "k", Arg: " \t 10 \t\t  30 \t", Timeout: 10, Lease: 30}},
		// Any ASCII whitespace separates arguments, as dflockd's strings.Fields.
		{"l/vt ff", "l\nk\n\v0\f5\v\n", decoded{Cmd: CmdLock, Key: "k", Arg: "\v0\f5\v", Timeout: 0, Lease: 5}},
		{"sl/inner cr", "sl\nk\n1\r2\r3\r\r\n", decoded{Cmd: CmdSemLock, Key: "k", Arg: "1\r2\r3\r", Timeout: 1, Limit: 2, Lease: 3}},
		{"r/token vt", "r\nk\n\f" + testTokenText + "\v\n", decoded{Cmd: CmdRelease, Key: "k", Arg: "\f" + testTokenText + "\v", Token: testToken}},
		{"e/ff blank", "e\nk\n\f\v\n", decoded{Cmd: CmdEnqueue, Key: "k", Arg: "\f\v"}},
		{"l/crlf", "l\r\nk\r\n10 30\r\n", decoded{Cmd: CmdLock, Key: "k", Arg: "10 30", Timeout: 10, Lease: 30}},
		{"l/crlf on one line only", "l\nk\r\n10\n", decoded{Cmd: CmdLock, Key: "k", Arg: "10", Timeout: 10}},
		{"l/max seconds", "l\nk\n" + maxSec + " " + maxSec + "\n", decoded{Cmd: CmdLock, Key: "k", Arg: maxSec + " " + maxSec, Timeout: MaxSeconds, Lease: MaxSeconds}},
		{"l/clamp", "l\nk\n" + overSec + " " + overSec + "\n", decoded{Cmd: CmdLock, Key: "k", Arg: overSec + " " + overSec, Timeout: MaxSeconds, Lease: MaxSeconds}},
		{"l/clamp max int64", "l\nk\n" + maxInt + " +" + maxInt + "\n", decoded{Cmd: CmdLock, Key: "k", Arg: maxInt + " +" + maxInt, Timeout: MaxSeconds, Lease: MaxSeconds}},
		{"l/utf8 key", "l\nключ/ü:1\n1\n", decoded{Cmd: CmdLock, Key: "ключ/ü:1", Arg: "1", Timeout: 1}},
		{"l/key of 256 bytes", "l\n" + key256 + "\n1\n", decoded{Cmd: CmdLock, Key: key256, Arg: "1", Timeout: 1}},
		{"l/key of 255 bytes + cr", "l\n" + key256[1:] + "\r\n1\n", decoded{Cmd: CmdLock, Key: key256[1:], Arg: "1", Timeout: 1}},
		{"l/key underscore", "l\n_\n1\n", decoded{Cmd: CmdLock, Key: "_", Arg: "1", Timeout: 1}},

		// r key token
		{"r", "r\nk\n" + testTokenText + "\n", decoded{Cmd: CmdRelease, Key: "k", Arg: testTokenText, Token: testToken}},
		{"r/crlf spaces", "r\r\nk\r\n  " + testTokenText + "\t\r\n", decoded{Cmd: CmdRelease, Key: "k", Arg: "  " + testTokenText + "\t", Token: testToken}},
		{"r/zero token", "r\nk\n" + strings.Repeat("0", TokenLen) + "\n", decoded{Cmd: CmdRelease, Key: "k", Arg: strings.Repeat("0", TokenLen)}},

		// n key token [lease]
		{"n", "n\nk\n" + testTokenText + "\n", decoded{Cmd: CmdRenew, Key: "k", Arg: testTokenText, Token: testToken}},
		{"n/lease", "n\nk\n" + testTokenText + " 60\n", decoded{Cmd: CmdRenew, Key: "k", Arg: testTokenText + " 60", Token: testToken, Lease: 60}},
		{"n/plus lease crlf", "n\r\nk\r\n" + testTokenText + "  +60\r\n", decoded{Cmd: CmdRenew, Key: "k", Arg: testTokenText + "  +60", Token: testToken, Lease: 60}},
		{"n/clamp lease", "n\nk\n" + testTokenText + " " + overSec + "\n", decoded{Cmd: CmdRenew, Key: "k", Arg: testTokenText + " " + overSec, Token: testToken, Lease: MaxSeconds}},

		// e key [lease]
		{"e", "e\nk\n\n", decoded{Cmd: CmdEnqueue, Key: "k"}},
		{"e/blank", "e\nk\n \t \n", decoded{Cmd: CmdEnqueue, Key: "k", Arg: " \t "}},
		{"e/crlf", "e\r\nk\r\n\r\n", decoded{Cmd: CmdEnqueue, Key: "k"}},
		{"e/lease", "e\nk\n45\n", decoded{Cmd: CmdEnqueue, Key: "k", Arg: "45", Lease: 45}},
		{"e/plus lease spaces", "e\nk\n  +45  \n", decoded{Cmd: CmdEnqueue, Key: "k", Arg: "  +45  ", Lease: 45}},
		{"e/clamp", "e\nk\n" + maxInt + "\n", decoded{Cmd: CmdEnqueue, Key: "k", Arg: maxInt, Lease: MaxSeconds}},

		// w key timeout
		{"w", "w\nk\n5\n", decoded{Cmd: CmdWait, Key: "k", Arg: "5", Timeout: 5}},
		{"w/zero plus crlf", "w\r\nk\r\n+0\r\n", decoded{Cmd: CmdWait, Key: "k", Arg: "+0"}},
		{"w/clamp", "w\nk\n" + overSec + "\n", decoded{Cmd: CmdWait, Key: "k", Arg: overSec, Timeout: MaxSeconds}},

		// sl key timeout limit [lease]
		{"sl", "sl\nk\n5 3\n", decoded{Cmd: CmdSemLock, Key: "k", Arg: "5 3", Timeout: 5, Limit: 3}},
		{"sl/lease", "sl\nk\n5 3 60\n", decoded{Cmd: CmdSemLock, Key: "k", Arg: "5 3 60", Timeout: 5, Limit: 3, Lease: 60}},
		{"sl/plus spaces crlf", "sl\r\nk\r\n\t+0   +3 \t +60 \r\n", decoded{Cmd: CmdSemLock, Key: "k", Arg: "\t+0   +3 \t +60 ", Limit: 3, Lease: 60}},
		{"sl/clamp", "sl\nk\n" + overSec + " " + maxInt + " " + overSec + "\n", decoded{Cmd: CmdSemLock, Key: "k", Arg: overSec + " " + maxInt + " " + overSec, Timeout: MaxSeconds, Limit: 1<<63 - 1, Lease: MaxSeconds}},

		// sr key token
		{"sr", "sr\nk\n" + testTokenText + "\n", decoded{Cmd: CmdSemRelease, Key: "k", Arg: testTokenText, Token: testToken}},
		{"sr/crlf", "sr\r\nk\r\n" + testTokenText + "\r\n", decoded{Cmd: CmdSemRelease, Key: "k", Arg: testTokenText, Token: testToken}},

		// sn key token [lease]
		{"sn", "sn\nk\n" + testTokenText + "\n", decoded{Cmd: CmdSemRenew, Key: "k", Arg: testTokenText, Token: testToken}},
		{"sn/lease", "sn\nk\n" + testTokenText + " +7\n", decoded{Cmd: CmdSemRenew, Key: "k", Arg: testTokenText + " +7", Token: testToken, Lease: 7}},

		// se key limit [lease]
		{"se", "se\nk\n3\n", decoded{Cmd: CmdSemEnqueue, Key: "k", Arg: "3", Limit: 3}},
		{"se/lease", "se\nk\n3 20\n", decoded{Cmd: CmdSemEnqueue, Key: "k", Arg: "3 20", Limit: 3, Lease: 20}},
		{"se/plus crlf", "se\r\nk\r\n +3\t+20\r\n", decoded{Cmd: CmdSemEnqueue, Key: "k", Arg: " +3\t+20", Limit: 3, Lease: 20}},

		// sw key timeout
		{"sw", "sw\nk\n0\n", decoded{Cmd: CmdSemWait, Key: "k", Arg: "0"}},
		{"sw/timeout", "sw\nk\n+12\n", decoded{Cmd: CmdSemWait, Key: "k", Arg: "+12", Timeout: 12}},

		// auth _ secret: key ignored (may be empty), secret trimmed
		{"auth", "auth\n_\nsecret\n", decoded{Cmd: CmdAuth, Key: "_", Arg: "secret"}},
		{"auth/empty key", "auth\n\nsecret\n", decoded{Cmd: CmdAuth, Key: "", Arg: "secret"}},
		{"auth/any key", "auth\na key\twith spaces\nsecret\n", decoded{Cmd: CmdAuth, Key: "a key\twith spaces", Arg: "secret"}},
		{"auth/trim", "auth\n_\n \t secret \t \n", decoded{Cmd: CmdAuth, Key: "_", Arg: "secret"}},
		{"auth/trim crlf", "auth\r\n_\r\n  secret  \r\n", decoded{Cmd: CmdAuth, Key: "_", Arg: "secret"}},
		{"auth/inner spaces kept", "auth\n_\n  my  secret\tphrase \n", decoded{Cmd: CmdAuth, Key: "_", Arg: "my  secret\tphrase"}},
		{"auth/empty secret", "auth\n_\n\n", decoded{Cmd: CmdAuth, Key: "_", Arg: ""}},
		{"auth/secret of 256 bytes", "auth\n_\n" + secret256 + "\n", decoded{Cmd: CmdAuth, Key: "_", Arg: secret256}},

		// stats/ping: key and argument ignored
		{"stats", "stats\n_\n_\n", decoded{Cmd: CmdStats, Key: "_", Arg: "_"}},
		{"stats/empty", "stats\n\n\n", decoded{Cmd: CmdStats}},
		{"stats/garbage", "stats\n a b \n-1 x 0\n", decoded{Cmd: CmdStats, Key: " a b ", Arg: "-1 x 0"}},
		{"stats/crlf", "stats\r\n_\r\n_\r\n", decoded{Cmd: CmdStats, Key: "_", Arg: "_"}},
		{"ping", "ping\n_\n_\n", decoded{Cmd: CmdPing, Key: "_", Arg: "_"}},
		{"ping/empty", "ping\n\n\n", decoded{Cmd: CmdPing}},
		{"ping/garbage", "ping\nk\tk\n1 2 3\n", decoded{Cmd: CmdPing, Key: "k\tk", Arg: "1 2 3"}},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			var req Request
			n, err := Decode([]byte(tt.give), &req)
			if err != nil {
				t.Fatalf("Decode(%q) error = %v, want nil", tt.give, err)
			}
			if n != len(tt.give) {
				t.Fatalf("Decode(%q) n = %d, want %d", tt.give, n, len(tt.give))
			}
			if got := snapshot(&req); got != tt.want {
				t.Errorf("Decode(%q)\n got %+v\nwant %+v", tt.give, got, tt.want)
			}

			// A following request does not change the result nor n.
			buf := []byte(tt.give + "ping\n_\n_\n")
			n, err = Decode(buf, &req)
			if err != nil || n != len(tt.give) {
				t.Fatalf("with a following request: n, err = %d, %v; want %d, nil", n, err, len(tt.give))
			}
			if got := snapshot(&req); got != tt.want {
				t.Errorf("with a following request:\n got %+v\nwant %+v", got, tt.want)
			}
			n, err = Decode(buf[n:], &req)
			if err != nil || n != len("ping\n_\n_\n") || req.Cmd != CmdPing {
				t.Errorf("next request: n, err, cmd = %d, %v, %v", n, err, req.Cmd)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	overflow := "9223372036854775808" // 1<<63

	tests := []struct {
		name    string
		give    string
		wantErr error
	}{
		// unknown command
		{"unknown/x", "x\nk\n1\n", ErrUnknownCommand},
		{"unknown/uppercase", "L\nk\n1\n", ErrUnknownCommand},
		{"unknown/word", "lock\nk\n1\n", ErrUnknownCommand},
		{"unknown/trailing space", "l \nk\n1\n", ErrUnknownCommand},
		{"unknown/leading space", " l\nk\n1\n", ErrUnknownCommand},
		{"unknown/tab", "l\t\nk\n1\n", ErrUnknownCommand},
		{"unknown/double cr", "l\r\r\nk\n1\n", ErrUnknownCommand},
		{"unknown/nul", "l\x00\nk\n1\n", ErrUnknownCommand},
		{"unknown/auth uppercase", "AUTH\n_\ns\n", ErrUnknownCommand},
		{"unknown/prefix", "st\n_\n_\n", ErrUnknownCommand},
		{"unknown/beats bad key", "x\n\n-1\n", ErrUnknownCommand},
		{"empty command line", "\nk\n1\n", ErrUnknownCommand},
		{"empty command line/crlf", "\r\nk\r\n1\r\n", ErrUnknownCommand},
		{"blank request", "\n\n\n", ErrUnknownCommand},

		// key
		{"key/empty", "l\n\n1\n", ErrBadKey},
		{"key/empty crlf", "l\r\n\r\n1\r\n", ErrBadKey},
		{"key/space", "l\na b\n1\n", ErrBadKey},
		{"key/leading space", "l\n k\n1\n", ErrBadKey},
		{"key/trailing space", "l\nk \n1\n", ErrBadKey},
		{"key/tab", "l\na\tb\n1\n", ErrBadKey},
		{"key/internal cr", "l\na\rb\n1\n", ErrBadKey},
		{"key/leading cr", "l\n\rk\n1\n", ErrBadKey},
		{"key/two trailing cr", "l\nk\r\r\n1\n", ErrBadKey},
		{"key/only cr", "l\n\r\r\n1\n", ErrBadKey},
		{"key/beats bad args", "l\n\n-1 x y\n", ErrBadKey},

		// integers
		{"timeout/negative", "l\nk\n-1\n", ErrBadInteger},
		{"timeout/negative w", "w\nk\n-5\n", ErrBadInteger},
		{"timeout/negative sl", "sl\nk\n-1 3\n", ErrBadInteger},
		{"timeout/negative sw", "sw\nk\n-1\n", ErrBadInteger},
		{"timeout/negative zero", "l\nk\n-0\n", ErrBadInteger},
		{"timeout/letters", "l\nk\nabc\n", ErrBadInteger},
		{"timeout/fraction", "l\nk\n1.5\n", ErrBadInteger},
		{"timeout/plus only", "l\nk\n+\n", ErrBadInteger},
		{"timeout/double plus", "l\nk\n++1\n", ErrBadInteger},
		{"timeout/plus minus", "l\nk\n+-1\n", ErrBadInteger},
		{"timeout/hex", "l\nk\n0x10\n", ErrBadInteger},
		{"timeout/exponent", "l\nk\n1e3\n", ErrBadInteger},
		{"timeout/unit", "l\nk\n10s\n", ErrBadInteger},
		{"timeout/comma", "l\nk\n10,30\n", ErrBadInteger},
		{"timeout/non-ascii digit", "l\nk\n١\n", ErrBadInteger},
		{"timeout/overflow", "l\nk\n" + overflow + "\n", ErrBadInteger},
		{"timeout/overflow 20 digits", "l\nk\n99999999999999999999\n", ErrBadInteger},
		{"timeout/overflow huge", "w\nk\n" + strings.Repeat("9", 100) + "\n", ErrBadInteger},
		{"timeout/overflow plus", "sw\nk\n+" + overflow + "\n", ErrBadInteger},

		// lease
		{"lease/zero", "l\nk\n10 0\n", ErrBadValue},
		{"lease/plus zero", "l\nk\n10 +0\n", ErrBadValue},
		{"lease/zeros", "l\nk\n10 000\n", ErrBadValue},
		{"lease/zero n", "n\nk\n" + tok + " 0\n", ErrBadValue},
		{"lease/zero e", "e\nk\n0\n", ErrBadValue},
		{"lease/zero sl", "sl\nk\n1 2 0\n", ErrBadValue},
		{"lease/zero sn", "sn\nk\n" + tok + " 0\n", ErrBadValue},
		{"lease/zero se", "se\nk\n2 0\n", ErrBadValue},
		{"lease/negative", "l\nk\n10 -5\n", ErrBadInteger},
		{"lease/negative e", "e\nk\n-1\n", ErrBadInteger},
		{"lease/negative n", "n\nk\n" + tok + " -1\n", ErrBadInteger},
		{"lease/letters", "e\nk\nforever\n", ErrBadInteger},
		{"lease/overflow", "l\nk\n10 " + overflow + "\n", ErrBadInteger},
		{"lease/overflow e", "e\nk\n" + overflow + "\n", ErrBadInteger},

		// limit
		{"limit/zero sl", "sl\nk\n1 0\n", ErrBadValue},
		{"limit/zero se", "se\nk\n0\n", ErrBadValue},
		{"limit/plus zero", "se\nk\n+0\n", ErrBadValue},
		{"limit/negative", "se\nk\n-2\n", ErrBadInteger},
		{"limit/negative sl", "sl\nk\n1 -2\n", ErrBadInteger},
		{"limit/overflow", "se\nk\n" + overflow + "\n", ErrBadInteger},

		// argument count: too few
		{"few/l empty", "l\nk\n\n", ErrArgCount},
		{"few/l blank", "l\nk\n \t \n", ErrArgCount},
		{"few/l crlf", "l\r\nk\r\n\r\n", ErrArgCount},
		{"few/w", "w\nk\n\n", ErrArgCount},
		{"few/sl one", "sl\nk\n5\n", ErrArgCount},
		{"few/sl none", "sl\nk\n\n", ErrArgCount},
		{"few/se", "se\nk\n\n", ErrArgCount},
		{"few/sw", "sw\nk\n  \n", ErrArgCount},
		{"few/n", "n\nk\n\n", ErrArgCount},
		{"few/sn crlf", "sn\nk\n\r\n", ErrArgCount},

		// empty token
		{"token/empty r", "r\nk\n\n", ErrArgCount},
		{"token/empty sr", "sr\nk\n \t\n", ErrArgCount},

		// argument count: too many
		{"many/l", "l\nk\n1 2 3\n", ErrArgCount},
		{"many/w", "w\nk\n1 2\n", ErrArgCount},
		{"many/sw", "sw\nk\n1 2\n", ErrArgCount},
		{"many/e", "e\nk\n1 2\n", ErrArgCount},
		{"many/se", "se\nk\n1 2 3\n", ErrArgCount},
		{"many/sl", "sl\nk\n1 2 3 4\n", ErrArgCount},
		{"many/r", "r\nk\n" + tok + " " + tok + "\n", ErrArgCount},
		{"many/r lease", "r\nk\n" + tok + " 1\n", ErrArgCount},
		{"many/sr", "sr\nk\n" + tok + " 1\n", ErrArgCount},
		{"many/n", "n\nk\n" + tok + " 1 2\n", ErrArgCount},
		{"many/sn", "sn\nk\n" + tok + " 1 x\n", ErrArgCount},
		{"many/trailing garbage", "l\nk\n1 2 x\n", ErrArgCount},

		// malformed tokens
		{"token/short", "r\nk\n" + tok[1:] + "\n", ErrBadToken},
		{"token/long", "r\nk\n" + tok + "0\n", ErrBadToken},
		{"token/uppercase", "r\nk\n" + strings.ToUpper(tok) + "\n", ErrBadToken},
		{"token/one uppercase", "sr\nk\n" + tok[:31] + "F\n", ErrBadToken},
		{"token/non-hex", "n\nk\n" + tok[:31] + "g\n", ErrBadToken},
		{"token/non-hex first half", "sn\nk\ng" + tok[1:] + "\n", ErrBadToken},
		{"token/0x", "r\nk\n0x" + tok[2:] + "\n", ErrBadToken},
		{"token/number", "n\nk\n60\n", ErrBadToken},
		{"token/non-ascii", "r\nk\n" + tok[:30] + "é\n", ErrBadToken},
		{"token/beats lease", "n\nk\nzz -1\n", ErrBadToken},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			var req Request
			n, err := Decode([]byte(tt.give), &req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(%q) error = %v, want %v", tt.give, err, tt.wantErr)
			}
			if n != len(tt.give) {
				t.Fatalf("Decode(%q) n = %d, want %d (the whole request)", tt.give, n, len(tt.give))
			}
			if !InSync(err) {
				t.Errorf("InSync(%v) = false, want true", err)
			}

			// Decoding continues with the next request.
			next := "l\nnext\n1\n"
			buf := []byte(tt.give + next)
			n, err = Decode(buf, &req)
			if !errors.Is(err, tt.wantErr) || n != len(tt.give) {
				t.Fatalf("with a following request: n, err = %d, %v; want %d, %v", n, err, len(tt.give), tt.wantErr)
			}
			n, err = Decode(buf[n:], &req)
			want := decoded{Cmd: CmdLock, Key: "next", Arg: "1", Timeout: 1}
			if err != nil || n != len(next) || snapshot(&req) != want {
				t.Errorf("next request: n, err, req = %d, %v, %+v", n, err, snapshot(&req))
			}
		})
	}
}

// TestDecodeEmptyKey checks that every keyed command rejects an empty key and
// every unkeyed one accepts it.
func TestDecodeEmptyKey(t *testing.T) {
	t.Parallel()

	args := map[Command]string{
		CmdLock: "1", CmdRelease: testTokenText, CmdRenew: testTokenText,
		CmdEnqueue: "", CmdWait: "1", CmdSemLock: "1 2", CmdSemRelease: testTokenText,
		CmdSemRenew: testTokenText, CmdSemEnqueue: "2", CmdSemWait: "1",
		CmdAuth: "s", CmdStats: "", CmdPing: "",
	}
	for c := CmdLock; c < numCommands; c++ {
		t.Run(c.String(), func(t *testing.T) {
			arg, ok := args[c]
			if !ok {
				t.Fatalf("no argument for %v", c)
			}
			var req Request
			good := c.String() + "\nk\n" + arg + "\n"
			if n, err := Decode([]byte(good), &req); err != nil || n != len(good) || req.Cmd != c {
				t.Fatalf("Decode(%q) = %d, %v, cmd %v", good, n, err, req.Cmd)
			}
			give := c.String() + "\n\n" + arg + "\n"
			n, err := Decode([]byte(give), &req)
			if n != len(give) {
				t.Fatalf("Decode(%q) n = %d, want %d", give, n, len(give))
			}
			if c.Keyed() {
				if err != ErrBadKey {
					t.Errorf("Decode(%q) error = %v, want ErrBadKey", give, err)
				}
			} else if err != nil || req.Cmd != c || len(req.Key) != 0 {
				t.Errorf("Decode(%q) = %v, cmd %v, key %q; want nil, %v, empty", give, err, req.Cmd, req.Key, c)
			}
		})
	}
}

func TestDecodeLineLength(t *testing.T) {
	t.Parallel()

	a := func(n int) string { return strings.Repeat("a", n) }

	tests := []struct {
		name    string
		give    string
		wantN   int // -1: the whole input
		wantErr error
	}{
		{"key 256", "l\n" + a(256) + "\n1\n", -1, nil},
		{"key 255 + cr", "l\n" + a(255) + "\r\n1\n", -1, nil},
		{"key 256 + cr", "l\n" + a(256) + "\r\n1\n", 0, ErrLineTooLong},
		{"key 257", "l\n" + a(257) + "\n1\n", 0, ErrLineTooLong},
		{"key 257 no newline", "l\n" + a(257), 0, ErrLineTooLong},
		{"key 256 no newline", "l\n" + a(256), 0, nil},
		{"key 256 cr no newline", "l\n" + a(256) + "\r", 0, ErrLineTooLong},
		{"key 300 with newline later", "l\n" + a(300) + "\n1\n", 0, ErrLineTooLong},

		{"command 256", a(256) + "\nk\n1\n", -1, ErrUnknownCommand},
		{"command 255 + cr", a(255) + "\r\nk\n1\n", -1, ErrUnknownCommand},
		{"command 256 + cr", a(256) + "\r\nk\n1\n", 0, ErrLineTooLong},
		{"command 257 no newline", a(257), 0, ErrLineTooLong},
		{"command 256 no newline", a(256), 0, nil},
		{"command 1000 no newline", a(1000), 0, ErrLineTooLong},
		{"command 257 spaces", strings.Repeat(" ", 257), 0, ErrLineTooLong},

		{"arg 256", "l\nk\n1" + strings.Repeat(" ", 255) + "\n", -1, nil},
		{"arg 255 + cr", "l\nk\n1" + strings.Repeat(" ", 254) + "\r\n", -1, nil},
		{"arg 256 + cr", "l\nk\n1" + strings.Repeat(" ", 255) + "\r\n", 0, ErrLineTooLong},
		{"arg 257 no newline", "l\nk\n" + strings.Repeat(" ", 257), 0, ErrLineTooLong},
		{"arg 256 no newline", "l\nk\n" + strings.Repeat(" ", 256), 0, nil},
		{"secret 256", "auth\n_\n" + a(256) + "\n", -1, nil},
		{"secret 257", "auth\n_\n" + a(257) + "\n", 0, ErrLineTooLong},
		{"stats arg 257", "stats\n_\n" + a(257) + "\n", 0, ErrLineTooLong},
		{"ping key 257", "ping\n" + a(257) + "\n_\n", 0, ErrLineTooLong},
		{"too long beats unknown command", "x\n" + a(257), 0, ErrLineTooLong},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			wantN := tt.wantN
			if wantN < 0 {
				wantN = len(tt.give)
			}
			var req Request
			n, err := Decode([]byte(tt.give), &req)
			if err != tt.wantErr || n != wantN {
				t.Fatalf("Decode(%q...) = %d, %v; want %d, %v", tt.give[:min(len(tt.give), 16)], n, err, wantN, tt.wantErr)
			}
			if InSync(err) != (err != ErrLineTooLong) {
				t.Errorf("InSync(%v) = %v", err, InSync(err))
			}
		})
	}
}

// TestDecodeLineTooLongLater checks that an over-long line in a later
// request is reported after the good requests in front of it, never waiting
// for its newline.
func TestDecodeLineTooLongLater(t *testing.T) {
	t.Parallel()

	long := strings.Repeat("z", MaxLineLen+1) // no newline ever
	tests := []struct {
		name string
		give string
	}{
		{"first line", "l\nk\n1\n" + long},
		{"second line", "l\nk\n1\nl\n" + long},
		{"third line", "l\nk\n1\nl\nk\n" + long},
		{"after an error", "l\nk\n-1\nl\nk\n" + long},
		{"second line of first request", "l\n" + long},
		{"third line of first request", "l\nk\n" + long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			buf := []byte(tt.give)
			steps, _, bad := decodeAll(buf)
			if bad != "" {
				t.Fatal(bad)
			}
			if len(steps) == 0 || steps[len(steps)-1].Err != ErrLineTooLong || steps[len(steps)-1].N != 0 {
				t.Fatalf("steps = %v, want ErrLineTooLong with n=0 last", steps)
			}
			for _, s := range steps[:len(steps)-1] {
				if !InSync(s.Err) {
					t.Errorf("unexpected %v before the over-long line", s.Err)
				}
			}
			// Fed byte by byte, the error comes as soon as the 257th byte
			// of the line arrives.
			var (
				req Request
				acc []byte
				off int
			)
			for i, c := range buf {
				acc = append(acc, c)
				for {
					n, err := Decode(acc[off:], &req)
					if err == ErrLineTooLong {
						if i != len(buf)-1 {
							t.Fatalf("ErrLineTooLong at byte %d of %d, want at the last", i, len(buf))
						}
						return
					}
					if n == 0 {
						break
					}
					off += n
				}
			}
			t.Fatal("no ErrLineTooLong")
		})
	}
}

func TestDecodeIncomplete(t *testing.T) {
	t.Parallel()

	inputs := append([]string{
		"sl\r\nkey\r\n5 3 60\r\n",
		"x\nk\n1\n", // a malformed request is not reported before it is complete
		"l\n\n-1\n",
		"l\n" + strings.Repeat("a", MaxLineLen) + "\n" + strings.Repeat("1", MaxLineLen) + "\n",
	}, sampleRequests...)
	for _, in := range inputs {
		for i := 0; i < len(in); i++ {
			var req Request
			n, err := Decode([]byte(in[:i]), &req)
			if n != 0 || err != nil {
				t.Fatalf("Decode(%q) = %d, %v; want 0, nil (need more)", in[:i], n, err)
			}
			if got, want := CompleteLines([]byte(in[:i])), strings.Count(in[:i], "\n"); got != want {
				t.Fatalf("CompleteLines(%q) = %d, want %d", in[:i], got, want)
			}
		}
	}

	// "l\nk\n10" could still become "l\nk\n100\n": never decided early.
	var req Request
	if n, err := Decode([]byte("l\nk\n10"), &req); n != 0 || err != nil {
		t.Errorf("Decode without the final newline = %d, %v; want 0, nil", n, err)
	}
	if n, err := Decode(nil, &req); n != 0 || err != nil {
		t.Errorf("Decode(nil) = %d, %v; want 0, nil", n, err)
	}
}

func TestCompleteLines(t *testing.T) {
	t.Parallel()

	long := strings.Repeat("a", MaxLineLen+1)
	tests := []struct {
		give string
		want int
	}{
		{"", 0},
		{"l", 0},
		{"l\r", 0},
		{"l\n", 1},
		{"\n", 1},
		{"l\nk", 1},
		{"l\r\nk\r", 1},
		{"l\nk\n", 2},
		{"\n\n", 2},
		{"l\nk\n1", 2},
		{"l\nk\n1\n", 3},
		{"\n\n\n", 3},
		{"l\nk\n1\nping\n_\n_\n", 3},
		{long, 0},
		{long + "\n", 0},
		{"l\n" + long, 1},
		{"l\nk\n" + long, 2},
		{strings.Repeat("a", MaxLineLen) + "\n", 1},
	}
	for _, tt := range tests {
		if got := CompleteLines([]byte(tt.give)); got != tt.want {
			t.Errorf("CompleteLines(%q) = %d, want %d", tt.give, got, tt.want)
		}
	}
}

func TestInSync(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give error
		want bool
	}{
		{nil, true},
		{ErrUnknownCommand, true},
		{ErrBadKey, true},
		{ErrArgCount, true},
		{ErrBadInteger, true},
		{ErrBadValue, true},
		{ErrBadToken, true},
		{ErrLineTooLong, false},
	}
	for _, tt := range tests {
		if got := InSync(tt.give); got != tt.want {
			t.Errorf("InSync(%v) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give      Command
		wantVerb  string
		wantSem   bool
		wantKeyed bool
	}{
		{CmdInvalid, "invalid", false, false},
		{CmdLock, "l", false, true},
		{CmdRelease, "r", false, true},
		{CmdRenew, "n", false, true},
		{CmdEnqueue, "e", false, true},
		{CmdWait, "w", false, true},
		{CmdSemLock, "sl", true, true},
		{CmdSemRelease, "sr", true, true},
		{CmdSemRenew, "sn", true, true},
		{CmdSemEnqueue, "se", true, true},
		{CmdSemWait, "sw", true, true},
		{CmdAuth, "auth", false, false},
		{CmdStats, "stats", false, false},
		{CmdPing, "ping", false, false},
		{numCommands, "invalid", false, false},
		{255, "invalid", false, false},
	}
	for _, tt := range tests {
		if got := tt.give.String(); got != tt.wantVerb {
			t.Errorf("Command(%d).String() = %q, want %q", tt.give, got, tt.wantVerb)
		}
		if got := tt.give.IsSemaphore(); got != tt.wantSem {
			t.Errorf("%v.IsSemaphore() = %v, want %v", tt.give, got, tt.wantSem)
		}
		if got := tt.give.Keyed(); got != tt.wantKeyed {
			t.Errorf("%v.Keyed() = %v, want %v", tt.give, got, tt.wantKeyed)
		}
		if tt.give != CmdInvalid && tt.give < numCommands {
			if got := lookupCommand([]byte(tt.wantVerb)); got != tt.give {
				t.Errorf("lookupCommand(%q) = %v, want %v", tt.wantVerb, got, tt.give)
			}
		}
	}
	if got := lookupCommand([]byte("invalid")); got != CmdInvalid {
		t.Errorf("lookupCommand(invalid) = %v", got)
	}
}

// TestIndexNewline compares the SWAR newline search with bytes.IndexByte on
// buffers of bytes chosen to trip the bit trick ('\n' with the high bit set,
// '\n'±1, NUL, 0xff).
func TestIndexNewline(t *testing.T) {
	t.Parallel()

	alphabet := []byte{'\n', '\n' | 0x80, '\n' + 1, '\n' - 1, 0, 0xff, 0x7f, 0x80, 'a', '\r', ' '}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 0, 80)
	for range 20000 {
		buf = buf[:rng.IntN(cap(buf))]
		for i := range buf {
			if rng.IntN(8) == 0 {
				buf[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				buf[i] = alphabet[1+rng.IntN(len(alphabet)-1)]
			}
		}
		if got, want := indexNewline(buf), bytes.IndexByte(buf, '\n'); got != want {
			t.Fatalf("indexNewline(%q) = %d, want %d", buf, got, want)
		}
	}
}
