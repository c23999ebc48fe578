package mtasts

import (
	"context"
	"time"
)

// A CacheLeaser is a Cache that several Resolvers share, as the MTAs of a
// fleet share one store, and that grants short leases, so that a piece of
// work the whole fleet needs is done by one of them. A Resolver whose Cache is
// a CacheLeaser takes a lease before it fetches a policy: the holder fetches
// and writes the policy to the Cache, and the others, which find the lease
// held, read the policy from the Cache instead of fetching it too. A fetch
// that fails is remembered in its lease's note for the five-minute retry delay
// (RFC 8461 §3.3), so that a broken policy host is asked once per delay by
// the fleet, not once by each member. Run's refreshes go through the same
// leases, and a member whose refresh finds in the Cache a copy that another
// member fetched since takes that copy instead, so each policy is refreshed
// about once per RefreshInterval by the fleet.
//
// Lease names are made of a policy domain and a record id, as
// "example.com/20240101"; an implementation keeps them apart from Cache keys.
// A lease ends by Release or when its time runs out, so that one whose holder
// died is freed without help. Implementations must be safe for concurrent
// use, and should give up on a store that does not answer well within a
// second: the Resolver goes on without the lease (it fetches alone, and
// reports the error), as it goes on without a Cache that fails.
type CacheLeaser interface {
	Cache

	// Lease takes the lease called name for ttl if no one holds it, and
	// returns a token, not empty, for Hold and Release. If another holds
	// it, Lease returns an empty token and the note the holder last set
	// with Hold ("" if none).
	Lease(ctx context.Context, name string, ttl time.Duration) (token, note string, err error)

	// Hold sets the note of the lease that token holds and makes it last
	// ttl from now. If the token no longer holds the lease (its time ran
	// out), Hold does nothing and returns nil: the lease is someone else's.
	Hold(ctx context.Context, name, token, note string, ttl time.Duration) error

	// Release ends the lease that token holds. If the token no longer holds
	// it, Release does nothing and returns nil.
	Release(ctx context.Context, name, token string) error
}

// CachedPolicy decodes what a Resolver stored in a Cache under key, for a
// Cache that needs more than the bytes, such as one that expires what it
// holds (keep an entry until at least the policy's Expires()) or an
// operator's tool. Errors wrap ErrCacheCorrupt; among them are values written
// by a later version of this package, which this one cannot read.
func CachedPolicy(key string, data []byte) (*Policy, error) {
	return decodePolicy(key, data)
}
