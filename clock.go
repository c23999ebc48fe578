package mtasts

import (
	"context"
	"sync/atomic"
	"time"
)

// The Resolver's clock, when Now is nil, is a coarse monotonic one: Lookup
// reads an atomic word that a timer advances every clockTick while Lookups
// are being made, instead of reading the system clock (which costs more than
// the rest of a cached Lookup on some virtual machines). The timer stops after
// a tick in which nothing read the clock, and the next read starts it again
// with an exact reading, so an idle process has no timer firing and the clock
// is never more than about two ticks behind. Being monotonic, it does not
// step when the system's wall clock does.
//
// Nothing here refers to a Resolver: a Resolver that is no longer referenced
// is collected whatever the timer does.

// clockTick is the coarse clock's resolution.
const clockTick = 50 * time.Millisecond

var (
	clockStart   = time.Now()
	clockNow     atomic.Int64 // nanoseconds since clockStart
	clockRunning atomic.Bool  // the timer is armed
	clockRead    atomic.Bool  // read since the last tick
	clockTimer   *time.Timer  // runs clockAdvance
)

func init() {
	clockTimer = time.AfterFunc(time.Hour, clockAdvance)
	clockTimer.Stop()
}

// coarseNow returns the coarse clock's reading, in nanoseconds.
func coarseNow() int64 {
	if clockRunning.Load() {
		if !clockRead.Load() {
			clockRead.Store(true)
		}
		return clockNow.Load()
	}
	n := clockSet()
	if clockRunning.CompareAndSwap(false, true) {
		clockRead.Store(true)
		clockTimer.Reset(clockTick)
	}
	return n
}

// clockAdvance is the timer's function: it advances the clock, or stops it if
// nothing read it during the last tick.
func clockAdvance() {
	if !clockRead.Swap(false) {
		clockRunning.Store(false)
		// A reader that saw the clock running just before it stopped got a
		// reading at most a tick old; the next one restarts it.
		return
	}
	clockSet()
	clockTimer.Reset(clockTick)
}

// clockSet moves the clock to the exact time, never backwards, and returns it.
func clockSet() int64 {
	n := int64(time.Since(clockStart))
	for {
		old := clockNow.Load()
		if old >= n {
			return old
		}
		if clockNow.CompareAndSwap(old, n) {
			return n
		}
	}
}

// sleep waits for d, or for ctx to end, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
