package mtasts

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Run keeps every cached policy in force for as long as ctx lasts. RFC 8461
// §3.3 and §10.2 want senders to refresh a policy before it expires: a policy
// that is only fetched again when its record's id changes lapses at its fetch
// time plus max_age, a time an attacker can predict, and one blocked fetch
// then leaves the domain without it.
//
// Run fetches each cached policy again about every RefreshInterval, and at
// most half its max_age after it was fetched, whatever the TXT record says: a
// success under the same id extends the policy, a new id replaces it. A
// failure keeps the live policy and is reported (OnError, Logger) unless the
// policy's mode is none; the same record id is then tried again no sooner
// than five minutes later (RFC 8461 §3.3). Refreshes are spread by a jitter
// of up to a tenth of the interval, and at most RefreshConcurrency run at
// once. If Cache is a CacheLister, Run also lists it, when it starts and then
// hourly, so that the policies only Cache holds (those learned before a
// restart, or that left memory) are refreshed too, and expired ones deleted;
// if Cache is a CacheLeaser shared by a fleet, one member lists it each hour,
// and the others skip the listing. A policy that Cache failed to take is
// written again at each look at memory, at least every minute, until Cache
// takes it.
//
// Run returns nil once ctx is done. Refreshes under way then finish within
// DNSTimeout and FetchTimeout, and are recorded as any lookup is. Run one Run
// per Resolver.
func (r *Resolver) Run(ctx context.Context) error {
	rf := newRefresher(r)
	defer rf.wg.Wait()
	lister, _ := r.Cache.(CacheLister)
	var nextList time.Time
	for {
		wait := rf.scanMemory(ctx)
		r.flush() // what Cache failed to take
		if lister != nil && !time.Now().Before(nextList) {
			rf.scanCache(ctx, lister)
			nextList = time.Now().Add(refreshListEvery)
		}
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

const (
	// refreshListEvery is how often Run lists a CacheLister.
	refreshListEvery = time.Hour
	// listLease is the lease a Resolver takes on a CacheLeaser to list it,
	// and keeps until it runs out, so that the fleet lists it once per
	// refreshListEvery. No lease on a domain's policy has a name without a
	// slash.
	listLease = "list"
	// refreshScanMax and refreshScanMin bound the wait between two looks at
	// what is due.
	refreshScanMax = time.Minute
	refreshScanMin = 100 * time.Millisecond
)

// refresher is the state of one Run.
type refresher struct {
	r   *Resolver
	sem chan struct{} // one token per refresh under way
	wg  sync.WaitGroup

	mu      sync.Mutex
	pending map[string]bool // domains being refreshed
}

func newRefresher(r *Resolver) *refresher {
	return &refresher{r: r, sem: make(chan struct{}, r.refreshConcurrency()), pending: map[string]bool{}}
}

// refreshAt is when p is due to be fetched again: RefreshInterval after it
// was fetched, or half its max_age if sooner, less a jitter that spreads the
// refreshes of policies fetched together.
func (r *Resolver) refreshAt(p *Policy, m *memCache) time.Time {
	interval := min(r.refreshInterval(), p.MaxAge/2)
	jitter := time.Duration(m.hash(p.Domain) % uint64(interval/10+1))
	return p.Fetched.Add(interval - jitter)
}

// scanMemory starts the refreshes due among the policies in memory and
// returns how long to wait before looking again.
func (rf *refresher) scanMemory(ctx context.Context) time.Duration {
	r := rf.r
	m := r.memCache()
	wall := r.wall()
	next := wall.Add(refreshScanMax)
	var due []string
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		if t := sh.tab.Load(); t != nil {
			for j := range t.slots {
				e := t.slots[j].Load()
				if e == nil || e == tombstone || !e.hasPolicy() {
					continue
				}
				p := e.policy()
				if !wall.Before(p.Expires()) {
					continue // expired: a Lookup fetches it, if it is still wanted
				}
				at := r.refreshAt(p, m)
				if f := sh.fails[p.Domain]; f.waiting(wall) && f.retryAt.After(at) {
					at = f.retryAt // a failed id waits its five minutes
				}
				if wall.Before(at) {
					if at.Before(next) {
						next = at
					}
					continue
				}
				due = append(due, p.Domain)
			}
		}
		sh.mu.Unlock()
	}
	for _, d := range due {
		rf.start(ctx, d)
	}
	return min(max(next.Sub(wall), refreshScanMin), refreshScanMax)
}

// scanCache starts the refreshes due among the policies that only Cache
// holds, and deletes the expired ones. If Cache is a CacheLeaser, it lists
// only if no Resolver sharing it did within refreshListEvery: one member of a
// fleet lists the shared store each hour, not every member (each refreshes
// the policies in its own memory).
func (rf *refresher) scanCache(ctx context.Context, lister CacheLister) {
	r := rf.r
	if l, ok := lister.(CacheLeaser); ok {
		token, _, err := l.Lease(ctx, listLease, refreshListEvery-refreshScanMax)
		if err == nil && token == "" {
			return // listed by another lately
		}
		// On an error, list all the same: the listing reports what fails.
	}
	m := r.memCache()
	for key, err := range lister.Keys(ctx) {
		if err != nil {
			if ctx.Err() == nil {
				r.report(key, fmt.Errorf("%w: listing keys: %w", ErrCache, err))
			}
			return
		}
		if e := m.peek(key); e != nil && e.hasPolicy() {
			continue // in memory: scanMemory sees it
		}
		if p := r.loadCache(ctx, key); p != nil && !r.wall().Before(r.refreshAt(p, m)) {
			rf.start(ctx, key)
		}
	}
}

// start refreshes d in a goroutine of its own once a token is free, unless d
// is being refreshed already or ctx ends first.
func (rf *refresher) start(ctx context.Context, d string) {
	rf.mu.Lock()
	if rf.pending[d] {
		rf.mu.Unlock()
		return
	}
	rf.pending[d] = true
	rf.mu.Unlock()
	select {
	case rf.sem <- struct{}{}:
	case <-ctx.Done():
		rf.done(d)
		return
	}
	rf.wg.Go(func() {
		defer func() { <-rf.sem; rf.done(d) }()
		rf.r.lookupSlow(ctx, d, lookupRefetch)
	})
}

func (rf *refresher) done(d string) {
	rf.mu.Lock()
	delete(rf.pending, d)
	rf.mu.Unlock()
}

func (r *Resolver) refreshInterval() time.Duration {
	if r.RefreshInterval > 0 {
		return r.RefreshInterval
	}
	return DefaultRefreshInterval
}

func (r *Resolver) refreshConcurrency() int {
	if r.RefreshConcurrency > 0 {
		return r.RefreshConcurrency
	}
	return DefaultRefreshConcurrency
}
