package mtasts

import (
	"context"
	"fmt"
	"strings"
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
// "example.com/20240101", except "list", which Run takes for an hour before
// it lists the Cache; an implementation keeps them apart from Cache keys.
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

const (
	// leaseSlack is how long a fetch lease outlasts FetchTimeout: the
	// holder's time to write the policy to the Cache.
	leaseSlack = 5 * time.Second
	// leasePoll is how often a Resolver waiting on another's fetch looks at
	// the Cache and the lease.
	leasePoll = 50 * time.Millisecond
	// unsavedMin is the least number of policies kept to be written to a
	// Cache that failed to take them, whatever MaxEntries says: about 20 MB
	// of policies learned during an outage.
	unsavedMin = 1 << 16
)

// fetchLeased gets d's policy under record id for a fetch that a Resolver
// sharing l may be making too: from the Cache if another fetched it, by
// waiting on the lease's holder, or by taking the lease and fetching. shared
// reports a policy another Resolver fetched. A policy this one fetches is in
// the Cache (or remembered to be written) before the lease is released, so
// that whoever takes the lease next finds it.
//
// If l cannot be reached, the Resolver fetches alone and reports it. ctx is
// the work's, which never ends; the waiting is bounded by the lease's time.
func (r *Resolver) fetchLeased(ctx context.Context, l CacheLeaser, d, id string, live *Policy, kind lookupKind) (p *Policy, shared bool, err error) {
	name := d + "/" + id
	ttl := r.fetchTimeout() + leaseSlack
	giveUp := time.Now().Add(3 * ttl) // the lease has run out at least twice by then
	for {
		if p := r.sharedCopy(ctx, d, id, live, kind); p != nil {
			return p, true, nil
		}
		token, note, err := l.Lease(ctx, name, ttl)
		switch {
		case err != nil:
			r.report(d, fmt.Errorf("%w: taking lease %s: %w", ErrCache, name, err))
			p, err := r.fetchAs(ctx, d, id)
			if err == nil {
				r.save(ctx, p)
			}
			return p, false, err
		case token != "":
			return r.fetchHolding(ctx, l, name, token, d, id, live, kind)
		case note != "":
			// The holder's fetch failed: the fleet waits its retry delay.
			return nil, false, parseFailureNote(note)
		case time.Now().After(giveUp):
			return nil, false, fmt.Errorf("%w: %w: %s: lease %s held too long", ErrPolicyFetch, ErrFetchTimeout, policyURL(d), name)
		}
		sleep(ctx, leasePoll)
	}
}

// fetchHolding fetches d's policy under the lease that token holds, writes it
// to Cache and releases the lease. A failure is left in the lease's note for
// the retry delay, for the others to read.
func (r *Resolver) fetchHolding(ctx context.Context, l CacheLeaser, name, token, d, id string, live *Policy, kind lookupKind) (*Policy, bool, error) {
	// The holder before may have written its policy between the look at the
	// Cache and the lease.
	if p := r.sharedCopy(ctx, d, id, live, kind); p != nil {
		r.release(ctx, l, d, name, token)
		return p, true, nil
	}
	p, err := r.fetchAs(ctx, d, id)
	if err != nil {
		if herr := l.Hold(ctx, name, token, failureNote(err), fetchRetryDelay); herr != nil {
			r.report(d, fmt.Errorf("%w: holding lease %s: %w", ErrCache, name, herr))
		}
		return nil, false, err
	}
	r.save(ctx, p)
	r.release(ctx, l, d, name, token)
	return p, false, nil
}

func (r *Resolver) release(ctx context.Context, l CacheLeaser, d, name, token string) {
	if err := l.Release(ctx, name, token); err != nil {
		r.report(d, fmt.Errorf("%w: releasing lease %s: %w", ErrCache, name, err))
	}
}

// sharedCopy returns the policy that Cache holds for d if another Resolver
// fetched it for the fetch about to be made: under id, later than live, and,
// for a refresh, not due again itself. Failures to read are not reported:
// the look at Cache that began the work did.
func (r *Resolver) sharedCopy(ctx context.Context, d, id string, live *Policy, kind lookupKind) *Policy {
	p, err := r.readCache(ctx, d)
	switch {
	case err != nil, p.ID != id, !r.wall().Before(p.Expires()):
		return nil
	case live != nil && !p.Fetched.After(live.Fetched):
		return nil
	case kind == lookupRefetch && !r.wall().Before(r.refreshAt(p, r.memCache())):
		return nil
	}
	return p
}

// save writes p to Cache. A write that fails is reported, and p is kept to be
// written again after the next write that succeeds, and by Run, so that what
// a Resolver learns while a shared Cache is down reaches it once it is back,
// even if p has left memory meanwhile. At most MaxEntries policies are kept,
// or unsavedMin if more; past that, a failed write is only reported.
func (r *Resolver) save(ctx context.Context, p *Policy) {
	err := r.storeCache(ctx, p)
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	if err != nil {
		r.report(p.Domain, err)
		if r.unsaved == nil {
			r.unsaved = map[string]*Policy{}
		}
		if n := r.MaxEntries; n < 0 || len(r.unsaved) < max(n, unsavedMin) || r.unsaved[p.Domain] != nil {
			r.unsaved[p.Domain] = p
		}
		return
	}
	delete(r.unsaved, p.Domain)
	r.flushLocked()
}

// flush writes the policies that Cache failed to take, in a goroutine of its
// own, unless one is at it already.
func (r *Resolver) flush() {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.flushLocked()
}

func (r *Resolver) flushLocked() {
	if r.flushing || len(r.unsaved) == 0 {
		return
	}
	r.flushing = true
	go r.writeUnsaved(context.Background())
}

// writeUnsaved writes each policy that Cache failed to take, unless Cache
// has the same or a later fetch of it by now (another Resolver sharing it
// wrote one), or it has expired. It stops at the first failure: the Cache is
// still down.
func (r *Resolver) writeUnsaved(ctx context.Context) {
	for {
		r.saveMu.Lock()
		var p *Policy
		for _, p = range r.unsaved {
			break
		}
		if p == nil {
			r.flushing = false
			r.saveMu.Unlock()
			return
		}
		delete(r.unsaved, p.Domain)
		r.saveMu.Unlock()

		if !r.wall().Before(p.Expires()) {
			continue
		}
		if q, err := r.readCache(ctx, p.Domain); err == nil && !q.Fetched.Before(p.Fetched) {
			continue
		}
		if err := r.storeCache(ctx, p); err != nil {
			r.saveMu.Lock()
			if q := r.unsaved[p.Domain]; q == nil || q.Fetched.Before(p.Fetched) {
				r.unsaved[p.Domain] = p
			}
			r.flushing = false
			r.saveMu.Unlock()
			return
		}
	}
}

// failureNote is what a lease's holder leaves in its note when its fetch
// fails with err: the RFC 8460 result type and reason code, then the text,
// so that the Resolvers that read it report the failure as the holder does.
func failureNote(err error) string {
	typ, reason := Classify(err)
	if typ == "" {
		typ, reason = ResultSTSPolicyFetchError, "fetch-failed"
	}
	return string(typ) + " " + reason + " " + err.Error()
}

// parseFailureNote turns a failure note back into an error.
func parseFailureNote(note string) error {
	f := &sharedFailure{result: ResultSTSPolicyFetchError, reason: "fetch-failed", msg: note}
	if typ, rest, ok := strings.Cut(note, " "); ok {
		if reason, msg, ok := strings.Cut(rest, " "); ok && strings.HasPrefix(typ, "sts-") {
			f.result, f.reason, f.msg = ResultType(typ), reason, msg
		}
	}
	return f
}

// sharedFailure is a fetch failure that another Resolver sharing the Cache
// met, as its lease's note tells. It wraps the errors its reason code stands
// for, and Classify gives it the holder's result type and reason code.
type sharedFailure struct {
	result ResultType
	reason string
	msg    string
}

func (e *sharedFailure) Error() string {
	return "mtasts: by a resolver sharing the cache: " + e.msg
}

func (e *sharedFailure) Is(target error) bool {
	switch target {
	case ErrPolicyFetch:
		return e.result != ResultSTSPolicyInvalid
	case ErrWebPKI:
		return e.result == ResultSTSWebPKIInvalid
	}
	for _, pr := range policyReasons {
		if pr.err == target {
			return pr.reason == e.reason
		}
	}
	return false
}
