package mtaststest

import (
	"sync/atomic"
	"time"
)

// A Clock is a settable time source for the Now fields of mtasts.Resolver
// and mtasts.ReportCollector, so that a test can move through TTLs, max_age
// and report days without waiting. It is safe for concurrent use, and reading
// it takes no lock.
type Clock struct{ t atomic.Pointer[time.Time] }

// NewClock returns a Clock that reads t until it is moved.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.t.Store(&t)
	return c
}

// Now returns the Clock's time.
func (c *Clock) Now() time.Time { return *c.t.Load() }

// Advance moves the Clock by d, which may be negative.
func (c *Clock) Advance(d time.Duration) {
	for {
		old := c.t.Load()
		next := old.Add(d)
		if c.t.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Set moves the Clock to t.
func (c *Clock) Set(t time.Time) { c.t.Store(&t) }
