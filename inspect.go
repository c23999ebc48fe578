package mtasts

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"
)

// CacheEntry is what a Resolver holds for one domain, as Entries and Inspect
// report it to an operator.
type CacheEntry struct {
	Domain string // the policy domain, in A-labels

	// Policy is the policy held, with its ID, Mode, Fetched time and
	// Expires(); nil if none is (the domain has no record, or no policy could
	// be had). It may have expired: Lookup does not apply an expired policy.
	Policy *Policy

	// InMemory is false for a policy that only Cache holds: one learned
	// before a restart, or that left memory because of MaxEntries.
	InMemory bool

	// Err is what Lookup answers for the domain while it has no policy,
	// until its DNS answer is asked again: the failure that left it without
	// one, or nil.
	Err error

	// LastFailure is the last failed fetch of the domain's policy, kept
	// until a fetch succeeds, and FailedAt when it happened; RetryAt is when
	// the same record id may be fetched again (RFC 8461 §3.3).
	LastFailure error
	FailedAt    time.Time
	RetryAt     time.Time
}

// Entries lists what the Resolver holds: every domain in memory, then, if
// Cache is a CacheLister, the policies only Cache holds. An error (from
// listing or reading Cache) is yielded with an empty CacheEntry and ends the
// listing; an entry Cache cannot decode is yielded as an error too, and the
// listing goes on. Entries sends nothing on the network.
func (r *Resolver) Entries(ctx context.Context) iter.Seq2[CacheEntry, error] {
	return func(yield func(CacheEntry, error) bool) {
		m := r.memCache()
		seen := map[string]bool{}
		for i := range m.shards {
			var list []CacheEntry
			sh := &m.shards[i]
			sh.mu.Lock()
			if t := sh.tab.Load(); t != nil {
				for j := range t.slots {
					if e := t.slots[j].Load(); e != nil && e != tombstone {
						list = append(list, sh.describe(e))
					}
				}
			}
			sh.mu.Unlock()
			for _, ce := range list {
				seen[ce.Domain] = true
				if !yield(ce, nil) {
					return
				}
			}
			if err := ctx.Err(); err != nil {
				yield(CacheEntry{}, err)
				return
			}
		}
		lister, ok := r.Cache.(CacheLister)
		if !ok {
			return
		}
		for key, err := range lister.Keys(ctx) {
			if err != nil {
				yield(CacheEntry{}, fmt.Errorf("%w: listing keys: %w", ErrCache, err))
				return
			}
			if seen[key] {
				continue
			}
			p, err := r.readCache(ctx, key)
			if errors.Is(err, ErrCacheMiss) {
				continue // deleted since it was listed
			}
			if err != nil {
				if !yield(CacheEntry{Domain: key}, err) {
					return
				}
				continue
			}
			if !yield(CacheEntry{Domain: key, Policy: p}, nil) {
				return
			}
		}
	}
}

// Inspect reports what the Resolver holds for domain, in memory or in
// Cache, without sending anything on the network. ok is false if it holds
// nothing.
func (r *Resolver) Inspect(ctx context.Context, domain string) (ce CacheEntry, ok bool, err error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return CacheEntry{}, false, err
	}
	m := r.memCache()
	h := m.hash(d)
	sh := m.shardOf(h)
	sh.mu.Lock()
	e := sh.lookup(h, d)
	if e != nil {
		ce = sh.describe(e)
	}
	sh.mu.Unlock()
	if e != nil {
		return ce, true, nil
	}
	if r.Cache == nil {
		return CacheEntry{}, false, nil
	}
	p, err := r.readCache(ctx, d)
	switch {
	case errors.Is(err, ErrCacheMiss):
		return CacheEntry{}, false, nil
	case err != nil:
		return CacheEntry{Domain: d}, false, err
	}
	return CacheEntry{Domain: d, Policy: p}, true, nil
}

// Purge forgets what the Resolver holds for domain, in memory and in Cache,
// with any fetch failure it remembers: the next Lookup asks DNS and fetches
// the policy afresh. An operator purges a domain that fixed a broken policy
// and should not wait for its five-minute retry delay or its cached answer
// to lapse. A lookup of the domain already under way then records only a
// policy that it fetched itself, not the one it started from.
func (r *Resolver) Purge(ctx context.Context, domain string) error {
	d, err := normalizeDomain(domain)
	if err != nil {
		return err
	}
	m := r.memCache()
	h := m.hash(d)
	sh := m.shardOf(h)
	sh.mu.Lock()
	sh.remove(h, d)
	delete(sh.fails, d)
	if c := sh.calls[d]; c != nil {
		c.purged = true
	}
	sh.mu.Unlock()
	if r.Cache != nil {
		if err := r.Cache.Delete(ctx, d); err != nil {
			return fmt.Errorf("%w: deleting %s: %w", ErrCache, d, err)
		}
	}
	return nil
}

// describe reports e as a CacheEntry. sh.mu must be held.
func (sh *shard) describe(e *entry) CacheEntry {
	ce := CacheEntry{Domain: e.key(), InMemory: true}
	if p := e.policy(); p != nil {
		ce.Policy = p
	} else {
		ce.Err = e.asNeg().err
	}
	if f := sh.fails[ce.Domain]; f != nil {
		ce.LastFailure, ce.FailedAt, ce.RetryAt = f.err, f.at, f.retryAt
	}
	return ce
}

// readCache reads and decodes d's policy from Cache. Errors wrap
// ErrCacheMiss, ErrCache or ErrCacheCorrupt.
func (r *Resolver) readCache(ctx context.Context, d string) (*Policy, error) {
	data, err := r.Cache.Get(ctx, d)
	if errors.Is(err, ErrCacheMiss) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrCache, d, err)
	}
	return decodePolicy(d, data)
}
