package wheel_test

import (
	"fmt"

	"github.com/lockreactor/dflockd/lockcore/wheel"
)

// waiter is the caller's own struct; the timer lives inside it.
type waiter struct {
	name    string
	timeout wheel.Timer
}

func Example() {
	w := wheel.New(0) // the caller holds its lock around every call

	a := &waiter{name: "a"}
	b := &waiter{name: "b"}
	for _, x := range []*waiter{a, b} {
		x.timeout.Owner = x // a pointer: storing it does not allocate
	}
	w.Add(&a.timeout, 300) // tick 300: 3 s at 10 ms ticks
	w.Add(&b.timeout, 150)

	w.Remove(&b.timeout) // b got the lock before its timeout

	next, _ := w.NextDeadline()
	fmt.Println("wake at or before", next)

	w.Advance(1000, 64, func(t *wheel.Timer) {
		x := t.Owner.(*waiter)
		fmt.Println(x.name, "timed out at tick", w.Now())
	})
	fmt.Println("pending:", w.Len())
	// Output:
	// wake at or before 256
	// a timed out at tick 300
	// pending: 0
}
