package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	c := r.dnsClient()
	return resolveTXT(ctx, name, func(ctx context.Context, qname string) (*dns.Msg, error) {
		return c.exchange(ctx, qname, dns.TypeTXT)
	})
}

// An exchangeFunc sends a query for qname, of a type it knows, and returns the
// answer, which checkReply has accepted, or an error wrapping ErrDNSTemporary.
type exchangeFunc func(ctx context.Context, qname string) (*dns.Msg, error)

// resolveTXT is lookupTXT over any exchange: everything lookupTXT does with
// the answers it gets (CNAME chains within an answer and across queries, TXT
// strings joined, the TTL kept, NXDOMAIN and NODATA with their negative TTL)
// lives here and in resolve, apart from the network, so that FuzzDNSAnswer can
// feed it arbitrary messages. It asks exchange at most maxCNAMEs+1 times.
func resolveTXT(ctx context.Context, name string, exchange exchangeFunc) ([]string, time.Duration, error) {
	rrs, ttl, err := resolve(ctx, name, dns.TypeTXT, exchange)
	var nd *noDataError
	switch {
	case errors.As(err, &nd) && nd.nxdomain:
		return nil, ttl, fmt.Errorf("%w: %s does not exist", ErrNoRecord, name)
	case errors.As(err, &nd):
		return nil, ttl, fmt.Errorf("%w: no TXT records at %s", ErrNoRecord, name)
	case err != nil:
		return nil, 0, err
	}
	txts := make([]string, len(rrs))
	for i, rr := range rrs {
		txts[i] = joinTXT(rr.(*dns.TXT).Txt)
	}
	return txts, ttl, nil
}

// A noDataError says that a name does not exist (NXDOMAIN) or has no records
// of the type asked (NODATA).
type noDataError struct {
	name     string
	qtype    uint16
	nxdomain bool
}

func (e *noDataError) Error() string {
	if e.nxdomain {
		return e.name + " does not exist"
	}
	return "no " + dns.TypeToString[e.qtype] + " records at " + e.name
}

// resolve returns the records of type qtype at name, following CNAMEs within
// an answer and across queries, and the smallest TTL of the records used.
// NXDOMAIN and NODATA give a *noDataError with the negative-caching TTL of the
// zone's SOA (RFC 2308 §5); other failures wrap ErrDNSTemporary. It asks
// exchange at most maxCNAMEs+1 times.
func resolve(ctx context.Context, name string, qtype uint16, exchange exchangeFunc) ([]dns.RR, time.Duration, error) {
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
			return nil, negativeTTL(resp), &noDataError{name: name, qtype: qtype, nxdomain: true}
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
		var rrs []dns.RR
		for _, rr := range resp.Answer {
			if h := rr.Header(); isType(rr, qtype) && h.Class == dns.ClassINET && strings.EqualFold(h.Name, target) {
				rrs = append(rrs, rr)
				ttl = min(ttl, ttlOf(h.Ttl))
			}
		}
		if len(rrs) > 0 {
			return rrs, time.Duration(ttl) * time.Second, nil
		}
		if target == qname {
			return nil, negativeTTL(resp), &noDataError{name: name, qtype: qtype}
		}
		// The answer ended at an alias without resolving it: ask for the target.
		if len(seen) > maxCNAMEs {
			return nil, 0, fmt.Errorf("%w: CNAME chain from %s too long", ErrDNSTemporary, name)
		}
		delete(seen, target)
		qname = target
	}
}

// isType reports whether rr is a record of type qtype, decoded as such.
func isType(rr dns.RR, qtype uint16) bool {
	if rr.Header().Rrtype != qtype {
		return false
	}
	switch rr.(type) {
	case *dns.TXT:
		return qtype == dns.TypeTXT
	case *dns.A:
		return qtype == dns.TypeA
	case *dns.AAAA:
		return qtype == dns.TypeAAAA
	}
	return false
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

// lookupIP returns the IPv6 and IPv4 addresses of host, asking the
// Resolver's name servers for its AAAA and A records at once and following
// CNAMEs. The addresses come IPv6 first, each family in the order of its
// answer. One family is enough: the other's failure is then ignored. Errors
// are *net.DNSError: IsNotFound when the name does not exist or has neither
// kind of record, IsTimeout when no answer came in time.
func (r *Resolver) lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	c := r.dnsClient()
	qtypes := [2]uint16{dns.TypeAAAA, dns.TypeA}
	var (
		rrs  [2][]dns.RR
		errs [2]error
		wg   sync.WaitGroup
	)
	for i, qtype := range qtypes {
		wg.Go(func() {
			rrs[i], _, errs[i] = resolve(ctx, host, qtype, func(ctx context.Context, qname string) (*dns.Msg, error) {
				return c.exchange(ctx, qname, qtype)
			})
		})
	}
	wg.Wait()
	var addrs []netip.Addr
	for _, set := range rrs {
		for _, rr := range set {
			var ip net.IP
			switch rr := rr.(type) {
			case *dns.AAAA:
				ip = rr.AAAA
			case *dns.A:
				ip = rr.A
			}
			a, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			if a = a.Unmap(); !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	var failures joinedErrors // other than NXDOMAIN and NODATA
	for _, err := range errs {
		var nd *noDataError
		if err != nil && !errors.As(err, &nd) {
			failures = append(failures, err)
		}
	}
	if len(failures) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var err error = failures
	if len(failures) == 1 {
		err = failures[0]
	}
	derr := &net.DNSError{Err: err.Error(), Name: host, IsTemporary: true}
	if ctxErr := ctx.Err(); ctxErr != nil {
		derr.UnwrapErr = ctxErr
		derr.IsTimeout = errors.Is(ctxErr, context.DeadlineExceeded)
	} else if errors.Is(err, context.DeadlineExceeded) {
		derr.IsTimeout = true
	}
	return nil, derr
}

// The sending strategy of dnsClient.exchange (RFC 1035 §7.2).
const (
	// retryBase is how long the first query of a question waits for an
	// answer before it is sent again; each later wait is twice the one
	// before. A lost datagram then costs a second, not the whole DNSTimeout.
	retryBase = time.Second
	// maxAttempts bounds the queries sent for one question, to all servers
	// together, retransmissions and servers failing outright included, so
	// that a set of refusing servers is not hammered.
	maxAttempts = 4
	// udpBufSize is the largest UDP answer read: more than the ednsSize
	// advertised, for servers that send a little more than they were told.
	udpBufSize = 4096

	// resolvConfPath is the system's resolver configuration, read when the
	// Resolver has no Nameservers.
	resolvConfPath = "/etc/resolv.conf"
	// resolvConfCheck is how often, at most, resolv.conf is checked for a
	// change: as often as the Go standard library's resolver does.
	resolvConfCheck = 5 * time.Second
)

// defaultNameservers are asked when resolv.conf is missing or lists no
// server, as the Go standard library's resolver does.
func defaultNameservers() []string { return []string{"127.0.0.1:53", "[::1]:53"} }

// dnsClient sends the queries of one Resolver, all of them: the _mta-sts and
// TLSRPT TXT records and the policy host's addresses. It keeps the health of
// each name server, so that a server that stopped answering is learned once
// and asked last from then on.
type dnsClient struct {
	timeout time.Duration // bounds one question, all its queries included
	fixed   []string      // the Resolver's Nameservers, if any
	conf    *resolvConf   // the system's, when fixed is empty

	queries atomic.Uint64 // UDP queries sent, for Stats

	mu     sync.Mutex
	health map[string]*serverHealth // by "host:port"
}

// serverHealth is what is known of one name server.
type serverHealth struct {
	failures    int       // consecutive failures, silence included
	lastSuccess time.Time // when it last gave an acceptable answer
}

// maxFailures caps serverHealth.failures: past it a server is simply bad.
const maxFailures = 1 << 10

// dnsClient returns the Resolver's DNS client, made on first use from
// Nameservers, or else from the system's configuration.
func (r *Resolver) dnsClient() *dnsClient {
	r.dnsOnce.Do(func() {
		var conf *resolvConf
		if len(r.Nameservers) == 0 {
			conf = newResolvConf(resolvConfPath, resolvConfCheck)
		}
		r.dnsc = newDNSClient(r.Nameservers, conf, r.dnsTimeout())
	})
	return r.dnsc
}

// newDNSClient returns a client that asks nameservers ("host:port") or, if
// there are none, those that conf lists. timeout bounds each question.
func newDNSClient(nameservers []string, conf *resolvConf, timeout time.Duration) *dnsClient {
	return &dnsClient{
		timeout: timeout,
		fixed:   slices.Clone(nameservers),
		conf:    conf,
		health:  map[string]*serverHealth{},
	}
}

// servers returns the name servers to ask, the healthiest first: fewest
// consecutive failures, then the one that answered last, then the order of
// the configuration.
func (c *dnsClient) servers() []string {
	var servers []string
	if len(c.fixed) > 0 {
		servers = slices.Clone(c.fixed)
	} else {
		servers = c.conf.nameservers()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	slices.SortStableFunc(servers, func(a, b string) int {
		ha, hb := c.healthLocked(a), c.healthLocked(b)
		if ha.failures != hb.failures {
			return ha.failures - hb.failures
		}
		return hb.lastSuccess.Compare(ha.lastSuccess)
	})
	return servers
}

func (c *dnsClient) healthLocked(server string) serverHealth {
	if h := c.health[server]; h != nil {
		return *h
	}
	return serverHealth{}
}

// record notes that server answered acceptably (ok) or failed: it failed
// outright, or it did not answer within the time it was given.
func (c *dnsClient) record(server string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health[server]
	if h == nil {
		h = &serverHealth{}
		c.health[server] = h
	}
	if ok {
		h.failures, h.lastSuccess = 0, time.Now()
	} else if h.failures < maxFailures {
		h.failures++
	}
}

// An attempt is one query to one server, over UDP and, if the answer is
// truncated, again over TCP.
type attempt struct {
	server   string
	resp     *dns.Msg // the accepted answer
	err      error    // or why there is none, naming the server
	canceled bool     // err is the query's end, not the server's failure
	ignored  error    // the last datagram ignored as no answer, if any
	blamed   bool     // the server's silence has been recorded against it
	done     bool
}

// exchange asks the name servers for the records of type qtype at qname and
// returns the first acceptable answer (checkReply), or an error wrapping
// ErrDNSTemporary. The query goes to the healthiest server over UDP with
// EDNS0, and over TCP to the same server when the answer is truncated. With no
// answer after retryBase it is sent again, to the next server if there is
// one, then again after twice as long, and so on, the earlier queries still
// waiting for their answers. A server that fails outright (a code other than
// NOERROR and NXDOMAIN, a refused connection, a TCP failure) is not asked
// again for this question, and the next query goes out at once. At most
// maxAttempts queries are sent; the whole takes at most the client's
// timeout, and stops as soon as ctx is done.
func (c *dnsClient) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	what := dns.TypeToString[qtype] + " " + qname
	servers := c.servers()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.SetEdns0(ednsSize, false)
	query, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDNSTemporary, what, err)
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	var wg sync.WaitGroup
	// Every query still out ends with ctx, and is waited for.
	defer wg.Wait()
	defer cancel()

	type result struct {
		i int
		attempt
	}
	results := make(chan result, maxAttempts)
	attempts := make([]*attempt, 0, maxAttempts)
	failed := map[string]bool{} // servers not to ask again
	next, pending := 0, 0
	// pick chooses the server of the next query, if one may be sent.
	pick := func() (int, bool) {
		if len(attempts) == maxAttempts || ctx.Err() != nil {
			return 0, false
		}
		for range servers {
			server := servers[next]
			next = (next + 1) % len(servers)
			if !failed[server] {
				attempts = append(attempts, &attempt{server: server})
				return len(attempts) - 1, true
			}
		}
		return 0, false
	}
	// wait sends query i from a goroutine of its own, or goes on waiting
	// for its answer there if it has been sent as uq.
	wait := func(i int, uq *udpQuery) {
		pending++
		server := attempts[i].server
		wg.Go(func() { results <- result{i, c.ask(ctx, server, m, query, uq)} })
	}
	send := func() bool {
		i, ok := pick()
		if ok {
			wait(i, nil)
		}
		return ok
	}
	// settle records the outcome of query i, and reports whether it answers.
	settle := func(i int, res attempt) bool {
		a := attempts[i]
		a.resp, a.err, a.canceled, a.ignored, a.done = res.resp, res.err, res.canceled, res.ignored, true
		switch {
		case a.err == nil:
			c.record(a.server, true)
			return true
		case a.canceled:
		default:
			if !a.blamed {
				c.record(a.server, false)
			}
			failed[a.server] = true
		}
		return false
	}
	// blame notes that query i has had its time without an answer.
	blame := func(i int) {
		if a := attempts[i]; !a.done && !a.blamed {
			a.blamed = true
			c.record(a.server, false)
		}
	}

	// The first query is waited for here, for up to retryBase: most questions
	// end with its answer, and then need no other goroutine.
	delay := retryBase
	first, _ := pick()
	res, uq := c.askFirst(ctx, attempts[first].server, m, query, time.Now().Add(delay))
	switch {
	case uq != nil:
		// No answer yet: it may still come, to a goroutine of its own.
		wait(first, uq)
		blame(first)
		delay *= 2
		send()
	case settle(first, res):
		return res.resp, nil
	case !res.canceled:
		send()
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for pending > 0 {
		select {
		case res := <-results:
			pending--
			if settle(res.i, res.attempt) {
				return res.resp, nil
			}
			if !res.canceled && send() {
				timer.Reset(delay)
			}
		case <-timer.C:
			// The latest query has had its time: blame its server, and
			// send again.
			blame(len(attempts) - 1)
			delay *= 2
			if send() {
				timer.Reset(delay)
			}
		case <-ctx.Done():
			pending = 0
		}
	}

	// No answer: every server failed, or time ran out.
	cancel()
	wg.Wait()
	for len(results) > 0 {
		res := <-results
		a := attempts[res.i]
		a.err, a.canceled, a.ignored, a.done = res.err, res.canceled, res.ignored, true
	}
	var errs joinedErrors
	var silent []string // servers that sent no answer in time
	for _, a := range attempts {
		if a.done && !a.canceled {
			errs = append(errs, a.err) // it failed outright
			continue
		}
		if a.ignored != nil {
			errs = append(errs, fmt.Errorf("%s: ignored %w", a.server, a.ignored))
		}
		if parent.Err() == nil && !a.blamed {
			a.blamed = true
			c.record(a.server, false)
		}
		if !slices.Contains(silent, a.server) {
			silent = append(silent, a.server)
		}
	}
	if err := parent.Err(); err != nil {
		errs = append(errs, err)
	} else if len(silent) > 0 {
		errs = append(errs, fmt.Errorf("no answer within %v from %s: %w", c.timeout, strings.Join(silent, ", "), context.DeadlineExceeded))
	}
	return nil, fmt.Errorf("%w: %s: %w", ErrDNSTemporary, what, errs)
}

// askFirst sends m, packed as query, to server and waits for the answer
// until then. It returns the answer it accepts or why there is none, or, if
// the wait ran out first, the query, still waiting for its answer.
func (c *dnsClient) askFirst(ctx context.Context, server string, m *dns.Msg, query []byte, until time.Time) (attempt, *udpQuery) {
	c.queries.Add(1)
	uq, err := sendUDP(ctx, server, query)
	if err != nil {
		return c.finish(ctx, server, m, nil, nil, err), nil
	}
	resp, err := uq.read(ctx, m, until)
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		return attempt{}, uq
	}
	uq.close()
	return c.finish(ctx, server, m, resp, uq.ignored, err), nil
}

// ask sends m, packed as query, to server, unless uq says it has been sent
// already, and returns the answer it accepts, or why there is none.
func (c *dnsClient) ask(ctx context.Context, server string, m *dns.Msg, query []byte, uq *udpQuery) attempt {
	if uq == nil {
		var err error
		c.queries.Add(1)
		if uq, err = sendUDP(ctx, server, query); err != nil {
			return c.finish(ctx, server, m, nil, nil, err)
		}
	}
	resp, err := uq.read(ctx, m, time.Time{})
	uq.close()
	return c.finish(ctx, server, m, resp, uq.ignored, err)
}

// finish takes the outcome of a UDP query to server: it asks again over TCP
// if the answer is truncated, and checks the answer.
func (c *dnsClient) finish(ctx context.Context, server string, m, resp *dns.Msg, ignored, err error) attempt {
	a := attempt{server: server, ignored: ignored}
	if err == nil && resp.Truncated {
		// Timeout as well as ctx: without it the client library holds each
		// read to its own default of two seconds.
		tcp := &dns.Client{Net: "tcp", Timeout: c.timeout}
		resp, err = exchangeConn(ctx, tcp, m, server)
	}
	if err == nil {
		err = checkReply(m, resp)
	}
	if err != nil {
		a.err = fmt.Errorf("%s: %w", server, err)
		// The TCP client applies ctx's deadline itself, and may see it
		// pass before ctx does.
		deadline, ok := ctx.Deadline()
		a.canceled = ctx.Err() != nil || ok && !time.Now().Before(deadline)
		return a
	}
	a.resp = resp
	return a
}

// A udpQuery is a query sent over UDP from a socket of its own, waiting for
// its answer.
type udpQuery struct {
	conn    net.Conn
	stop    func() bool
	ignored error // the last datagram ignored as no answer, if any
}

// sendUDP sends query to server over UDP. The socket's deadline is set to
// now once ctx is done, so that a read ends then.
func sendUDP(ctx context.Context, server string, query []byte) (*udpQuery, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	uq := &udpQuery{conn: conn}
	uq.stop = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	if _, err := conn.Write(query); err != nil {
		uq.close()
		return nil, err
	}
	return uq, nil
}

func (uq *udpQuery) close() {
	uq.stop()
	uq.conn.Close()
}

// read returns the first datagram that answers m (matchReply), waiting until
// ctx is done or until then, if not zero. Those that do not answer m
// (malformed, another id or question: late, misdirected or forged) are
// ignored, and the wait goes on; the last of them is kept as uq.ignored.
func (uq *udpQuery) read(ctx context.Context, m *dns.Msg, until time.Time) (*dns.Msg, error) {
	uq.conn.SetReadDeadline(until)
	if ctx.Err() != nil {
		// Done before the deadline was set: do not wait.
		uq.conn.SetDeadline(time.Now())
	}
	buf := make([]byte, udpBufSize)
	for {
		n, err := uq.conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, err
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(buf[:n]); err != nil {
			uq.ignored = fmt.Errorf("a malformed answer: %w", err)
			continue
		}
		if err := matchReply(m, resp); err != nil {
			uq.ignored = err
			continue
		}
		return resp, nil
	}
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

// matchReply reports whether resp is a response to the query m: m's id, and
// m's one question.
func matchReply(m, resp *dns.Msg) error {
	q := m.Question[0]
	switch {
	case !resp.Response || resp.Id != m.Id:
		return errors.New("not a response to the query")
	case len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Name) ||
		resp.Question[0].Qtype != q.Qtype || resp.Question[0].Qclass != q.Qclass:
		return errors.New("answer for another question")
	}
	return nil
}

// checkReply accepts resp as the answer to the query m: a response to it
// (matchReply) with NOERROR or NXDOMAIN, the two codes that say something
// about the name; any other code means asking elsewhere or later.
func checkReply(m, resp *dns.Msg) error {
	if err := matchReply(m, resp); err != nil {
		return err
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return errors.New(dns.RcodeToString[resp.Rcode])
	}
	return nil
}

// joinedErrors reads as its errors joined by "; ", and unwraps to them all.
type joinedErrors []error

func (e joinedErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e joinedErrors) Unwrap() []error { return e }

// resolvConf is the system's resolver configuration, re-read when the file
// changes, so that neither a change nor an error sticks for the life of the
// process.
type resolvConf struct {
	path  string
	every time.Duration // how often, at most, the file is checked

	mu      sync.Mutex
	loaded  bool
	checked time.Time // when the file was last looked at
	modTime time.Time // and what it looked like then
	size    int64
	servers []string
}

// newResolvConf returns the configuration in the file at path, in the format
// of resolv.conf(5), checked for changes at most once every so often.
func newResolvConf(path string, every time.Duration) *resolvConf {
	return &resolvConf{path: path, every: every}
}

// nameservers returns the name servers of the file, as "host:port", or
// defaultNameservers when the file is missing, unreadable or lists none.
func (c *resolvConf) nameservers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.loaded && now.Sub(c.checked) < c.every {
		return slices.Clone(c.servers)
	}
	c.checked = now
	modTime, size := time.Time{}, int64(-1)
	if fi, err := os.Stat(c.path); err == nil {
		modTime, size = fi.ModTime(), fi.Size()
	}
	if !c.loaded || !modTime.Equal(c.modTime) || size != c.size {
		c.loaded, c.modTime, c.size = true, modTime, size
		c.servers = readResolvConf(c.path)
	}
	return slices.Clone(c.servers)
}

func readResolvConf(path string) []string {
	conf, err := dns.ClientConfigFromFile(path)
	if err != nil || len(conf.Servers) == 0 {
		return defaultNameservers()
	}
	servers := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		servers[i] = net.JoinHostPort(s, conf.Port)
	}
	return servers
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
