// dflockd patch: tests of RingBuffer.Trim (see PATCHES.md).

package elastic

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func contents(b *RingBuffer) []byte {
	head, tail := b.Peek(-1)
	return append(append([]byte(nil), head...), tail...)
}

// fill writes n bytes of a pattern starting at off and returns them.
func fill(t *testing.T, b *RingBuffer, off, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(off + i)
	}
	_, err := b.Write(p)
	require.NoError(t, err)
	return p
}

func TestTrimShrinksAMostlyEmptyLargeBuffer(t *testing.T) {
	var b RingBuffer
	want := fill(t, &b, 0, 64<<10)
	require.GreaterOrEqual(t, b.Cap(), 64<<10)
	_, err := b.Discard(64<<10 - 300)
	require.NoError(t, err)
	want = want[64<<10-300:]
	// Wrap the ring: the kept bytes run over its end.
	want = append(want, fill(t, &b, 7, 500)...)

	b.Trim(4 << 10)
	require.Equal(t, 1024, b.Cap(), "800 bytes kept in a 1 KiB buffer")
	require.Equal(t, want, contents(&b))
	// Still a working buffer: it grows and reads in order.
	want = append(want, fill(t, &b, 3, 5000)...)
	got := make([]byte, len(want))
	n, err := b.Read(got)
	require.NoError(t, err)
	require.Equal(t, len(want), n)
	require.True(t, bytes.Equal(want, got))
}

func TestTrimKeepsWhatIsSmallOrFull(t *testing.T) {
	var b RingBuffer
	b.Trim(4 << 10) // no buffer yet
	require.Zero(t, b.Cap())

	fill(t, &b, 0, 3000) // a buffer at or under keep stays whatever it holds
	_, _ = b.Discard(2990)
	c := b.Cap()
	b.Trim(c)
	require.Equal(t, c, b.Cap())
	require.Equal(t, 10, b.Buffered())

	var big RingBuffer
	want := fill(t, &big, 0, 32<<10)
	c = big.Cap()
	_, _ = big.Discard(32<<10 - c/8 - 1) // more than an eighth left
	big.Trim(4 << 10)
	require.Equal(t, c, big.Cap())
	require.Equal(t, want[32<<10-c/8-1:], contents(&big))

	_, _ = big.Discard(2) // now an eighth or less
	big.Trim(4 << 10)
	require.Less(t, big.Cap(), c)
	require.GreaterOrEqual(t, big.Cap(), c/8-1)
	require.Equal(t, want[32<<10-c/8+1:], contents(&big))
}
