package main

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// daneResult is what DNSSEC and TLSA say about a next hop.
type daneResult int

const (
	daneUnknown daneResult = iota // not cached: ask DNS
	daneNone                      // no DANE: the MX answer is not validated, or no MX host has TLSA records
	daneSome                      // validated, and some MX hosts have TLSA records: "dane"
	daneAll                       // validated, and every MX host has TLSA records: "dane-only"
	daneTemp                      // a DNS failure on the DANE path: defer
)

// TTL bounds of a cached DANE answer.
const (
	daneMinTTL     = time.Minute
	daneMaxTTL     = time.Hour
	daneMaxHosts   = 16 // MX hosts checked for TLSA records
	daneQueryLimit = 2 * time.Second
)

// daneChecker finds out whether a next hop is protected by DANE (RFC 7672):
// its MX answer validated by the resolver (the AD bit) and TLSA records,
// also validated, at _25._tcp.<mx host>. RFC 8461 §2: MTA-STS must not
// override DANE, so such a next hop is left to Postfix's DANE. The resolver
// must validate DNSSEC; if it does not, no answer has the AD bit and every
// next hop goes to MTA-STS.
type daneChecker struct {
	servers []string
	udp     dns.Client
	tcp     dns.Client
	max     int // entries per shard
	seed    maphash.Seed
	shards  [64]daneShard
	queries atomic.Uint64
}

type daneKey struct {
	domain    string
	bracketed bool
}

type daneEntry struct {
	res   daneResult
	until int64 // UnixNano
}

type daneShard struct {
	mu sync.RWMutex
	m  map[daneKey]daneEntry
}

func newDANEChecker(servers []string, maxEntries int) *daneChecker {
	c := &daneChecker{
		servers: servers,
		udp:     dns.Client{Net: "udp", Timeout: daneQueryLimit, UDPSize: 1232},
		tcp:     dns.Client{Net: "tcp", Timeout: daneQueryLimit},
		max:     max(maxEntries/64, 64),
		seed:    maphash.MakeSeed(),
	}
	for i := range c.shards {
		c.shards[i].m = map[daneKey]daneEntry{}
	}
	return c
}

func (c *daneChecker) shard(domain string) *daneShard {
	return &c.shards[maphash.String(c.seed, domain)%uint64(len(c.shards))]
}

// cached returns the cached result for the next hop, or daneUnknown.
func (c *daneChecker) cached(domain string, bracketed bool) (daneResult, string) {
	sh := c.shard(domain)
	sh.mu.RLock()
	e, ok := sh.m[daneKey{domain, bracketed}]
	sh.mu.RUnlock()
	if !ok || time.Now().UnixNano() >= e.until {
		return daneUnknown, ""
	}
	return e.res, ""
}

// forget drops what is cached for domain.
func (c *daneChecker) forget(domain string) {
	sh := c.shard(domain)
	sh.mu.Lock()
	delete(sh.m, daneKey{domain, false})
	delete(sh.m, daneKey{domain, true})
	sh.mu.Unlock()
}

// entries returns how many next hops are cached.
func (c *daneChecker) entries() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// check asks DNS and caches the result, unless it is a failure. reason says
// what failed.
func (c *daneChecker) check(ctx context.Context, domain string, bracketed bool) (daneResult, string) {
	res, ttl, err := c.resolve(ctx, domain, bracketed)
	if err != nil {
		return daneTemp, err.Error()
	}
	ttl = min(max(ttl, daneMinTTL), daneMaxTTL)
	sh := c.shard(domain)
	sh.mu.Lock()
	if len(sh.m) >= c.max {
		n := 0
		for k := range sh.m { // an arbitrary eighth makes room
			delete(sh.m, k)
			if n++; n >= c.max/8+1 {
				break
			}
		}
	}
	sh.m[daneKey{domain, bracketed}] = daneEntry{res: res, until: time.Now().Add(ttl).UnixNano()}
	sh.mu.Unlock()
	return res, ""
}

var errNoServers = errors.New("no name servers")

// resolve is check without the cache: the result, how long it may be kept,
// or the DNS failure that leaves it unknown.
func (c *daneChecker) resolve(ctx context.Context, domain string, bracketed bool) (daneResult, time.Duration, error) {
	name, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return daneNone, daneMaxTTL, nil // not a name DNS can hold: MTA-STS refuses it too
	}
	name = dns.Fqdn(name)
	ttl := daneMaxTTL
	var hosts []string
	if bracketed {
		// [host]: no MX lookup; the host itself, if its address is validated.
		r, err := c.query(ctx, name, dns.TypeA)
		if err != nil {
			return 0, 0, err
		}
		ttl = min(ttl, minTTL(r))
		if r.Rcode != dns.RcodeSuccess || !r.AuthenticatedData {
			return daneNone, ttl, nil
		}
		hosts = []string{name}
	} else {
		r, err := c.query(ctx, name, dns.TypeMX)
		if err != nil {
			return 0, 0, err
		}
		ttl = min(ttl, minTTL(r))
		if r.Rcode == dns.RcodeNameError || !r.AuthenticatedData {
			return daneNone, ttl, nil
		}
		var mxs []*dns.MX
		for _, rr := range r.Answer {
			if mx, ok := rr.(*dns.MX); ok {
				mxs = append(mxs, mx)
			}
		}
		slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return int(a.Preference) - int(b.Preference) })
		for _, mx := range mxs {
			if mx.Mx == "." {
				return daneNone, ttl, nil // null MX (RFC 7505): no mail at all
			}
			hosts = append(hosts, strings.ToLower(mx.Mx))
		}
		if len(hosts) == 0 {
			hosts = []string{name} // no MX: the domain itself (RFC 5321 §5.1)
		}
	}
	if len(hosts) > daneMaxHosts {
		hosts = hosts[:daneMaxHosts]
	}
	with := 0
	for _, h := range hosts {
		r, err := c.query(ctx, "_25._tcp."+h, dns.TypeTLSA)
		if err != nil {
			return 0, 0, err
		}
		ttl = min(ttl, minTTL(r))
		if !r.AuthenticatedData {
			continue // unsigned: TLSA records, if any, are not to be trusted
		}
		for _, rr := range r.Answer {
			if _, ok := rr.(*dns.TLSA); ok {
				with++
				break
			}
		}
	}
	switch {
	case with == 0:
		return daneNone, ttl, nil
	case with == len(hosts):
		return daneAll, ttl, nil
	}
	return daneSome, ttl, nil
}

// minTTL is the least TTL in r's answer and authority sections.
func minTTL(r *dns.Msg) time.Duration {
	ttl := uint32(daneMaxTTL / time.Second)
	for _, sec := range [][]dns.RR{r.Answer, r.Ns} {
		for _, rr := range sec {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return time.Duration(ttl) * time.Second
}

// query asks the name servers in turn, with the DO and AD bits set, for a
// NOERROR or NXDOMAIN answer; SERVFAIL (what a validating resolver answers
// for a bogus signature), other error codes and timeouts are failures.
func (c *daneChecker) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	if len(c.servers) == 0 {
		return nil, errNoServers
	}
	var last error
	for _, srv := range c.servers {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.AuthenticatedData = true
		m.SetEdns0(1232, true)
		c.queries.Add(1)
		r, _, err := c.udp.ExchangeContext(ctx, m, srv)
		if err == nil && r.Truncated {
			c.queries.Add(1)
			r, _, err = c.tcp.ExchangeContext(ctx, m, srv)
		}
		switch {
		case err != nil:
			last = fmt.Errorf("%s %s at %s: %w", strings.TrimSuffix(name, "."), dns.TypeToString[qtype], srv, err)
		case r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError:
			last = fmt.Errorf("%s %s at %s: %s", strings.TrimSuffix(name, "."), dns.TypeToString[qtype], srv, dns.RcodeToString[r.Rcode])
		default:
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}
