package codec

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "update testdata/*.golden")

const statsEmpty = `{"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`

// codeNames names every Code as in the source; TestCodes fails when a Code
// is added without a name here (and so without a golden line).
var codeNames = map[Code]string{
	CodeOK:                   "CodeOK",
	CodeAcquired:             "CodeAcquired",
	CodeQueued:               "CodeQueued",
	CodeTimeout:              "CodeTimeout",
	CodeError:                "CodeError",
	CodeErrorAuth:            "CodeErrorAuth",
	CodeErrorMaxLocks:        "CodeErrorMaxLocks",
	CodeErrorMaxWaiters:      "CodeErrorMaxWaiters",
	CodeErrorLimitMismatch:   "CodeErrorLimitMismatch",
	CodeErrorNotEnqueued:     "CodeErrorNotEnqueued",
	CodeErrorAlreadyEnqueued: "CodeErrorAlreadyEnqueued",
	CodeErrorLeaseExpired:    "CodeErrorLeaseExpired",
	CodeErrorDraining:        "CodeErrorDraining",
}

func TestCodes(t *testing.T) {
	t.Parallel()

	codes := Codes()
	if len(codes) != int(numCodes)-1 {
		t.Fatalf("Codes() has %d codes, want %d", len(codes), numCodes-1)
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if c != Code(i+1) {
			t.Errorf("Codes()[%d] = %d, want %d", i, c, i+1)
		}
		if _, ok := codeNames[c]; !ok {
			t.Errorf("code %v has no name in codeNames", c)
		}
		s := c.String()
		if s == "invalid" || s == "" || strings.ContainsAny(s, " \t\r\n") || seen[s] {
			t.Errorf("Code(%d).String() = %q: invalid or duplicate", c, s)
		}
		seen[s] = true
	}
	for _, c := range []Code{CodeInvalid, numCodes, 255} {
		if got := c.String(); got != "invalid" {
			t.Errorf("Code(%d).String() = %q, want invalid", c, got)
		}
	}
}

func TestAppendStatus(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give Code
		want string
	}{
		{CodeOK, "ok\n"},
		{CodeAcquired, "acquired\n"},
		{CodeQueued, "queued\n"},
		{CodeTimeout, "timeout\n"},
		{CodeError, "error\n"},
		{CodeErrorAuth, "error_auth\n"},
		{CodeErrorMaxLocks, "error_max_locks\n"},
		{CodeErrorMaxWaiters, "error_max_waiters\n"},
		{CodeErrorLimitMismatch, "error_limit_mismatch\n"},
		{CodeErrorNotEnqueued, "error_not_enqueued\n"},
		{CodeErrorAlreadyEnqueued, "error_already_enqueued\n"},
		{CodeErrorLeaseExpired, "error_lease_expired\n"},
		{CodeErrorDraining, "error_draining\n"},
		// Never on the wire: degrade to a plain error.
		{CodeInvalid, "error\n"},
		{numCodes, "error\n"},
		{255, "error\n"},
	}
	if len(tests) != len(Codes())+3 {
		t.Fatalf("table covers %d codes, want all %d", len(tests)-3, len(Codes()))
	}
	for _, tt := range tests {
		if got := string(AppendStatus(nil, tt.give)); got != tt.want {
			t.Errorf("AppendStatus(%d) = %q, want %q", tt.give, got, tt.want)
		}
		if got := string(AppendStatus([]byte("x\n"), tt.give)); got != "x\n"+tt.want {
			t.Errorf("AppendStatus(prefix, %d) = %q, want prefix kept", tt.give, got)
		}
		if tt.give != CodeInvalid && tt.give < numCodes && tt.give.String()+"\n" != tt.want {
			t.Errorf("%d.String() = %q, does not match its status line %q", tt.give, tt.give.String(), tt.want)
		}
	}
}

func TestAppendGrant(t *testing.T) {
	t.Parallel()

	tests := []struct {
		code  Code
		tok   Token
		lease int64
		want  string
	}{
		{CodeOK, testToken, 33, "ok " + testTokenText + " 33\n"},
		{CodeAcquired, testToken, 33, "acquired " + testTokenText + " 33\n"},
		{CodeOK, Token{Fence: 1, Salt: 2}, 1, "ok 00000000000000010000000000000002 1\n"},
		{CodeOK, Token{Fence: math.MaxUint64, Salt: math.MaxUint64}, MaxSeconds, "ok ffffffffffffffffffffffffffffffff 3155760000\n"},
		{CodeAcquired, testToken, 0, "acquired " + testTokenText + " 0\n"},
	}
	for _, tt := range tests {
		if got := string(AppendGrant(nil, tt.code, tt.tok, tt.lease)); got != tt.want {
			t.Errorf("AppendGrant(%v, %v, %d) = %q, want %q", tt.code, tt.tok, tt.lease, got, tt.want)
		}
		if got := string(AppendGrant([]byte("p"), tt.code, tt.tok, tt.lease)); got != "p"+tt.want {
			t.Errorf("AppendGrant(prefix) = %q", got)
		}
	}
}

func TestAppendRenewed(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give int64
		want string
	}{
		{33, "ok 33\n"},
		{1, "ok 1\n"},
		{0, "ok 0\n"},
		{MaxSeconds, "ok 3155760000\n"},
		{math.MaxInt64, "ok 9223372036854775807\n"},
	}
	for _, tt := range tests {
		if got := string(AppendRenewed(nil, tt.give)); got != tt.want {
			t.Errorf("AppendRenewed(%d) = %q, want %q", tt.give, got, tt.want)
		}
		if got := string(AppendRenewed([]byte("p"), tt.give)); got != "p"+tt.want {
			t.Errorf("AppendRenewed(prefix, %d) = %q", tt.give, got)
		}
	}
}

func TestAppendStats(t *testing.T) {
	t.Parallel()

	if got, want := string(AppendStats(nil, []byte(statsEmpty))), "ok "+statsEmpty+"\n"; got != want {
		t.Errorf("AppendStats = %q, want %q", got, want)
	}
	if got, want := string(AppendStats([]byte("p"), []byte(`{}`))), "pok {}\n"; got != want {
		t.Errorf("AppendStats(prefix) = %q, want %q", got, want)
	}
}

func TestParseReply(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	tests := []struct {
		name string
		give string
		want Reply
	}{
		{"ok", "ok", Reply{Code: CodeOK}},
		{"ok crlf", "ok\r", Reply{Code: CodeOK}},
		{"queued", "queued", Reply{Code: CodeQueued}},
		{"timeout", "timeout", Reply{Code: CodeTimeout}},
		{"error", "error", Reply{Code: CodeError}},
		{"error_auth", "error_auth", Reply{Code: CodeErrorAuth}},
		{"error_max_locks", "error_max_locks", Reply{Code: CodeErrorMaxLocks}},
		{"error_max_waiters", "error_max_waiters", Reply{Code: CodeErrorMaxWaiters}},
		{"error_limit_mismatch", "error_limit_mismatch", Reply{Code: CodeErrorLimitMismatch}},
		{"error_not_enqueued", "error_not_enqueued", Reply{Code: CodeErrorNotEnqueued}},
		{"error_already_enqueued", "error_already_enqueued", Reply{Code: CodeErrorAlreadyEnqueued}},
		{"error_lease_expired", "error_lease_expired", Reply{Code: CodeErrorLeaseExpired}},
		{"error_draining", "error_draining\r", Reply{Code: CodeErrorDraining}},
		{"grant ok", "ok " + tok + " 33", Reply{Code: CodeOK, Token: testToken, HasToken: true, Lease: 33, HasLease: true}},
		{"grant ok crlf", "ok " + tok + " 33\r", Reply{Code: CodeOK, Token: testToken, HasToken: true, Lease: 33, HasLease: true}},
		{"grant acquired", "acquired " + tok + " 1", Reply{Code: CodeAcquired, Token: testToken, HasToken: true, Lease: 1, HasLease: true}},
		{"grant max", "ok " + tok + " 3155760000", Reply{Code: CodeOK, Token: testToken, HasToken: true, Lease: MaxSeconds, HasLease: true}},
		{"renewed", "ok 60", Reply{Code: CodeOK, Lease: 60, HasLease: true}},
		{"renewed zero", "ok 0", Reply{Code: CodeOK, HasLease: true}},
		{"renewed crlf", "ok 60\r", Reply{Code: CodeOK, Lease: 60, HasLease: true}},
		{"stats", "ok " + statsEmpty, Reply{Code: CodeOK, Body: []byte(statsEmpty)}},
		{"stats crlf", "ok " + statsEmpty + "\r", Reply{Code: CodeOK, Body: []byte(statsEmpty)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			var got Reply
			if !ParseReply([]byte(tt.give), &got) {
				t.Fatalf("ParseReply(%q) = false, want true", tt.give)
			}
			if !replyEqual(got, tt.want) {
				t.Errorf("ParseReply(%q)\n got %+v\nwant %+v", tt.give, got, tt.want)
			}
		})
	}
}

func TestParseReplyInvalid(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	tests := []struct {
		name string
		give string
	}{
		{"empty", ""},
		{"cr", "\r"},
		{"uppercase", "OK"},
		{"unknown", "granted"},
		{"leading space", " ok"},
		{"trailing space", "ok "},
		{"two spaces", "ok  33"},
		{"tab", "ok\t33"},
		{"two cr", "ok\r\r"},
		{"newline included", "ok\n"},
		{"bare acquired", "acquired"},
		{"acquired without token", "acquired 33"},
		{"acquired stats", "acquired {}"},
		{"plus lease", "ok +33"},
		{"negative lease", "ok -1"},
		{"lease trailing space", "ok 33 "},
		{"lease junk", "ok 33x"},
		{"lease overflow", "ok 9223372036854775808"},
		{"token without lease", "ok " + tok},
		{"token trailing space", "ok " + tok + " "},
		{"uppercase token", "ok " + strings.ToUpper(tok) + " 33"},
		{"short token", "ok " + tok[1:] + " 33"},
		{"grant plus lease", "ok " + tok + " +33"},
		{"grant extra field", "ok " + tok + " 33 1"},
		{"grant overflow", "acquired " + tok + " 99999999999999999999"},
		{"queued with arg", "queued 1"},
		{"timeout with arg", "timeout 5"},
		{"error with text", "error bad request"},
		{"error_auth with body", "error_auth {}"},
		{"prefix", "error_"},
	}
	for _, tt := range tests {
		var r Reply
		if ParseReply([]byte(tt.give), &r) {
			t.Errorf("%s: ParseReply(%q) = true (%+v), want false", tt.name, tt.give, r)
		}
	}

	// A failed parse leaves no stale fields from an earlier reply.
	var r Reply
	if !ParseReply([]byte("ok "+tok+" 33"), &r) {
		t.Fatal("grant not parsed")
	}
	if !ParseReply([]byte("queued"), &r) || !replyEqual(r, Reply{Code: CodeQueued}) {
		t.Errorf("reused Reply = %+v, want only CodeQueued", r)
	}
}

func replyEqual(a, b Reply) bool {
	return a.Code == b.Code && a.Token == b.Token && a.HasToken == b.HasToken &&
		a.Lease == b.Lease && a.HasLease == b.HasLease && bytes.Equal(a.Body, b.Body) &&
		(a.Body == nil) == (b.Body == nil)
}

func TestToken(t *testing.T) {
	t.Parallel()

	tests := []struct {
		give Token
		want string
	}{
		{Token{}, "00000000000000000000000000000000"},
		{Token{Fence: 1}, "00000000000000010000000000000000"},
		{Token{Salt: 1}, "00000000000000000000000000000001"},
		{testToken, testTokenText},
		{Token{Fence: math.MaxUint64, Salt: math.MaxUint64}, "ffffffffffffffffffffffffffffffff"},
		{Token{Fence: 0xa0b0c0d0e0f00102, Salt: 0x030405060708090a}, "a0b0c0d0e0f00102030405060708090a"},
	}
	for _, tt := range tests {
		if got := string(tt.give.AppendText(nil)); got != tt.want {
			t.Errorf("%#v.AppendText = %q, want %q", tt.give, got, tt.want)
		}
		if got := string(tt.give.AppendText([]byte("p"))); got != "p"+tt.want {
			t.Errorf("AppendText(prefix) = %q", got)
		}
		if got := tt.give.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.give, got, tt.want)
		}
		if got := tt.give.IsZero(); got != (tt.give == Token{}) {
			t.Errorf("%#v.IsZero() = %v", tt.give, got)
		}
		got, ok := ParseToken([]byte(tt.want))
		if !ok || got != tt.give {
			t.Errorf("ParseToken(%q) = %#v, %v; want %#v, true", tt.want, got, ok, tt.give)
		}
	}
	if !(Token{}).IsZero() || (Token{Salt: 1}).IsZero() || (Token{Fence: 1}).IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestTokenOrder(t *testing.T) {
	t.Parallel()

	// A later fence sorts after an earlier one in byte order, whatever the
	// salts.
	fences := []uint64{0, 1, 9, 10, 15, 16, 255, 256, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	var texts []string
	for i, f := range fences {
		texts = append(texts, Token{Fence: f, Salt: uint64(len(fences)-i) * 0x1111111111111111}.String())
	}
	if !sort.StringsAreSorted(texts) {
		t.Errorf("token texts not in fence order: %q", texts)
	}
}

func TestParseTokenInvalid(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	for _, give := range []string{
		"",
		tok[1:],
		tok + "0",
		strings.ToUpper(tok),
		tok[:31] + "A",
		"g" + tok[1:],
		tok[:16] + "x" + tok[17:],
		"0x" + tok[2:],
		" " + tok[1:],
		tok[:31] + "\n",
		tok[:30] + "é",
		strings.Repeat("-", TokenLen),
		strings.Repeat("/", TokenLen), // '0'-1
		strings.Repeat(":", TokenLen), // '9'+1
		strings.Repeat("`", TokenLen), // 'a'-1
	} {
		if tk, ok := ParseToken([]byte(give)); ok || tk != (Token{}) {
			t.Errorf("ParseToken(%q) = %#v, %v; want zero, false", give, tk, ok)
		}
	}
}

// goldenLines renders every response the codec writes as "label\tquoted
// bytes" lines.
func goldenLines() []byte {
	var b bytes.Buffer
	line := func(label string, wire []byte) {
		fmt.Fprintf(&b, "%s\t%s\n", label, strconv.Quote(string(wire)))
	}
	for _, c := range Codes() {
		line("AppendStatus("+codeNames[c]+")", AppendStatus(nil, c))
	}
	line("AppendGrant(CodeOK, "+testTokenText+", 33)", AppendGrant(nil, CodeOK, testToken, 33))
	line("AppendGrant(CodeAcquired, "+testTokenText+", 33)", AppendGrant(nil, CodeAcquired, testToken, 33))
	line("AppendGrant(CodeOK, max token, MaxSeconds)", AppendGrant(nil, CodeOK, Token{Fence: math.MaxUint64, Salt: math.MaxUint64}, MaxSeconds))
	line("AppendRenewed(33)", AppendRenewed(nil, 33))
	line("AppendRenewed(1)", AppendRenewed(nil, 1))
	line("AppendStats(empty server)", AppendStats(nil, []byte(statsEmpty)))
	return b.Bytes()
}

// TestGolden compares every response line with testdata/responses.golden.
// Regenerate it with: go test ./codec -run TestGolden -update
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "responses.golden")
	got := goldenLines()
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./codec -update to create it)", err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Errorf("%s:%d:\n got %s\nwant %s", path, i+1, g, w)
		}
	}
	t.Error("responses differ from the golden file; if intended, run go test ./codec -update")
}
