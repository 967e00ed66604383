package codec

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// The reference decoder: the first, straightforward implementation of
// Decode (bytes.IndexByte per line, a field splitter, then integer and token
// parsers), kept verbatim as an oracle. The optimised Decode must agree with
// it on every input (TestDecodeMatchesReference, FuzzDecode).

func refIsSpace(c byte) bool { return strings.IndexByte(" \t\r\v\f", c) >= 0 }

func refNextLine(buf []byte, off int) (int, error) {
	end := min(len(buf), off+MaxLineLen+1)
	if i := bytes.IndexByte(buf[off:end], '\n'); i >= 0 {
		return i, nil
	}
	if end-off > MaxLineLen {
		return -1, ErrLineTooLong
	}
	return -1, nil
}

func refDecode(buf []byte, req *Request) (n int, err error) {
	var lines [3][]byte
	off := 0
	for i := range lines {
		l, err := refNextLine(buf, off)
		if err != nil {
			return 0, err
		}
		if l < 0 {
			return 0, nil
		}
		line := buf[off : off+l]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		lines[i] = line
		off += l + 1
	}
	*req = Request{}
	return off, refParse(lines[0], lines[1], lines[2], req)
}

func refParse(cmdLine, key, arg []byte, req *Request) error {
	cmd := lookupCommand(cmdLine)
	if cmd == CmdInvalid {
		return ErrUnknownCommand
	}
	spec := &commandSpecs[cmd]
	req.Cmd = cmd
	req.Key = key
	req.Arg = arg
	if spec.keyed && !refValidKey(key) {
		return ErrBadKey
	}
	switch {
	case spec.free:
		return nil
	case spec.raw:
		req.Arg = bytes.TrimSpace(arg)
		return nil
	}

	rest := arg
	for _, kind := range spec.args {
		if kind == argNone {
			break
		}
		var field []byte
		field, rest = refNextField(rest)
		if field == nil {
			return ErrArgCount
		}
		switch kind {
		case argTimeout:
			v, err := refParseInt(field)
			if err != nil {
				return err
			}
			req.Timeout = min(v, MaxSeconds)
		case argLimit:
			v, err := refParseInt(field)
			if err != nil {
				return err
			}
			if v == 0 {
				return ErrBadValue
			}
			req.Limit = v
		case argToken:
			t, ok := refParseToken(field)
			if !ok {
				return ErrBadToken
			}
			req.Token = t
		}
	}
	if spec.lease {
		var field []byte
		if field, rest = refNextField(rest); field != nil {
			v, err := refParseInt(field)
			if err != nil {
				return err
			}
			if v == 0 {
				return ErrBadValue
			}
			req.Lease = min(v, MaxSeconds)
		}
	}
	if field, _ := refNextField(rest); field != nil {
		return ErrArgCount
	}
	return nil
}

func refValidKey(k []byte) bool {
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

func refNextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && refIsSpace(b[i]) {
		i++
	}
	if i == len(b) {
		return nil, nil
	}
	j := i
	for j < len(b) && !refIsSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

func refParseInt(b []byte) (int64, error) {
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

func refParseToken(b []byte) (Token, bool) {
	if len(b) != TokenLen {
		return Token{}, false
	}
	f, ok1 := refParseHex(b[:16])
	s, ok2 := refParseHex(b[16:])
	return Token{Fence: f, Salt: s}, ok1 && ok2
}

func refParseHex(b []byte) (uint64, bool) {
	var v uint64
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// checkReference decodes buf in a loop with Decode and refDecode and
// reports the first disagreement, or "".
func checkReference(buf []byte) string {
	var got, want Request
	for off := 0; ; {
		n, err := Decode(buf[off:], &got)
		rn, rerr := refDecode(buf[off:], &want)
		if n != rn || err != rerr {
			return fmt.Sprintf("at %d of %q: Decode = %d, %v; reference = %d, %v", off, buf, n, err, rn, rerr)
		}
		if err == nil && n > 0 && snapshot(&got) != snapshot(&want) {
			return fmt.Sprintf("at %d of %q: Decode = %+v; reference = %+v", off, buf, snapshot(&got), snapshot(&want))
		}
		if n == 0 {
			return ""
		}
		off += n
	}
}

// TestDecodeMatchesReference compares Decode with the reference decoder on
// every command combined with many keys and argument lines built from
// tricky fields and separators.
func TestDecodeMatchesReference(t *testing.T) {
	t.Parallel()

	tok := testTokenText
	fields := []string{
		"0", "+0", "000", "10", "+10", "+", "++1", "-1", "-", "1x", "x", "1.5",
		"3155760001", "9223372036854775807", "+9223372036854775807",
		"9223372036854775808", "18446744073709551616", "99999999999999999999",
		tok, tok[1:], tok + "0", tok[:31] + "G", strings.ToUpper(tok), tok + "\r",
		"\r", "\x00", "é",
	}
	seps := []string{" ", "\t", " \t  "}
	var args []string
	args = append(args, "", " ", "\t \t")
	for _, a := range fields {
		args = append(args, a, " "+a+" ", "\t"+a)
		for _, b := range fields {
			for _, sep := range seps {
				args = append(args, a+sep+b)
			}
			for _, c := range []string{"0", "7", "x", tok} {
				args = append(args, a+" "+b+" "+c, a+" "+b+"\t"+c+" ")
			}
		}
	}
	cmds := []string{"l", "r", "n", "e", "w", "sl", "sr", "sn", "se", "sw", "auth", "stats", "ping", "x", ""}
	keys := []string{"k", "", "a b", "k\r", " "}
	var buf []byte
	for _, c := range cmds {
		for _, k := range keys {
			for _, a := range args {
				for _, eol := range []string{"\n", "\r\n"} {
					buf = append(buf[:0], c+eol+k+eol+a+eol...)
					if d := checkReference(buf); d != "" {
						t.Fatal(d)
					}
				}
			}
		}
	}
	for _, s := range append(append([]string{string(pipelined(64))}, sampleRequests...), sampleErrors...) {
		if d := checkReference([]byte(s)); d != "" {
			t.Fatal(d)
		}
	}
}
