package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// ednsSize is the UDP payload size advertised with EDNS0: the size the DNS
	// flag day 2020 recommends, small enough to avoid IP fragmentation.
	ednsSize = 1232
	// maxCNAMEs bounds the CNAME chain followed, across queries.
	maxCNAMEs = 8
)

// discover finds the domain's one STS record (RFC 8461 §3.1) and how long the
// answer may be kept. Its errors wrap ErrNoRecord, ErrMultipleRecords,
// ErrInvalidRecord or ErrDNSTemporary; the TTL is meaningful with the first
// three too, as the time to keep that negative answer.
func (r *Resolver) discover(ctx context.Context, domain string) (*Record, time.Duration, error) {
	name := "_mta-sts." + domain
	txts, ttl, err := r.lookupTXT(ctx, name)
	if err != nil {
		return nil, ttl, err
	}
	rec, err := selectRecord(name, txts)
	return rec, ttl, err
}

// selectRecord picks the STS record among the TXT records found at name:
// those that do not begin with "v=STSv1;" are discarded, and exactly one must
// be left, and valid (RFC 8461 §3.1).
func selectRecord(name string, txts []string) (*Record, error) {
	var sts []string
	for _, t := range txts {
		if isSTSRecord(t) {
			sts = append(sts, t)
		}
	}
	switch len(sts) {
	case 0:
		return nil, fmt.Errorf("%w at %s", ErrNoRecord, name)
	case 1:
		rec, err := ParseRecord(sts[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return rec, nil
	default:
		return nil, fmt.Errorf("%w at %s: %q", ErrMultipleRecords, name, sts)
	}
}

// lookupTXT returns the TXT records of name, each one's strings joined with
// nothing between them (RFC 8461 §3.1), following CNAMEs, and the smallest TTL
// of the records used. A name with no TXT records gives an error wrapping
// ErrNoRecord with the negative-caching TTL of the zone's SOA.
func (r *Resolver) lookupTXT(ctx context.Context, name string) ([]string, time.Duration, error) {
	return resolveTXT(ctx, name, r.exchange)
}

// An exchangeFunc sends a TXT query for qname and returns the answer, which
// checkReply has accepted, or an error wrapping ErrDNSTemporary.
type exchangeFunc func(ctx context.Context, qname string) (*dns.Msg, error)

// resolveTXT is lookupTXT over any exchange: everything lookupTXT does with
// the answers it gets (CNAME chains within an answer and across queries, TXT
// strings joined, the TTL kept, NXDOMAIN and NODATA with their negative TTL)
// lives here, apart from the network, so that FuzzDNSAnswer can feed it
// arbitrary messages. It asks exchange at most maxCNAMEs+1 times.
func resolveTXT(ctx context.Context, name string, exchange exchangeFunc) ([]string, time.Duration, error) {
	qname := dns.Fqdn(strings.ToLower(name))
	seen := map[string]bool{}
	var ttl uint32 = 1<<31 - 1
	for {
		if seen[qname] {
			return nil, 0, fmt.Errorf("%w: CNAME loop at %s", ErrDNSTemporary, qname)
		}
		seen[qname] = true
		resp, err := exchange(ctx, qname)
		if err != nil {
			return nil, 0, err
		}
		if resp.Rcode == dns.RcodeNameError {
			return nil, negativeTTL(resp), fmt.Errorf("%w: %s does not exist", ErrNoRecord, name)
		}
		// Follow the CNAME chain within the answer, as a recursive server gives it.
		target := qname
		for hops := 0; ; hops++ {
			next, t, ok := cnameOf(resp.Answer, target)
			if !ok {
				break
			}
			if hops == maxCNAMEs || seen[next] {
				return nil, 0, fmt.Errorf("%w: CNAME chain from %s too long or looping", ErrDNSTemporary, name)
			}
			seen[next] = true
			target, ttl = next, min(ttl, t)
		}
		var txts []string
		for _, rr := range resp.Answer {
			if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, target) {
				txts = append(txts, joinTXT(t.Txt))
				ttl = min(ttl, ttlOf(t.Hdr.Ttl))
			}
		}
		if len(txts) > 0 {
			return txts, time.Duration(ttl) * time.Second, nil
		}
		if target == qname {
			return nil, negativeTTL(resp), fmt.Errorf("%w: no TXT records at %s", ErrNoRecord, name)
		}
		// The answer ended at an alias without resolving it: ask for the target.
		if len(seen) > maxCNAMEs {
			return nil, 0, fmt.Errorf("%w: CNAME chain from %s too long", ErrDNSTemporary, name)
		}
		delete(seen, target)
		qname = target
	}
}

func cnameOf(answer []dns.RR, owner string) (string, uint32, bool) {
	for _, rr := range answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, owner) {
			return strings.ToLower(c.Target), ttlOf(c.Hdr.Ttl), true
		}
	}
	return "", 0, false
}

// negativeTTL is how long a negative answer may be cached (RFC 2308 §5): the
// smaller of the SOA record's TTL and its MINIMUM field, or 0 without an SOA.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(ttlOf(min(soa.Hdr.Ttl, soa.Minttl))) * time.Second
		}
	}
	return 0
}

// exchange sends a TXT query for qname to each name server in turn until one
// answers with NOERROR or NXDOMAIN, over UDP with EDNS0 and again over TCP
// when the answer is truncated. Failures wrap ErrDNSTemporary.
func (r *Resolver) exchange(ctx context.Context, qname string) (*dns.Msg, error) {
	servers, err := r.nameservers()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDNSTemporary, err)
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, dns.TypeTXT)
	m.SetEdns0(ednsSize, false)
	var errs []error
	for _, server := range servers {
		resp, err := r.exchangeWith(ctx, m, server)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: TXT %s: %w", ErrDNSTemporary, qname, errors.Join(errs...))
}

func (r *Resolver) exchangeWith(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.dnsTimeout())
	defer cancel()
	// Timeout as well as ctx: without it the client holds each read to its
	// own default of two seconds, whatever DNSTimeout says.
	c := &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.dnsTimeout()}
	resp, err := exchangeConn(ctx, c, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, err = exchangeConn(ctx, c, m, server)
	}
	if err == nil {
		err = checkReply(m, resp)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", server, err)
	}
	return resp, nil
}

// exchangeConn sends m to server over c.Net and returns the answer. It stops
// waiting as soon as ctx is done: the client library applies ctx's deadline
// but not its cancellation, which would leave a lookup that every caller has
// given up on waiting out the whole of DNSTimeout.
func exchangeConn(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	co, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Now()) })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return resp, err
}

// checkReply accepts resp as the answer to the query m: a response with m's
// id, for m's one question, and NOERROR or NXDOMAIN, the two codes that say
// something about the name; any other code means asking elsewhere or later.
func checkReply(m, resp *dns.Msg) error {
	switch {
	case !resp.Response || resp.Id != m.Id:
		return errors.New("not a response to the query")
	case len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != dns.TypeTXT || resp.Question[0].Qclass != dns.ClassINET:
		return errors.New("answer for another question")
	case resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError:
		return errors.New(dns.RcodeToString[resp.Rcode])
	}
	return nil
}

// nameservers returns Nameservers, or those of /etc/resolv.conf, read once.
func (r *Resolver) nameservers() ([]string, error) {
	if len(r.Nameservers) > 0 {
		return r.Nameservers, nil
	}
	r.sysOnce.Do(func() {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			r.sysErr = fmt.Errorf("no Nameservers and %w", err)
			return
		}
		for _, s := range conf.Servers {
			r.sysServers = append(r.sysServers, net.JoinHostPort(s, conf.Port))
		}
		if len(r.sysServers) == 0 {
			r.sysErr = errors.New("no Nameservers and none in /etc/resolv.conf")
		}
	})
	return r.sysServers, r.sysErr
}

// joinTXT joins the strings of a TXT record with nothing between them (RFC 8461
// §3.1), undoing the presentation-format escapes that miekg/dns applies when
// it decodes them: \DDD for a byte outside printable ASCII, \X for '"' and '\'.
func joinTXT(parts []string) string {
	var b strings.Builder
	for _, s := range parts {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c != '\\' || i+1 == len(s) {
				b.WriteByte(c)
				continue
			}
			if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
				if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n < 256 {
					b.WriteByte(byte(n))
					i += 3
					continue
				}
			}
			b.WriteByte(s[i+1])
			i++
		}
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ttlOf is a TTL as received, except that one with the top bit set counts as
// zero (RFC 2181 §8).
func ttlOf(ttl uint32) uint32 {
	if ttl >= 1<<31 {
		return 0
	}
	return ttl
}
