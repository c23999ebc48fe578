package mtasts

import (
	"errors"
	"sync/atomic"
	"unsafe"
)

// Stats is a snapshot of a Resolver's counters, for a program to export (to
// Prometheus, expvar, a log line) without this package depending on any of
// them. Counters only grow; Entries and Policies are the state at the time.
type Stats struct {
	Lookups    uint64 // calls to Lookup and Refresh with a valid domain
	FromMemory uint64 // Lookups answered from memory, without waiting on work

	DNSQueries uint64 // DNS queries sent, retransmissions included
	Fetches    uint64 // policy fetches started
	Shared     uint64 // policies taken from a CacheLeaser that another Resolver fetched

	Refreshes       uint64 // policies fetched again by Run and found valid
	RefreshFailures uint64 // refresh fetches that failed

	// Failures met, by kind (the failures OnError gets).
	DNSFailures      uint64 // ErrDNSTemporary
	RecordFailures   uint64 // ErrInvalidRecord, ErrMultipleRecords
	FetchFailures    uint64 // ErrPolicyFetch, ErrWebPKI included
	PolicyFailures   uint64 // ErrInvalidPolicy
	CacheFailures    uint64 // ErrCache, ErrCacheCorrupt
	OtherFailures    uint64 // anything else
	Evictions        uint64 // entries that left memory because of MaxEntries
	Entries          int    // domains held in memory
	Policies         int    // of which hold a policy, live or not
	LookupsUnderWay  int    // domains whose work is under way
	FailuresInMemory int    // domains whose last fetch failed
}

// counters are the Resolver's counters. Each is written with one atomic add.
type counters struct {
	fromMemory      stripedCounter // Lookups answered on the lock-free path
	slowLookups     atomic.Uint64  // the others
	slowFromMemory  atomic.Uint64  // of which answered from memory after all
	fetches         atomic.Uint64
	shared          atomic.Uint64
	refreshes       atomic.Uint64
	refreshFailures atomic.Uint64
	evictions       atomic.Uint64

	dnsFailures, recordFailures, fetchFailures,
	policyFailures, cacheFailures, otherFailures atomic.Uint64
}

// count adds a failure to its kind.
func (c *counters) count(err error) {
	switch {
	case errors.Is(err, ErrDNSTemporary):
		c.dnsFailures.Add(1)
	case errors.Is(err, ErrInvalidRecord), errors.Is(err, ErrMultipleRecords):
		c.recordFailures.Add(1)
	case errors.Is(err, ErrPolicyFetch):
		c.fetchFailures.Add(1)
	case errors.Is(err, ErrInvalidPolicy):
		c.policyFailures.Add(1)
	case errors.Is(err, ErrCache), errors.Is(err, ErrCacheCorrupt):
		c.cacheFailures.Add(1)
	default:
		c.otherFailures.Add(1)
	}
}

// Stats returns a snapshot of the Resolver's counters. It locks each part of
// the in-memory table briefly, to count its entries.
func (r *Resolver) Stats() Stats {
	c := &r.stats
	fromMemory := c.fromMemory.load()
	s := Stats{
		Lookups:         fromMemory + c.slowLookups.Load(),
		FromMemory:      fromMemory + c.slowFromMemory.Load(),
		DNSQueries:      r.dnsClient().queries.Load(),
		Fetches:         c.fetches.Load(),
		Shared:          c.shared.Load(),
		Refreshes:       c.refreshes.Load(),
		RefreshFailures: c.refreshFailures.Load(),
		DNSFailures:     c.dnsFailures.Load(),
		RecordFailures:  c.recordFailures.Load(),
		FetchFailures:   c.fetchFailures.Load(),
		PolicyFailures:  c.policyFailures.Load(),
		CacheFailures:   c.cacheFailures.Load(),
		OtherFailures:   c.otherFailures.Load(),
		Evictions:       c.evictions.Load(),
	}
	if m := r.mem.Load(); m != nil {
		for i := range m.shards {
			sh := &m.shards[i]
			sh.mu.Lock()
			s.Entries += sh.count
			s.Policies += sh.policies
			s.LookupsUnderWay += len(sh.calls)
			s.FailuresInMemory += len(sh.fails)
			sh.mu.Unlock()
		}
	}
	return s
}

// stripedCounter is a counter that goroutines on different processors add to
// without sharing a cache line, most of the time: Lookup's lock-free path
// counts with it, where one shared word would make every processor wait for
// the others.
type stripedCounter struct {
	_       [64]byte // off the cache line of the fields before it
	stripes [16]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

// add adds one to the stripe of the calling goroutine's stack, so that each
// goroutine keeps to one stripe (two share one by chance only) and a stripe's
// cache line stays with the processor that runs its goroutine.
func (c *stripedCounter) add() {
	var here byte
	c.stripes[uintptr(unsafe.Pointer(&here))>>12%uintptr(len(c.stripes))].n.Add(1)
}

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c.stripes {
		n += c.stripes[i].n.Load()
	}
	return n
}
