package codec

// TokenLen is the length of a token on the wire: 32 lowercase hex digits.
const TokenLen = 32

// Token is a grant's bearer credential: a 64-bit fence (strictly increasing
// server-wide with every grant) followed by 64 bits of random salt. Its
// text is 16 hex digits of Fence then 16 of Salt, so for one key a later
// grant always sorts after an earlier one in byte order. The zero Token is
// never issued.
type Token struct {
	Fence uint64
	Salt  uint64
}

const hexDigits = "0123456789abcdef"

// AppendText appends the 32-hex text of t to dst.
func (t Token) AppendText(dst []byte) []byte {
	var b [TokenLen]byte
	putHex(b[:16], t.Fence)
	putHex(b[16:], t.Salt)
	return append(dst, b[:]...)
}

// String returns the token's wire text.
func (t Token) String() string { return string(t.AppendText(nil)) }

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t == Token{} }

func putHex(b []byte, v uint64) {
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

// ParseToken parses 32 lowercase hex digits. Anything else (uppercase
// included: the server issues lowercase and compares exactly) is rejected.
func ParseToken(b []byte) (Token, bool) {
	if len(b) != TokenLen {
		return Token{}, false
	}
	f, ok1 := parseHex(b[:16])
	s, ok2 := parseHex(b[16:])
	if !ok1 || !ok2 {
		return Token{}, false // never a half-parsed token
	}
	return Token{Fence: f, Salt: s}, true
}

// unhex maps a lowercase hex digit to its value and every other byte to
// 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(hexDigits); i++ {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// parseHex parses 16 lowercase hex digits, without a branch per digit: an
// invalid byte sets high bits in bad.
func parseHex(b []byte) (uint64, bool) {
	var v uint64
	var bad byte
	for _, c := range b[:16] {
		d := unhex[c]
		bad |= d
		v = v<<4 | uint64(d&0xf)
	}
	return v, bad < 16
}
