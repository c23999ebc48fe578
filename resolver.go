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
// Lookup sends nothing on the network: it costs a map read.
package mtasts

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
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
// not be changed after the first call to Lookup, and it must not be copied
// after first use.
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

	// HTTPClient fetches policies. If nil, each fetch is one HTTP/1.1 GET on
	// a connection of its own (through the proxy that HTTPS_PROXY names, if
	// any), verifying certificates against the system roots, with TLS 1.2 or
	// later and at most 64 KiB of headers; the policy host's name is
	// resolved through Nameservers when they are set, and its IPv6 and IPv4
	// addresses are tried in turn, each given 250 ms before the next is
	// tried as well (RFC 8305). A client given here resolves names its own
	// way. Whatever the client, Lookup never follows redirects, never sends
	// cookies, and refuses a connection below TLS 1.2 (RFC 8461 §3.3, §7.2).
	HTTPClient *http.Client

	// Cache, if not nil, holds policies across restarts or processes. If nil,
	// policies are cached in memory only.
	Cache Cache

	// Now returns the current time. If nil, time.Now is used. Every time
	// decision (TTLs, max_age, retry delays) uses it.
	Now func() time.Time

	// OnError, if not nil, is called with each failure met while discovering
	// or fetching a domain's policy, including those that Lookup hides because
	// a cached policy stays in force (RFC 8461 §6 wants them reported) and
	// malformed records, which Lookup treats as no policy. It is not called for
	// a domain that simply has no record. It is called once per failure, not
	// once per Lookup, from the goroutine doing the work; it must not block.
	OnError func(domain string, err error)

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

	entries   sync.Map                  // domain -> *entry
	nextSweep atomic.Pointer[time.Time] // when sweep may next run

	dnsOnce sync.Once // sets dnsc
	dnsc    *dnsClient

	clientOnce sync.Once // sets client
	client     *http.Client

	// Set by tests only: how the default client connects, and what it trusts.
	directDial  dialFunc
	directRoots *x509.CertPool
}

// entry is one domain's cache slot.
type entry struct {
	state atomic.Pointer[state] // nil until the first lookup completes

	mu    sync.Mutex // mu guards call and timer.
	call  *call      // the lookup under way, if any
	timer *time.Timer
}

// state is what is known of a domain after a lookup. It is never modified once
// published, except for stale.
type state struct {
	policy     *Policy   // live when stored; nil if none
	err        error     // what Lookup returns while policy is nil
	txtUntil   time.Time // when the TXT answer must be asked again
	freshUntil time.Time // txtUntil, or the policy's expiry if sooner
	failedID   string    // the record id whose fetch failed last
	retryAt    time.Time // when failedID may be fetched again
	fetchErr   error     // why it failed

	// stale is set when freshUntil has passed, by a timer, when Now is nil:
	// this keeps the clock off Lookup's hot path.
	stale atomic.Bool
}

// call is a lookup in progress, shared by the callers that wait for it.
type call struct {
	done    chan struct{}
	waiters int // guarded by entry.mu
	cancel  context.CancelFunc
	policy  *Policy
	err     error

	fetching atomic.Bool // the DNS answer is in and the policy is being fetched
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
// DNS query and one fetch; each returns when the work is done or when its own
// ctx is done, whichever is first.
func (r *Resolver) Lookup(ctx context.Context, domain string) (*Policy, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	// The hot path: a fresh answer in memory. No lock, no allocation, no I/O.
	if v, ok := r.entries.Load(d); ok {
		if s := v.(*entry).state.Load(); s != nil && r.fresh(s) {
			return s.result()
		}
	}
	return r.lookupSlow(ctx, d, false)
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
	return r.lookupSlow(ctx, d, true)
}

// fresh reports whether s answers without asking DNS: its TXT answer has not
// expired, nor its policy if it has one (LOOKUP.md step 2).
func (r *Resolver) fresh(s *state) bool {
	if r.Now != nil {
		return r.Now().Before(s.freshUntil)
	}
	return !s.stale.Load()
}

func (s *state) result() (*Policy, error) {
	if s.policy != nil {
		return s.policy, nil
	}
	return nil, s.err
}

// lookupSlow joins or starts the domain's update and waits for it or for ctx.
// Unless force is set, an answer that became fresh meanwhile is returned.
func (r *Resolver) lookupSlow(ctx context.Context, d string, force bool) (*Policy, error) {
	r.sweep()
	v, _ := r.entries.LoadOrStore(d, &entry{})
	e := v.(*entry)
	e.mu.Lock()
	if s := e.state.Load(); !force && s != nil && r.fresh(s) {
		e.mu.Unlock()
		return s.result()
	}
	c := e.call
	if c == nil {
		// The work outlives any one caller: it runs until it is done or every
		// caller waiting for it has given up. Its own time limits are
		// DNSTimeout and FetchTimeout.
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call{done: make(chan struct{}), cancel: cancel}
		e.call = c
		go r.update(wctx, d, e, c)
	}
	c.waiters++
	e.mu.Unlock()

	select {
	case <-c.done:
		return c.policy, c.err
	case <-ctx.Done():
	}
	e.mu.Lock()
	c.waiters--
	if c.waiters == 0 && e.call == c {
		c.cancel()
		e.call = nil // the next caller starts afresh
	}
	e.mu.Unlock()
	// A policy that has not expired still applies, even if it could not be
	// refreshed in time.
	if s := e.state.Load(); s != nil && s.policy != nil && r.now().Before(s.policy.Expires()) {
		return s.policy, nil
	}
	return nil, abandonError(d, c, ctx.Err())
}

// abandonError is what a caller whose ctx ended before the lookup finished
// gets: a DNS or fetch failure by the phase the lookup was in.
func abandonError(d string, c *call, err error) error {
	switch {
	case !c.fetching.Load():
		return fmt.Errorf("%w: TXT _mta-sts.%s: %w", ErrDNSTemporary, d, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w: %s: %w", ErrPolicyFetch, ErrFetchTimeout, policyURL(d), err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrPolicyFetch, policyURL(d), err)
	}
}

// update runs LOOKUP.md steps 1, 3 and 4 for one domain, publishes the new
// state, reports failures, and hands the result to the callers waiting.
func (r *Resolver) update(ctx context.Context, d string, e *entry, c *call) {
	defer c.cancel()
	prev := e.state.Load()
	if prev == nil {
		prev = r.loadCache(ctx, d)
	}
	next, failure := r.refresh(ctx, d, prev, &c.fetching)

	e.mu.Lock()
	if e.call == c {
		e.call = nil
	}
	abandoned := ctx.Err() != nil // every caller gave up; the result may be partial
	if !abandoned {
		r.publish(e, next)
	}
	e.mu.Unlock()
	if !abandoned {
		if failure != nil {
			r.report(d, failure)
		}
		c.policy, c.err = next.result()
	}
	close(c.done)
}

// sweep removes, at most once per MinTXTTTL, the entries that hold nothing
// worth keeping: a stale answer with no live policy, no fetch failure still in
// its retry delay, and no lookup under way.
// Without it a sender that writes to many domains, most of them without
// MTA-STS, would keep an entry for each forever. A policy that the sweep drops
// from memory is still in Cache, if there is one.
func (r *Resolver) sweep() {
	now := r.now()
	next := r.nextSweep.Load()
	if next != nil && now.Before(*next) {
		return
	}
	after := now.Add(r.minTXTTTL())
	if !r.nextSweep.CompareAndSwap(next, &after) {
		return // another caller sweeps
	}
	r.entries.Range(func(k, v any) bool {
		e := v.(*entry)
		e.mu.Lock()
		defer e.mu.Unlock()
		s := e.state.Load()
		if e.call != nil || s == nil || r.fresh(s) ||
			s.policy != nil && now.Before(s.policy.Expires()) || // live
			s.failedID != "" && now.Before(s.retryAt) { // in its retry delay
			return true
		}
		if e.timer != nil {
			e.timer.Stop()
		}
		r.entries.CompareAndDelete(k, e)
		return true
	})
}

// publish stores s as e's state and, when the clock is the real one, arms the
// timer that marks it stale. e.mu must be held.
func (r *Resolver) publish(e *entry, s *state) {
	e.state.Store(s)
	if r.Now != nil {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	wait := time.Until(s.freshUntil)
	if wait <= 0 {
		s.stale.Store(true)
		e.timer = nil
		return
	}
	e.timer = time.AfterFunc(wait, func() { s.stale.Store(true) })
}

// refresh decides, from what is known (prev, which may be empty), what to ask
// the network and what the domain's new state is. It returns the failure to
// report, if any. It sets fetching when it starts the fetch.
func (r *Resolver) refresh(ctx context.Context, d string, prev *state, fetching *atomic.Bool) (*state, error) {
	now := r.now()
	var live *Policy // the cached policy, if it has not expired
	if prev.policy != nil && now.Before(prev.policy.Expires()) {
		live = prev.policy
	}
	next := &state{policy: live, failedID: prev.failedID, retryAt: prev.retryAt, fetchErr: prev.fetchErr}

	rec, ttl, err := r.discover(ctx, d)
	switch {
	case errors.Is(err, ErrDNSTemporary):
		// Step 3b: keep what is live; ask again soon.
		next.err = err
		return r.until(next, now, 0), err
	case err != nil:
		// Step 3a: no usable record. Absence never removes a live policy
		// (RFC 8461 §3.1); a malformed record is worth reporting.
		r.until(next, now, ttl)
		if errors.Is(err, ErrNoRecord) {
			return next, nil
		}
		return next, err
	case live != nil && rec.ID == live.ID:
		// Step 3c: the policy has not changed.
		return r.until(next, now, ttl), nil
	case rec.ID == prev.failedID && now.Before(prev.retryAt):
		// Step 3d: this id failed lately; do not hammer the policy host.
		next.err = prev.fetchErr
		return r.until(next, now, ttl), nil
	}

	// Step 4: fetch the policy the record announces.
	fetching.Store(true)
	p, err := r.fetch(ctx, d)
	now = r.now()
	if err != nil {
		// Step 4b: a live policy stays in force (RFC 8461 §3.3, §10.2).
		next.err, next.fetchErr = err, err
		next.failedID, next.retryAt = rec.ID, now.Add(fetchRetryDelay)
		return r.until(next, now, ttl), err
	}
	// Step 4a: the new policy replaces the old, whatever its mode (§8.3: a
	// fetched "none" replaces a cached "enforce").
	p.Domain, p.ID, p.Fetched = d, rec.ID, now
	next = r.until(&state{policy: p}, now, ttl)
	if r.Cache != nil {
		if err := r.storeCache(ctx, p); err != nil {
			return next, err
		}
	}
	return next, nil
}

// until sets the times of s: the TXT answer is kept for ttl, but at least
// MinTXTTTL and at most an hour; the whole answer is fresh until then, or until the policy
// expires or a failed fetch may be retried, if sooner.
func (r *Resolver) until(s *state, now time.Time, ttl time.Duration) *state {
	s.txtUntil = now.Add(max(min(ttl, maxTXTTTL), r.minTXTTTL()))
	s.freshUntil = s.txtUntil
	if s.policy != nil {
		if exp := s.policy.Expires(); exp.Before(s.freshUntil) {
			s.freshUntil = exp
		}
	}
	if s.failedID != "" && s.retryAt.After(now) && s.retryAt.Before(s.freshUntil) {
		s.freshUntil = s.retryAt
	}
	return s
}

// loadCache returns the state that Cache holds for d, which is empty if it
// holds nothing usable (step 1).
func (r *Resolver) loadCache(ctx context.Context, d string) *state {
	s := &state{}
	if r.Cache == nil {
		return s
	}
	data, err := r.Cache.Get(ctx, d)
	if err != nil {
		if !errors.Is(err, ErrCacheMiss) {
			r.report(d, fmt.Errorf("%w: reading %s: %w", ErrCache, d, err))
		}
		return s
	}
	p, err := decodePolicy(d, data)
	if err != nil {
		r.report(d, err)
		return s
	}
	s.policy = p
	return s
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

func (r *Resolver) report(domain string, err error) {
	if r.OnError != nil {
		r.OnError(domain, err)
	}
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
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
