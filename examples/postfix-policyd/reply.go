package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// daemon answers socketmap requests: the policy of one next-hop domain.
type daemon struct {
	cfg  *Config
	r    *mtasts.Resolver
	dane *daneChecker // nil when DANE is not checked
	log  *slog.Logger

	replies [numReplies]atomic.Uint64 // by kind, for metrics
}

// replyKind classifies replies for metrics.
type replyKind int

const (
	replySecure   replyKind = iota // OK secure match=...
	replyDANEOnly                  // OK dane-only
	replyDANE                      // OK dane
	replyNotFound                  // NOTFOUND
	replyTemp                      // TEMP
	replyPerm                      // PERM: a request that is not "name key"
	numReplies
)

var replyNames = [numReplies]string{"secure", "dane-only", "dane", "notfound", "temp", "perm"}

// cancelled is a context that is already done: Lookup with it answers from
// memory, or starts the work and returns at once, so that the cached path
// makes no timer.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// parseKey returns the domain of a key as Postfix sends it to
// smtp_tls_policy_maps: "example.com", "example.com.", "[example.com]",
// "[example.com]:25", "example.com:25", in any case, in U-labels or
// A-labels. bracketed is true for "[host]" forms, which Postfix delivers to
// without an MX lookup. ok is false for address literals and parent-domain
// keys (".example.com"), which have no policy, and for names with an empty
// label ("example..com", "example.com..").
func parseKey(key string) (domain string, bracketed, ok bool) {
	key = strings.TrimSpace(key)
	if isAddr(key) {
		return "", false, false
	}
	if strings.HasPrefix(key, "[") {
		end := strings.IndexByte(key, ']')
		if end < 0 {
			return "", false, false
		}
		key, bracketed = key[1:end], true
	} else if i := strings.LastIndexByte(key, ':'); i >= 0 {
		key = key[:i]
	}
	key = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(key)), ".")
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' || strings.Contains(key, "..") ||
		strings.ContainsAny(key, "[] \t/\\") || isAddr(key) || strings.HasPrefix(key, "ipv6:") {
		return "", false, false
	}
	return key, bracketed, true
}

// isAddr reports whether s is an IP address. It parses only what could be
// one (digits and dots, or two colons or more), so that a domain costs no
// failed parse.
func isAddr(s string) bool {
	if strings.Count(s, ":") < 2 {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != '.' && (c < '0' || c > '9') {
				return false
			}
		}
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// answer appends to out the reply to one request, "name key", without its
// netstring framing.
func (d *daemon) answer(req []byte, out []byte) []byte {
	sp := -1
	for i, c := range req {
		if c == ' ' {
			sp = i
			break
		}
	}
	if sp < 0 {
		d.replies[replyPerm].Add(1)
		return append(out, "PERM request is not \"name key\""...)
	}
	zone, ok := d.cfg.Zones[string(req[:sp])] // indexing with string(bytes) does not allocate
	if !ok {
		zone = &d.cfg.DefaultZ
	}
	domain, bracketed, ok := parseKey(string(req[sp+1:]))
	if !ok {
		d.replies[replyNotFound].Add(1)
		return append(out, "NOTFOUND "...)
	}
	return d.policy(domain, bracketed, zone, out)
}

// policy appends the reply for domain under zone.
func (d *daemon) policy(domain string, bracketed bool, zone *Zone, out []byte) []byte {
	var ctx context.Context = cancelled
	var deadline time.Time
	var stop context.CancelFunc
	// budget returns a context for work that must wait on the network.
	budget := func() context.Context {
		if stop == nil {
			deadline = time.Now().Add(zone.Timeout)
			ctx, stop = context.WithDeadline(context.Background(), deadline)
		}
		return ctx
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()

	if d.dane != nil {
		res, reason := d.dane.cached(domain, bracketed)
		if res == daneUnknown {
			res, reason = d.dane.check(budget(), domain, bracketed)
		}
		switch res {
		case daneAll:
			d.replies[replyDANEOnly].Add(1)
			return append(out, "OK dane-only"...)
		case daneSome:
			d.replies[replyDANE].Add(1)
			return append(out, "OK dane"...)
		case daneTemp:
			d.replies[replyTemp].Add(1)
			d.log.Warn("DANE check failed; deferring", "domain", domain, "err", reason)
			return append(append(out, "TEMP DNS failure checking DANE for "...), domain...)
		}
	}

	p, err := d.r.Lookup(ctx, domain)
	if err != nil && errors.Is(err, context.Canceled) && ctx == cancelled {
		// Not in memory, or due for a DNS check: wait for the work, within
		// the zone's budget.
		p, err = d.r.Lookup(budget(), domain)
	}
	if p == nil {
		if err != nil && !errors.Is(err, mtasts.ErrInvalidDomain) {
			// RFC 8461 §5: without a policy, deliver as usual; the
			// failure is reported (the Resolver's log).
			d.log.Debug("no policy", "domain", domain, "err", err)
		}
		d.replies[replyNotFound].Add(1)
		return append(out, "NOTFOUND "...)
	}
	if p.Mode == mtasts.ModeNone || p.Mode == mtasts.ModeTesting && !zone.StrictTesting || len(p.MX) == 0 {
		d.replies[replyNotFound].Add(1)
		return append(out, "NOTFOUND "...)
	}
	d.replies[replySecure].Add(1)
	return appendSecure(out, p, zone)
}

// appendSecure appends "OK secure match=..." for p: its mx patterns in policy
// order, "*.example.com" written as Postfix's ".example.com", each once.
func appendSecure(out []byte, p *mtasts.Policy, zone *Zone) []byte {
	out = append(out, "OK secure match="...)
	for i, mx := range p.MX {
		if seen(p.MX[:i], mx) {
			continue
		}
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, strings.TrimPrefix(mx, "*")...)
	}
	if zone.RequireSNI {
		out = append(out, " servername=hostname"...)
	}
	if zone.TLSRPT {
		out = appendTLSRPT(out, p)
	}
	return out
}

func seen(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// appendTLSRPT appends the attributes with which Postfix 3.10 reports on a
// session under an MTA-STS policy (RFC 8460): the policy type and domain,
// each mx pattern as published, and the policy's lines as its policy-string.
func appendTLSRPT(out []byte, p *mtasts.Policy) []byte {
	out = append(out, " policy_type=sts policy_domain="...)
	out = append(out, p.Domain...)
	for _, mx := range p.MX {
		out = append(out, " mx_host_pattern="...)
		out = append(out, mx...)
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(p.String(), "\n"), "\n") {
		if strings.ContainsAny(line, "{}") {
			continue // an extension Postfix could not parse in braces
		}
		out = append(out, " { policy_string = "...)
		out = append(out, line...)
		out = append(out, " }"...)
	}
	return out
}

// replyCounts returns the replies sent, by kind name.
func (d *daemon) replyCounts() map[string]uint64 {
	m := make(map[string]uint64, numReplies)
	for i := range d.replies {
		m[replyNames[i]] = d.replies[i].Load()
	}
	return m
}
