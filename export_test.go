package mtasts

import (
	"context"
	"net"
)

// RefreshOnce does what one turn of Run's loop does, and waits for the
// refreshes it started: tests on a settable clock call it after moving the
// clock, instead of waiting for Run's next turn.
func RefreshOnce(ctx context.Context, r *Resolver) {
	rf := newRefresher(r)
	rf.scanMemory(ctx)
	if lister, ok := r.Cache.(CacheLister); ok {
		rf.scanCache(ctx, lister)
	}
	rf.wg.Wait()
}

// DialPolicyHost is r's dialPolicyHost, the default client's dial.
func DialPolicyHost(r *Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.dialPolicyHost
}
