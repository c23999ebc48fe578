package mtasts

import (
	"context"
	"net"
	"time"
)

// RefreshOnce does what one turn of Run's loop does, and waits for the
// refreshes it started: tests on a settable clock call it after moving the
// clock, instead of waiting for Run's next turn.
func RefreshOnce(ctx context.Context, r *Resolver) {
	rf := newRefresher(r)
	rf.scanMemory(ctx)
	r.flush()
	if lister, ok := r.Cache.(CacheLister); ok {
		rf.scanCache(ctx, lister)
	}
	rf.wg.Wait()
}

// DialPolicyHost is r's dialPolicyHost, the default client's dial.
func DialPolicyHost(r *Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.dialPolicyHost
}

// SendDue does what one turn of a ReportSender's Run does: it queues the
// reports of the days that have ended and makes the attempts that are due.
// It returns the time of the next attempt. Tests on a settable clock call it
// after moving the clock, instead of waiting for Run.
func SendDue(ctx context.Context, s *ReportSender) time.Time { return s.step(ctx) }

// Undelivered returns the number of deliveries c holds for a ReportSender:
// reports whose destinations are still to be looked up, and one per
// destination still to be delivered to.
func Undelivered(c *ReportCollector) int {
	c.load()
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.outbox)
}
