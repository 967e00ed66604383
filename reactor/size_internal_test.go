package reactor

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// TestConnStateSize guards the memory of an idle connection: every plain
// connection holds one gconn, and the allocator rounds it up to a size
// class, so a field that pushes it past 256 bytes costs 32 more bytes on
// every connection (288), about 3% of the per-connection budget. Reorder
// or shrink fields rather than raising this.
func TestConnStateSize(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(gconn{}), uintptr(256), "gconn")
	assert.LessOrEqual(t, unsafe.Sizeof(session{}), uintptr(152), "session")
}
