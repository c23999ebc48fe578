// Package mtasts is the sending side of SMTP MTA Strict Transport Security
// (RFC 8461). A receiving domain publishes, over DNS and HTTPS, a policy that
// says which MX hosts may receive its mail and that they must be reached over
// TLS with a valid certificate; a sender that follows it cannot be made to
// deliver to an attacker's MX or to fall back to plain text.
//
// The flow: Resolver.Lookup queries the TXT record _mta-sts.<domain>; when it
// names a policy id not already cached, Lookup fetches
// https://mta-sts.<domain>/.well-known/mta-sts.txt, parses it and caches it
// for its max_age, in memory and, if a Cache is set, on disk. Before STARTTLS
// to each MX host, the sender calls Policy.Validate, and skips the host if it
// returns an error.
//
//	var r mtasts.Resolver
//	p, err := r.Lookup(ctx, "fabrikam.com")
//	if err != nil {
//		log.Printf("MTA-STS: %v", err) // deliver as without MTA-STS, and report
//	}
//	for _, mx := range mxHosts {
//		if err := p.Validate(mx); err != nil {
//			continue // enforced policy: this MX is not allowed
//		}
//		// STARTTLS to mx, requiring a certificate valid for mx.
//	}
//
// A cached policy stays in force until it expires, whatever happens to DNS and
// to the policy host meanwhile (RFC 8461 §3.3, §10.2), and in the steady state
// Lookup sends nothing on the network: it costs a hash table read. A program
// that runs for long also runs Resolver.Run, which fetches every cached policy
// again about daily, so that none lapses at a time an attacker can predict
// (RFC 8461 §10.2).
//
// # The API at a glance
//
//   - Resolver: Lookup (the policy for a domain, cached), Refresh (Lookup
//     asking DNS now, before deferring a message because of a policy), Run
//     (refreshes every cached policy, beside the delivery loop), Stats
//     (counters to export), and Entries, Inspect and Purge (what is held, in
//     memory and in the Cache; forget a domain).
//   - Policy: Validate (may this MX host be used?), CheckMX (is it listed,
//     whatever the mode, for reports), TLSConfig (the *tls.Config for
//     STARTTLS to an MX host) and the TLSCheck it returns (what a testing
//     policy must report after the handshake). ParsePolicy, ParseRecord and
//     Policy.Match are the RFC 8461 grammar and matching, for tools.
//   - Classify: the RFC 8460 result type and failure reason code of an error,
//     as in the table below; "", "" for what is not a TLS failure of the
//     domain's. ErrNoSTARTTLS and STARTTLSRefused are for the sender to wrap
//     a missing or refused STARTTLS.
//   - ReportCollector: counts each session (SessionResult, successes
//     included) into one RFC 8460 report per domain and UTC day, kept in its
//     Store across restarts; PostReport and Report.Mail deliver a report
//     where Resolver.LookupTLSRPT (the domain's TLSRPT record) says, and
//     ReportSender.Run does all of it after each day, spread and retried.
//   - Cache: where policies outlive the process; DirCache is one in a
//     directory, and a CacheLister, whose keys Run and Entries list. A
//     CacheLeaser is a Cache that a fleet of MTAs shares (module
//     github.com/seedc2a895ea/mtasts/rediscache has one on Redis): one member
//     fetches each policy and refreshes it, the others read it.
//   - Package mtaststest: a fake MTA-STS world on loopback for tests (DNS,
//     policy hosts, MX hosts with good and broken certificates, a settable
//     Clock, a SharedCache for a fleet in one process).
//
// Classify's result types and reason codes:
//
//	sts-policy-fetch-error      dns-failure, http-status, http-redirect, media-type,
//	                            policy-too-large, timeout, fetch-failed
//	sts-policy-invalid          record-syntax, multiple-records, policy-syntax
//	sts-webpki-invalid          certificate-host-mismatch, certificate-expired,
//	                            certificate-not-trusted, certificate-invalid
//	starttls-not-supported      starttls-not-offered, starttls-refused
//	certificate-host-mismatch   certificate-host-mismatch
//	certificate-expired         certificate-expired
//	certificate-not-trusted     certificate-not-trusted, certificate-invalid
//	validation-failure          mx-not-allowed, tls-failure
package mtasts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the Resolver's zero fields.
const (
	DefaultMinTXTTTL    = time.Minute
	DefaultFetchTimeout = time.Minute // RFC 8461 §3.3 suggests one minute
	DefaultDNSTimeout   = 5 * time.Second

	// DefaultMaxEntries is how many domains a Resolver keeps in memory when
	// MaxEntries is zero: about 250 MB if every one held a policy, far more
	// domains with MTA-STS than a large sender writes to in a policy's
	// lifetime, so that a Resolver without a durable Cache does not forget a
	// live policy under ordinary load.
	DefaultMaxEntries = 1 << 20

	// DefaultRefreshInterval is how often Run fetches each cached policy
	// again when RefreshInterval is zero.
	DefaultRefreshInterval = 24 * time.Hour

	// DefaultRefreshConcurrency bounds the refreshes Run makes at once when
	// RefreshConcurrency is zero.
	DefaultRefreshConcurrency = 4

	// maxTXTTTL caps how long a TXT answer is kept, whatever its TTL, so
	// that a new policy id is noticed within the hour.
	maxTXTTTL = time.Hour

	// fetchRetryDelay is how long a failed fetch of one record id is not
	// retried (RFC 8461 §3.3: "SHOULD ... wait five minutes or more").
	fetchRetryDelay = 5 * time.Minute
)

// A Resolver finds, fetches and caches MTA-STS policies. The zero value is
// ready to use, with the system's name servers, the system's certificate roots
// and an in-memory cache.
//
// A Resolver is safe for concurrent use by multiple goroutines. Its fields must
// not be changed after the first call to one of its methods, and it must not
// be copied after first use.
type Resolver struct {
	// Nameservers are the DNS servers to query, as "host:port". They answer
	// every name the Resolver looks up: the _mta-sts and TLSRPT records and,
	// with the default HTTP client, the policy host's addresses. The server
	// that answered lately is asked first, the order given breaking ties; a
	// server that does not answer within a second is asked again, or the
	// next one is (see DNSTimeout). If empty, those of /etc/resolv.conf are
	// used, the file being checked for changes every few seconds, or
	// 127.0.0.1:53 and [::1]:53 if it lists none; the policy host is then
	// resolved as net.Dialer does. They should be recursive resolvers, and
	// ideally validate DNSSEC.
	Nameservers []string

	// HTTPClient fetches policies. If nil, the Resolver uses a net/http
	// client of its own: HTTP/1.1 on a new connection for each fetch (through
	// the proxy that HTTPS_PROXY names, if any), certificates verified against
	// the system roots, TLS 1.2 or later, at most 64 KiB of headers, no
	// compression. Its lookups of the policy host's name (A and AAAA,
	// following CNAMEs) go to Nameservers when they are set, with the same
	// timeouts, retransmissions and failover as the TXT query, and its IPv6
	// and IPv4 addresses are tried in turn, each given 250 ms before the next
	// is tried as well (RFC 8305). A client given here resolves names its own
	// way; the Resolver's DNS client still makes the TXT lookups. Whatever the
	// client, Lookup never follows redirects, never sends cookies, and refuses
	// a connection below TLS 1.2 (RFC 8461 §3.3, §7.2).
	HTTPClient *http.Client

	// Cache, if not nil, holds policies across restarts or processes. If nil,
	// policies are cached in memory only. A Cache that is also a CacheLister
	// lets Run refresh, and Entries list, the policies only it holds.
	Cache Cache

	// Now returns the current time. If nil, time.Now is used, and the
	// cached path of Lookup reads a coarse monotonic clock instead, at most
	// about a tenth of a second behind. Every time decision (TTLs, max_age,
	// retry delays) uses it. An answer stored at a time later than Now then
	// reads (a clock set back) is stale, and asked again.
	Now func() time.Time

	// OnError, if not nil, is called with each failure met while discovering
	// or fetching a domain's policy, including those that Lookup hides because
	// a cached policy stays in force (RFC 8461 §6 wants them reported) and
	// malformed records, which Lookup treats as no policy. It is not called for
	// a domain that simply has no record. It is called once per failure, not
	// once per Lookup, from the goroutine doing the work; it must not block.
	OnError func(domain string, err error)

	// Logger, if not nil, gets one record per policy fetched, changed or
	// refreshed and per failure (the failures OnError gets). If nil, nothing
	// is logged.
	Logger *slog.Logger

	// MinTXTTTL is the least time a TXT answer, positive or negative, is kept,
	// so that a TTL of zero does not mean a query per message. It is also how
	// long a DNS failure is remembered before the next query. If zero,
	// DefaultMinTXTTTL. An answer is kept at most an hour (unless MinTXTTTL
	// is longer), so that a new policy id is noticed within the hour.
	MinTXTTTL time.Duration

	// FetchTimeout bounds a policy fetch. If zero, DefaultFetchTimeout.
	FetchTimeout time.Duration

	// DNSTimeout bounds one DNS question: the first query, the queries sent
	// again after 1 s, then 2 s more, and so on (to the next name server if
	// there is one), and a retry over TCP when an answer is truncated. A
	// server that fails outright is not waited for. If zero,
	// DefaultDNSTimeout.
	DNSTimeout time.Duration

	// MaxEntries bounds how many domains are kept in memory. Past it, the
	// domains not looked up lately leave memory, negative answers and expired
	// policies before live ones, and a later Lookup finds a policy again in
	// Cache, or fetches it. Without a durable Cache, a live policy that leaves
	// memory is forgotten until fetched again, which an attacker who blocks
	// the fetch can prevent: set MaxEntries with that in mind, or set a Cache.
	// If zero, DefaultMaxEntries; if negative, there is no bound.
	MaxEntries int

	// RefreshInterval is how often Run fetches each cached policy again, and
	// at most half its max_age. If zero, DefaultRefreshInterval.
	RefreshInterval time.Duration

	// RefreshConcurrency bounds the refreshes Run makes at once. If zero,
	// DefaultRefreshConcurrency.
	RefreshConcurrency int

	memOnce sync.Once
	mem     atomic.Pointer[memCache] // set once, by memOnce
	stats   counters

	dnsOnce sync.Once // sets dnsc
	dnsc    *dnsClient

	clientOnce sync.Once // sets client
	client     *http.Client

	saveMu   sync.Mutex
	unsaved  map[string]bool // domains whose policy Cache failed to take
	flushing bool            // a goroutine is writing them
}

// call is a lookup in progress, shared by the callers that wait for it.
type call struct {
	done   chan struct{} // closed when policy and err are set
	kind   lookupKind
	policy *Policy
	err    error

	fetching atomic.Bool // the DNS answer is in and the policy is being fetched
	purged   bool        // Purge forgot the domain meanwhile; guarded by the shard's mu
}

// lookupKind says how much a lookup asks of the network.
type lookupKind int

const (
	lookupCached  lookupKind = iota // answer from memory if fresh
	lookupRecheck                   // ask DNS now, fetch if the id changed (Refresh)
	lookupRefetch                   // ask DNS now and fetch whatever it says (Run)
)

// failure is a fetch that failed, remembered so that the same record id is
// not fetched again within fetchRetryDelay (RFC 8461 §3.3).
type failure struct {
	id      string    // the record id whose policy could not be fetched
	at      time.Time // when it failed
	retryAt time.Time // when the id may be fetched again
	err     error
}

// holds reports whether f still keeps id from being fetched at now. A clock
// that reads earlier than the failure ends the wait.
func (f *failure) holds(id string, now time.Time) bool {
	return f.waiting(now) && f.id == id
}

// waiting reports whether f's retry delay runs at now. A clock that reads
// earlier than the failure ends it.
func (f *failure) waiting(now time.Time) bool {
	return f != nil && !now.Before(f.at) && now.Before(f.retryAt)
}

// Lookup returns the MTA-STS policy for a recipient domain (or the smart
// host's domain; RFC 8461 §3.4), fetching and caching it as RFC 8461 §3
// directs. The domain may have a trailing dot, upper case, or U-labels.
//
//   - (p, nil): p applies, freshly fetched or cached. Call p.Validate for each
//     MX. The mode may be none, which Validate treats as no policy.
//   - (nil, nil): the domain has no usable MTA-STS record and nothing is
//     cached. Deliver as usual.
//   - (nil, err): a record exists but no policy could be had (the fetch or
//     parse failed, or DNS failed), and nothing is cached. Deliver as though
//     the domain had no policy, and report err. err wraps ErrPolicyFetch,
//     ErrInvalidPolicy, ErrDNSTemporary or ErrInvalidDomain, and the cause.
//
// A failure that a cached policy hides returns the cached policy and a nil
// error, and is passed to OnError. Concurrent Lookups of one domain share one
// DNS query and one fetch. That work belongs to the Resolver, not to the
// callers: each caller returns when the work is done or when its own ctx is
// done, whichever is first, but the work runs on to its own limits
// (DNSTimeout, FetchTimeout) and its outcome is always recorded, so that a
// policy host made slow cannot keep a domain without its policy.
func (r *Resolver) Lookup(ctx context.Context, domain string) (*Policy, error) {
	// The hot path: a fresh answer in memory. No lock, no allocation, no I/O.
	// Memory holds normalized domains only, so a domain found as given is
	// one, and needs no normalizing.
	m := r.mem.Load()
	if m != nil {
		if e := m.get(domain); e != nil && e.isFresh(r.clock()) {
			r.stats.fromMemory.add()
			return e.result()
		}
	}
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	if m != nil && d != domain {
		if e := m.get(d); e != nil && e.isFresh(r.clock()) {
			r.stats.fromMemory.add()
			return e.result()
		}
	}
	r.stats.slowLookups.Add(1)
	return r.lookupSlow(ctx, d, lookupCached)
}

// Refresh is Lookup without the in-memory answer: it asks DNS for the
// domain's record now, whatever the TTL, and fetches the policy if its id has
// changed. RFC 8461 §5.1 wants this before a message is failed permanently
// because of a policy: the domain may have published a new one. The five-
// minute wait after a failed fetch still applies. Refresh shares the work with
// concurrent Lookups of the domain.
func (r *Resolver) Refresh(ctx context.Context, domain string) (*Policy, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	r.stats.slowLookups.Add(1)
	return r.lookupSlow(ctx, d, lookupRecheck)
}

// memCache returns the in-memory layer, making it on first use.
func (r *Resolver) memCache() *memCache {
	if m := r.mem.Load(); m != nil {
		return m
	}
	r.memOnce.Do(func() {
		limit := r.MaxEntries
		if limit == 0 {
			limit = DefaultMaxEntries
		}
		r.mem.Store(newMemCache(max(limit, 0)))
	})
	return r.mem.Load()
}

// lookupSlow joins or starts the domain's work and waits for it or for ctx.
// Unless kind asks for the network, an answer that became fresh meanwhile is
// returned.
func (r *Resolver) lookupSlow(ctx context.Context, d string, kind lookupKind) (*Policy, error) {
	m := r.memCache()
	h := m.hash(d)
	sh := m.shardOf(h)
	for {
		now := r.clock()
		sh.mu.Lock()
		r.sweepIfDue(sh, now)
		if kind == lookupCached {
			if e := sh.lookup(h, d); e != nil && e.isFresh(now) {
				sh.mu.Unlock()
				r.stats.slowFromMemory.Add(1) // only Lookup asks for a cached answer
				return e.result()
			}
		}
		c := sh.calls[d]
		if c != nil && kind == lookupRefetch && c.kind != lookupRefetch {
			// The work under way may not fetch: let it finish, then fetch.
			sh.mu.Unlock()
			select {
			case <-c.done:
				continue
			case <-ctx.Done():
				return r.abandon(m, d, c, ctx.Err())
			}
		}
		if c == nil {
			c = &call{done: make(chan struct{}), kind: kind}
			sh.calls[d] = c
			go r.update(context.WithoutCancel(ctx), m, sh, h, d, c)
		}
		sh.mu.Unlock()
		select {
		case <-c.done:
			return c.policy, c.err
		case <-ctx.Done():
			return r.abandon(m, d, c, ctx.Err())
		}
	}
}

// abandon is what a caller whose ctx ended before the work c was done gets: a
// live policy if memory holds one, else a DNS or fetch failure by the phase
// the work was in. The work goes on.
func (r *Resolver) abandon(m *memCache, d string, c *call, err error) (*Policy, error) {
	if e := m.get(d); e != nil {
		if p := e.policy(); p != nil && r.wall().Before(p.Expires()) {
			return p, nil
		}
	}
	switch {
	case !c.fetching.Load():
		return nil, fmt.Errorf("%w: TXT _mta-sts.%s: %w", ErrDNSTemporary, d, err)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%w: %w: %s: %w", ErrPolicyFetch, ErrFetchTimeout, policyURL(d), err)
	default:
		return nil, fmt.Errorf("%w: %s: %w", ErrPolicyFetch, policyURL(d), err)
	}
}

// update does one domain's work (RFC 8461 §3: the TXT record, then the policy
// if it is new), publishes the outcome in memory and in Cache, reports
// failures, and hands the result to the callers waiting. ctx carries no
// deadline and is never cancelled: the work ends by its own limits.
func (r *Resolver) update(ctx context.Context, m *memCache, sh *shard, h uint64, d string, c *call) {
	defer close(c.done)
	sh.mu.Lock()
	prev := sh.lookup(h, d)
	fail := sh.fails[d]
	sh.mu.Unlock()

	var live *Policy
	if prev != nil {
		live = prev.policy()
	} else if live = r.loadCache(ctx, d); live != nil {
		// Known at once to callers that give up before the network answers.
		now := r.clock()
		r.publish(m, sh, h, d, c, &newPolicyEntry(live, now, now).entry, nil, false, false)
		prev = m.peek(d)
	}
	if live != nil && !r.wall().Before(live.Expires()) {
		live = nil
	}

	o := r.decide(ctx, d, live, fail, c)
	if o.fetched && !o.stored && r.Cache != nil {
		r.save(ctx, o.policy)
	}

	wall, now := r.wall(), r.clock()
	freshFor := max(min(o.ttl, maxTXTTTL), r.minTXTTTL())
	if o.policy != nil {
		freshFor = min(freshFor, o.policy.Expires().Sub(wall))
	}
	if o.fail != nil && o.fail.retryAt.After(wall) {
		freshFor = min(freshFor, o.fail.retryAt.Sub(wall))
	}
	fresh := now + int64(max(freshFor, 0))
	var e *entry
	switch {
	case o.policy == nil:
		e = &newNegEntry(d, o.err, now, fresh).entry
	case prev != nil && prev.policy() == o.policy:
		prev.setTimes(now, fresh) // the same policy: renewed in place
		e = prev
	default:
		e = &newPolicyEntry(o.policy, now, fresh).entry
	}
	r.publish(m, sh, h, d, c, e, o.fail, true, o.fetched)
	c.policy, c.err = e.result()
	if o.report != nil {
		r.report(d, o.report)
	}
}

// publish stores e as d's answer and fail as its failure, and, if last, ends
// c's hold on the domain. If the domain was purged while c was under way,
// only a policy that c fetched afterwards is stored: what c knew before is
// what the operator asked to forget.
func (r *Resolver) publish(m *memCache, sh *shard, h uint64, d string, c *call, e *entry, fail *failure, last, fetched bool) {
	wall := r.wall()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.purged && !fetched {
		if last && sh.calls[d] == c {
			delete(sh.calls, d)
		}
		return
	}
	if last {
		if sh.calls[d] == c {
			delete(sh.calls, d)
		}
		if fail != nil {
			sh.fails[d] = fail
		} else {
			delete(sh.fails, d)
		}
	}
	if n := sh.put(h, e, m.perShard, wall); n > 0 {
		r.stats.evictions.Add(uint64(n))
	}
}

// outcome is what one round of work learned of a domain.
type outcome struct {
	policy  *Policy       // the policy in force: the live one, a new one, or nil
	fetched bool          // policy was fetched by this work, or for it
	stored  bool          // and is in Cache already
	err     error         // what Lookup returns when policy is nil
	ttl     time.Duration // how long the DNS answer may be kept
	fail    *failure      // the fetch failure to remember, if any
	report  error         // the failure to report, if any
}

// decide runs RFC 8461 §3 for d from what is known (live, which may be nil,
// and the last failure): the TXT query, then the fetch when the record names
// a policy that is not the live one, or, for kind lookupRefetch, whatever the
// record says (RFC 8461 §10.2: refresh before the policy expires).
func (r *Resolver) decide(ctx context.Context, d string, live *Policy, fail *failure, c *call) outcome {
	o := outcome{policy: live, fail: fail}
	refetch := c.kind == lookupRefetch && live != nil
	rec, ttl, err := r.discover(ctx, d)
	o.ttl = ttl
	var id string // the record id to fetch under
	switch {
	case errors.Is(err, ErrDNSTemporary):
		// Keep what is live; ask again soon.
		o.err, o.report, o.ttl = err, err, 0
		if !refetch {
			return o
		}
		id = live.ID
	case err != nil:
		// No usable record. Absence never removes a live policy (RFC 8461
		// §3.1); a malformed record is worth reporting.
		if !errors.Is(err, ErrNoRecord) {
			o.report = err
		}
		if !refetch {
			return o
		}
		id = live.ID
	case live != nil && rec.ID == live.ID && !refetch:
		return o // the policy has not changed
	default:
		id = rec.ID
	}
	now := r.wall()
	if fail.holds(id, now) {
		// This id failed lately; do not hammer the policy host.
		if live == nil {
			o.err = fail.err
		}
		return o
	}

	c.fetching.Store(true)
	start := time.Now()
	var p *Policy
	shared := false
	if l, ok := r.Cache.(CacheLeaser); ok {
		p, shared, err = r.fetchLeased(ctx, l, d, id, live, c.kind)
		o.stored = true // by fetchLeased, or read from Cache
	} else {
		p, err = r.fetchAs(ctx, d, id)
	}
	now = r.wall()
	if err != nil {
		// A live policy stays in force (RFC 8461 §3.3, §10.2).
		o.fail = &failure{id: id, at: now, retryAt: now.Add(fetchRetryDelay), err: err}
		if live == nil {
			o.err = err
		}
		if live == nil || live.Mode != ModeNone || c.kind != lookupRefetch {
			o.report = err
		}
		if c.kind == lookupRefetch {
			r.stats.refreshFailures.Add(1)
		}
		return o
	}
	// The new policy replaces the old, whatever its mode (RFC 8461 §8.3: a
	// fetched "none" replaces a cached "enforce").
	o.policy, o.fetched, o.fail = p, true, nil
	if shared {
		r.stats.shared.Add(1)
		if c.kind == lookupRefetch {
			r.stats.refreshes.Add(1)
		}
		return o
	}
	r.logFetch(p, live, c.kind, time.Since(start))
	return o
}

// fetchAs fetches d's policy, as published under the record id.
func (r *Resolver) fetchAs(ctx context.Context, d, id string) (*Policy, error) {
	r.stats.fetches.Add(1)
	p, err := r.fetch(ctx, d)
	if err != nil {
		return nil, err
	}
	p.Domain, p.ID, p.Fetched = d, id, r.wall()
	return p, nil
}

// logFetch records a policy fetched, and whether it changed or refreshed the
// one before.
func (r *Resolver) logFetch(p, old *Policy, kind lookupKind, took time.Duration) {
	if kind == lookupRefetch {
		r.stats.refreshes.Add(1)
	}
	if r.Logger == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("domain", p.Domain), slog.String("id", p.ID),
		slog.String("mode", string(p.Mode)), slog.Duration("max_age", p.MaxAge),
		slog.Duration("took", took),
	}
	ctx := context.Background()
	switch {
	case old == nil:
		r.Logger.LogAttrs(ctx, slog.LevelInfo, "mtasts: policy fetched", attrs...)
	case old.ID != p.ID || old.Mode != p.Mode || !equalStrings(old.MX, p.MX) || old.MaxAge != p.MaxAge:
		attrs = append(attrs, slog.String("old_id", old.ID), slog.String("old_mode", string(old.Mode)))
		r.Logger.LogAttrs(ctx, slog.LevelInfo, "mtasts: policy changed", attrs...)
	default:
		r.Logger.LogAttrs(ctx, slog.LevelInfo, "mtasts: policy refreshed", attrs...)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sweepIfDue removes, at most once per MinTXTTTL for each shard, the entries
// that hold nothing worth keeping: a stale answer with no live policy, no
// fetch failure still in its retry delay, and no work under way. Without it a
// sender that writes to many domains, most of them without MTA-STS, would keep
// an entry for each until MaxEntries. A clock that reads earlier than the last
// sweep sweeps at once. sh.mu must be held.
func (r *Resolver) sweepIfDue(sh *shard, now int64) {
	if now >= sh.lastSweep && now < sh.nextSweep {
		return
	}
	sh.lastSweep, sh.nextSweep = now, now+int64(r.minTXTTTL())
	t := sh.tab.Load()
	if t == nil {
		return
	}
	wall := r.wall()
	for i := range t.slots {
		e := t.slots[i].Load()
		if e == nil || e == tombstone || e.isFresh(now) {
			continue
		}
		key := e.key()
		if p := e.policy(); p != nil && wall.Before(p.Expires()) || // live
			sh.calls[key] != nil {
			continue
		}
		if sh.fails[key].waiting(wall) {
			continue // in its retry delay
		}
		sh.drop(t, uint64(i), e)
	}
}

// loadCache returns the live policy that Cache holds for d, or nil. An expired
// one is deleted from Cache. Failures are reported, unless ctx has ended.
func (r *Resolver) loadCache(ctx context.Context, d string) *Policy {
	if r.Cache == nil {
		return nil
	}
	p, err := r.readCache(ctx, d)
	if err != nil {
		if !errors.Is(err, ErrCacheMiss) && ctx.Err() == nil {
			r.report(d, err)
		}
		return nil
	}
	if !r.wall().Before(p.Expires()) {
		r.deleteExpired(ctx, d)
		return nil
	}
	return p
}

// deleteExpired deletes from Cache a policy found expired there: the
// Resolver is the only one that knows it will never be used again.
func (r *Resolver) deleteExpired(ctx context.Context, d string) {
	if err := r.Cache.Delete(ctx, d); err != nil && ctx.Err() == nil {
		r.report(d, fmt.Errorf("%w: deleting expired %s: %w", ErrCache, d, err))
	}
}

func (r *Resolver) storeCache(ctx context.Context, p *Policy) error {
	data, err := encodePolicy(p)
	if err == nil {
		err = r.Cache.Put(ctx, p.Domain, data)
	}
	if err != nil {
		return fmt.Errorf("%w: writing %s: %w", ErrCache, p.Domain, err)
	}
	return nil
}

// report passes a failure to OnError and the Logger, and counts it.
func (r *Resolver) report(domain string, err error) {
	r.stats.count(err)
	if r.Logger != nil {
		r.Logger.LogAttrs(context.Background(), slog.LevelWarn, "mtasts: failure",
			slog.String("domain", domain), slog.String("error", err.Error()))
	}
	if r.OnError != nil {
		r.OnError(domain, err)
	}
}

// wall is the time of day, for the decisions that outlive the process:
// max_age, the fetch time, retry delays.
func (r *Resolver) wall() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// clock is the time in nanoseconds on the clock that dates in-memory
// answers: Now, if set, or the coarse monotonic clock.
func (r *Resolver) clock() int64 {
	if r.Now != nil {
		return r.Now().UnixNano()
	}
	return coarseNow()
}

func (r *Resolver) minTXTTTL() time.Duration {
	if r.MinTXTTTL > 0 {
		return r.MinTXTTTL
	}
	return DefaultMinTXTTTL
}

func (r *Resolver) fetchTimeout() time.Duration {
	if r.FetchTimeout > 0 {
		return r.FetchTimeout
	}
	return DefaultFetchTimeout
}

func (r *Resolver) dnsTimeout() time.Duration {
	if r.DNSTimeout > 0 {
		return r.DNSTimeout
	}
	return DefaultDNSTimeout
}
