package mtasts

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testNS is a name server on 127.0.0.1, UDP and TCP on one port, that answers
// with a handler of the test's and counts the queries it gets.
type testNS struct {
	addr    string
	queries atomic.Int32
}

// startNS starts a name server whose handler returns the answer to a query,
// or nil to send none.
func startNS(t testing.TB, handler func(q *dns.Msg) *dns.Msg) *testNS {
	t.Helper()
	ns := &testNS{}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for try := 0; ; try++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		require.Less(t, try, 50, "no port free for both UDP and TCP")
	}
	ns.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		ns.queries.Add(1)
		if m := handler(q); m != nil {
			w.WriteMsg(m)
		}
	})
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: notify}
	tcp := &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: notify}
	var wg sync.WaitGroup
	wg.Go(func() { udp.ActivateAndServe() })
	wg.Go(func() { tcp.ActivateAndServe() })
	<-started
	<-started
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
		wg.Wait()
	})
	return ns
}

// zone answers from records given in presentation format, as a recursive
// server does: NXDOMAIN for a name that owns nothing, NODATA for one without
// the type asked, and, if follow is set, the CNAME chain followed within the
// answer as far as the records go.
func zone(t testing.TB, follow bool, records ...string) func(q *dns.Msg) *dns.Msg {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		require.NoError(t, err)
		rrs = append(rrs, rr)
	}
	return func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		name, qtype := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
		exists := false
		for hops := 0; hops < 10; hops++ {
			var cname *dns.CNAME
			for _, rr := range rrs {
				h := rr.Header()
				if !strings.EqualFold(h.Name, name) {
					continue
				}
				exists = true
				if h.Rrtype == qtype {
					m.Answer = append(m.Answer, rr)
				} else if c, ok := rr.(*dns.CNAME); ok {
					cname = c
				}
			}
			if cname == nil || len(m.Answer) > 0 {
				break
			}
			m.Answer = append(m.Answer, cname)
			if !follow {
				break
			}
			name = strings.ToLower(cname.Target)
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		if len(m.Answer) == 0 {
			soa, _ := dns.NewRR("example. 60 IN SOA ns.example. host.example. 1 7200 900 1209600 60")
			m.Ns = []dns.RR{soa}
		}
		return m
	}
}

// dropFirst sends no answer to the first datagram of each query (by id and
// question), as when it is lost on the way, and answers the rest with next.
func dropFirst(next func(q *dns.Msg) *dns.Msg) func(q *dns.Msg) *dns.Msg {
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	return func(q *dns.Msg) *dns.Msg {
		key := fmt.Sprint(q.Id, q.Question[0])
		mu.Lock()
		first := !seen[key]
		seen[key] = true
		mu.Unlock()
		if first {
			return nil
		}
		return next(q)
	}
}

// silent never answers.
func silent(*dns.Msg) *dns.Msg { return nil }

// rcode answers every query with code and no records.
func rcode(code int) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q, code)
		return m
	}
}

const stsTXT = `_mta-sts.d.example. 300 IN TXT "v=STSv1; id=1;"`

// A lost datagram costs one retransmission, about a second, not DNSTimeout.
func TestRetransmitLostDatagram(t *testing.T) {
	t.Parallel()
	ns := startNS(t, dropFirst(zone(t, true, stsTXT)))
	r := &Resolver{Nameservers: []string{ns.addr}, DNSTimeout: 20 * time.Second}
	start := time.Now()
	txts, _, err := r.lookupTXT(context.Background(), "_mta-sts.d.example")
	require.NoError(t, err)
	assert.Equal(t, []string{"v=STSv1; id=1;"}, txts)
	assert.Less(t, time.Since(start), 10*time.Second, "answered after DNSTimeout, not after a retransmission")
	assert.Equal(t, int32(2), ns.queries.Load(), "queries")
}

// A server that does not answer is passed over for the next, and asked last
// from then on, by every kind of lookup the Resolver makes.
func TestNameserverHealth(t *testing.T) {
	t.Parallel()
	records := []string{stsTXT, "mta-sts.d.example. 300 IN A 127.0.0.1"}
	for _, first := range []string{"TXT", "IP"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			dead := startNS(t, silent)
			good := startNS(t, zone(t, true, records...))
			r := &Resolver{Nameservers: []string{dead.addr, good.addr}, DNSTimeout: 20 * time.Second}
			ctx := context.Background()
			txt := func() {
				txts, _, err := r.lookupTXT(ctx, "_mta-sts.d.example")
				require.NoError(t, err)
				assert.Equal(t, []string{"v=STSv1; id=1;"}, txts)
			}
			ip := func() {
				addrs, err := r.lookupIP(ctx, "mta-sts.d.example")
				require.NoError(t, err)
				assert.Equal(t, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, addrs)
			}
			lookups := []func(){txt, ip}
			if first == "IP" {
				lookups = []func(){ip, txt}
			}
			start := time.Now()
			lookups[0]()
			assert.Less(t, time.Since(start), 10*time.Second, "the silent server waited for")
			deadQueries := dead.queries.Load()
			assert.NotZero(t, deadQueries, "the first server asked first")
			for _, lookup := range append(lookups, lookups...) {
				before := good.queries.Load()
				lookup()
				assert.Greater(t, good.queries.Load(), before, "the answering server asked")
			}
			assert.Equal(t, deadQueries, dead.queries.Load(), "the silent server asked again")
		})
	}
}

// Servers are asked by health: fewest consecutive failures, then the one
// that answered last, then the order given.
func TestNameserverOrder(t *testing.T) {
	t.Parallel()
	c := newDNSClient([]string{"a:53", "b:53", "c:53"}, nil, time.Second)
	assert.Equal(t, []string{"a:53", "b:53", "c:53"}, c.servers())
	c.record("a:53", false)
	assert.Equal(t, []string{"b:53", "c:53", "a:53"}, c.servers())
	c.record("c:53", true)
	assert.Equal(t, []string{"c:53", "b:53", "a:53"}, c.servers())
	c.record("c:53", false)
	assert.Equal(t, []string{"b:53", "c:53", "a:53"}, c.servers(), "c answered lately, a never")
	c.record("a:53", true)
	assert.Equal(t, []string{"a:53", "b:53", "c:53"}, c.servers())
}

// Servers that refuse are each asked once per question, and the failure
// comes at once.
func TestNameserversRefusing(t *testing.T) {
	t.Parallel()
	refusing := startNS(t, rcode(dns.RcodeRefused))
	failing := startNS(t, rcode(dns.RcodeServerFailure))
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	closedAddr := closed.LocalAddr().String()
	closed.Close() // connection refused
	r := &Resolver{Nameservers: []string{refusing.addr, failing.addr, closedAddr}, DNSTimeout: 20 * time.Second}
	for range 3 {
		start := time.Now()
		_, _, err := r.lookupTXT(context.Background(), "_mta-sts.d.example")
		require.ErrorIs(t, err, ErrDNSTemporary)
		assert.Less(t, time.Since(start), 10*time.Second, "waited for servers that refused")
		assert.ErrorContains(t, err, "REFUSED")
		assert.ErrorContains(t, err, "SERVFAIL")
		assert.ErrorContains(t, err, closedAddr)
	}
	assert.Equal(t, int32(3), refusing.queries.Load(), "queries to the refusing server")
	assert.Equal(t, int32(3), failing.queries.Load(), "queries to the failing server")

	// However many servers refuse, a question sends at most maxAttempts queries.
	var servers []string
	var all []*testNS
	for range maxAttempts + 3 {
		ns := startNS(t, rcode(dns.RcodeRefused))
		all = append(all, ns)
		servers = append(servers, ns.addr)
	}
	r = &Resolver{Nameservers: servers, DNSTimeout: 20 * time.Second}
	_, _, err = r.lookupTXT(context.Background(), "_mta-sts.d.example")
	require.ErrorIs(t, err, ErrDNSTemporary)
	var total int32
	for _, ns := range all {
		total += ns.queries.Load()
	}
	assert.Equal(t, int32(maxAttempts), total, "queries")
}

// A server that never answers costs DNSTimeout, and the error says so.
func TestNameserverSilentTimeout(t *testing.T) {
	t.Parallel()
	dead := startNS(t, silent)
	r := &Resolver{Nameservers: []string{dead.addr}, DNSTimeout: 1500 * time.Millisecond}
	_, _, err := r.lookupTXT(context.Background(), "_mta-sts.d.example")
	require.ErrorIs(t, err, ErrDNSTemporary)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, dead.addr)
	// Sent at 0 and again after 1 s.
	assert.Equal(t, int32(2), dead.queries.Load(), "queries")
}

// A caller that gives up stops the question at once.
func TestExchangeCanceled(t *testing.T) {
	t.Parallel()
	dead := startNS(t, silent)
	r := &Resolver{Nameservers: []string{dead.addr}, DNSTimeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := r.lookupTXT(ctx, "_mta-sts.d.example")
	require.ErrorIs(t, err, ErrDNSTemporary)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 30*time.Second)
	// Its end is not the server's failure.
	assert.Zero(t, r.dnsClient().healthLocked(dead.addr).failures)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func TestResolvConf(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	writeFile(t, path, "# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch example.com\n")

	conf := newResolvConf(path, 0)
	assert.Equal(t, []string{"192.0.2.1:53", "[2001:db8::1]:53"}, conf.nameservers())

	// A change of content, even of the same size, is seen.
	writeFile(t, path, "nameserver 192.0.2.2\nnameserver 2001:db8::1\nsearch example.com\n")
	later := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path, later, later))
	assert.Equal(t, []string{"192.0.2.2:53", "[2001:db8::1]:53"}, conf.nameservers())

	// Missing, or without servers: the defaults; and a file that appears
	// afterwards is read.
	require.NoError(t, os.Remove(path))
	assert.Equal(t, defaultNameservers(), conf.nameservers())
	writeFile(t, path, "search example.com\n")
	assert.Equal(t, defaultNameservers(), conf.nameservers())
	writeFile(t, path, "nameserver 192.0.2.3\n")
	assert.Equal(t, []string{"192.0.2.3:53"}, conf.nameservers())

	// Within the check interval, the file is not looked at.
	slow := newResolvConf(path, time.Hour)
	assert.Equal(t, []string{"192.0.2.3:53"}, slow.nameservers())
	writeFile(t, path, "nameserver 192.0.2.4\nnameserver 192.0.2.5\n")
	assert.Equal(t, []string{"192.0.2.3:53"}, slow.nameservers())

	// A client without Nameservers asks those of the file.
	c := newDNSClient(nil, newResolvConf(filepath.Join(dir, "missing"), resolvConfCheck), time.Second)
	assert.Equal(t, []string{"127.0.0.1:53", "[::1]:53"}, c.servers())
	c = newDNSClient(nil, newResolvConf(path, resolvConfCheck), time.Second)
	assert.Equal(t, []string{"192.0.2.4:53", "192.0.2.5:53"}, c.servers())
	c = newDNSClient([]string{"127.0.0.1:5353"}, nil, time.Second)
	assert.Equal(t, []string{"127.0.0.1:5353"}, c.servers())
}

func TestLookupIP(t *testing.T) {
	t.Parallel()
	records := []string{
		"both.example. 300 IN A 127.0.0.1",
		"both.example. 300 IN A 127.0.0.2",
		"both.example. 300 IN AAAA ::1",
		"v4.example. 300 IN A 127.0.0.1",
		"alias.example. 300 IN CNAME hop.example.",
		"hop.example. 300 IN CNAME both.example.",
		"loop.example. 300 IN CNAME loop2.example.",
		"loop2.example. 300 IN CNAME loop.example.",
		`txtonly.example. 300 IN TXT "v=spf1 -all"`,
	}
	both := []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	for _, follow := range []bool{true, false} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) {
			t.Parallel()
			ns := startNS(t, zone(t, follow, records...))
			r := &Resolver{Nameservers: []string{ns.addr}}
			ctx := context.Background()
			for _, tc := range []struct {
				host string
				want []netip.Addr
			}{
				{"both.example", both},
				{"BOTH.example.", both},
				{"alias.example", both},
				{"v4.example", []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
			} {
				addrs, err := r.lookupIP(ctx, tc.host)
				require.NoError(t, err, tc.host)
				assert.Equal(t, tc.want, addrs, tc.host)
			}
			for _, host := range []string{"nx.example", "txtonly.example"} {
				addrs, err := r.lookupIP(ctx, host)
				assert.Nil(t, addrs, host)
				var derr *net.DNSError
				if assert.ErrorAs(t, err, &derr, host) {
					assert.True(t, derr.IsNotFound, host)
					assert.Equal(t, host, derr.Name)
				}
			}
			_, err := r.lookupIP(ctx, "loop.example")
			var derr *net.DNSError
			if assert.ErrorAs(t, err, &derr) {
				assert.False(t, derr.IsNotFound)
				assert.True(t, derr.IsTemporary)
				assert.ErrorContains(t, err, "CNAME")
			}
		})
	}
}

// One family is enough: the other's failure is ignored.
func TestLookupIPOneFamilyFails(t *testing.T) {
	t.Parallel()
	v4 := zone(t, true, "h.example. 300 IN A 127.0.0.1")
	ns := startNS(t, func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Qtype == dns.TypeAAAA {
			return rcode(dns.RcodeServerFailure)(q)
		}
		return v4(q)
	})
	r := &Resolver{Nameservers: []string{ns.addr}}
	addrs, err := r.lookupIP(context.Background(), "h.example")
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, addrs)
}

// BenchmarkLostDatagram measures a TXT lookup whose first datagram is lost:
// the retransmission after a second answers it.
func BenchmarkLostDatagram(b *testing.B) {
	ns := startNS(b, dropFirst(zone(b, true, stsTXT)))
	r := &Resolver{Nameservers: []string{ns.addr}, DNSTimeout: 20 * time.Second}
	for b.Loop() {
		if _, _, err := r.lookupTXT(context.Background(), "_mta-sts.d.example"); err != nil {
			b.Fatal(err)
		}
	}
}
