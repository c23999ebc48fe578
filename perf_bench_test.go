package mtasts_test

// Performance against the limit: what a cold Lookup costs next to the work it
// cannot avoid, how concurrent cold Lookups share that work, and whether the
// heap stays steady over a million Lookups. The figures and the commands that
// give them are in FUZZING.md.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// useDefaultClient makes r fetch as a Resolver without an HTTPClient does (a
// connection of its own for each fetch, its limits), but connecting to s and
// trusting s's authority.
func useDefaultClient(r *mtasts.Resolver, s *mtaststest.Server) *mtasts.Resolver {
	r.HTTPClient = mtasts.DefaultClient(func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", s.HTTPSAddr())
	}, s.RootCAs())
	return r
}

// BenchmarkColdLookup measures a Lookup with nothing cached, on loopback,
// next to the sum of the parts it cannot do without, measured in the same
// iteration against the same servers: one TXT exchange with miekg/dns over
// UDP, one TCP connection and TLS 1.3 handshake for the policy host, and one
// HTTP/1.1 GET of the policy on that connection. Each iteration uses a new
// Resolver with the default client (which makes a connection per fetch).
// Target: ratio at most 1.3.
func BenchmarkColdLookup(b *testing.B) {
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("d.example", "1", fabrikamEnforce)
	ctx := context.Background()
	tlsConf := &tls.Config{ServerName: "mta-sts.d.example", RootCAs: s.RootCAs(), MinVersion: tls.VersionTLS13}
	dnsClient := &dns.Client{Net: "udp", UDPSize: 1232}
	query := new(dns.Msg)
	query.SetQuestion("_mta-sts.d.example.", dns.TypeTXT)
	query.SetEdns0(1232, false)
	get := []byte("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.d.example\r\n\r\n")

	parts := func() (dnsT, tlsT, getT time.Duration) {
		t0 := time.Now()
		resp, _, err := dnsClient.ExchangeContext(ctx, query, s.DNSAddr())
		if err != nil || len(resp.Answer) != 1 {
			b.Fatalf("DNS exchange: %v", err)
		}
		t1 := time.Now()
		conn, err := (&tls.Dialer{Config: tlsConf}).DialContext(ctx, "tcp", s.HTTPSAddr())
		if err != nil {
			b.Fatalf("TLS handshake: %v", err)
		}
		defer conn.Close()
		if v := conn.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
			b.Fatalf("TLS version %x", v)
		}
		t2 := time.Now()
		if _, err := conn.Write(get); err != nil {
			b.Fatal(err)
		}
		hr, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			b.Fatalf("GET: %v", err)
		}
		body, err := io.ReadAll(hr.Body)
		if err != nil || string(body) != fabrikamEnforce {
			b.Fatalf("GET: %v, %q", err, body)
		}
		t3 := time.Now()
		return t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)
	}

	var lookupT, dnsT, tlsT, getT []time.Duration
	lookup := func() {
		r := useDefaultClient(&mtasts.Resolver{Nameservers: []string{s.DNSAddr()}}, s)
		start := time.Now()
		p, err := r.Lookup(ctx, "d.example")
		if p == nil {
			b.Fatalf("Lookup: %v", err)
		}
		lookupT = append(lookupT, time.Since(start))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Whichever runs second finds the servers still tidying up after the
		// first one's connection; take turns so that neither side always pays.
		if i%2 == 0 {
			lookup()
		}
		d, t, g := parts()
		dnsT, tlsT, getT = append(dnsT, d), append(tlsT, t), append(getT, g)
		if i%2 == 1 {
			lookup()
		}
	}
	med := func(ds []time.Duration) float64 {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return float64(ds[len(ds)/2])
	}
	sum := med(dnsT) + med(tlsT) + med(getT)
	b.ReportMetric(med(lookupT), "lookup-ns")
	b.ReportMetric(med(dnsT), "dns-ns")
	b.ReportMetric(med(tlsT), "tls-ns")
	b.ReportMetric(med(getT), "get-ns")
	b.ReportMetric(sum, "parts-ns")
	b.ReportMetric(med(lookupT)/sum, "lookup/parts")
}

// thousandCold starts n Lookups of one cold domain at once on a new Resolver
// and returns what they got.
func thousandCold(t testing.TB, s *mtaststest.Server, n int) []*mtasts.Policy {
	r := useDefaultClient(&mtasts.Resolver{Nameservers: []string{s.DNSAddr()}}, s)
	policies := make([]*mtasts.Policy, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := r.Lookup(ctx, "d.example")
			if err != nil {
				t.Errorf("Lookup: %v", err)
			}
			policies[i] = p
		})
	}
	close(start)
	wg.Wait()
	return policies
}

// 1,000 Lookups of one cold domain, all started at once with nothing holding
// the servers back, share exactly one DNS question and one fetch.
func TestThousandConcurrentColdLookups(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("d.example", "1", fabrikamEnforce)
	policies := thousandCold(t, s, 1000)
	require.NotNil(t, policies[0])
	for _, p := range policies {
		assert.Same(t, policies[0], p)
	}
	// One DNS question, whose query is sent again if a loaded machine leaves
	// it a second unanswered.
	assert.Contains(t, []int{1, 2}, s.DNSQueries(), "DNS queries")
	assert.Equal(t, 1, s.PolicyFetches(), "policy fetches")
}

// BenchmarkConcurrentColdLookups measures the wall time of many Lookups
// started at once on a new Resolver with nothing cached:
//
//   - 1000x1: 1,000 Lookups of one domain (one query and one fetch for all);
//   - 10000x1000: 10,000 Lookups over 1,000 domains, ten for each, with a
//     fresh connection for each policy host. peak-heap-B is the most the
//     heap in use grew, sampled every millisecond, above what it held after
//     a collection just before the Lookups started.
func BenchmarkConcurrentColdLookups(b *testing.B) {
	b.Run("1000x1", func(b *testing.B) {
		s := mtaststest.NewServer()
		defer s.Close()
		s.Publish("d.example", "1", fabrikamEnforce)
		b.ReportAllocs()
		for b.Loop() {
			s.ResetCounters()
			thousandCold(b, s, 1000)
			if q, f := s.DNSQueries(), s.PolicyFetches(); q < 1 || q > 2 || f != 1 {
				b.Fatalf("%d DNS queries and %d fetches, want 1 (or 2, resent after a second) and 1", q, f)
			}
		}
	})

	b.Run("10000x1000", func(b *testing.B) {
		const domains, perDomain = 1000, 10
		s := mtaststest.NewServer()
		defer s.Close()
		names := make([]string, domains)
		for i := range names {
			names[i] = fmt.Sprintf("d%04d.example", i)
			s.SetPolicy(names[i], fabrikamEnforce)
		}
		ns := newBurstDNS(b)
		run := func() {
			r := useDefaultClient(&mtasts.Resolver{Nameservers: []string{ns.addr}}, s)
			start := make(chan struct{})
			var wg sync.WaitGroup
			var failed atomic.Int32
			for i := range domains * perDomain {
				wg.Go(func() {
					<-start
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					if p, err := r.Lookup(ctx, names[i%domains]); p == nil && failed.Add(1) == 1 {
						b.Errorf("Lookup(%q): %v", names[i%domains], err)
					}
				})
			}
			close(start)
			wg.Wait()
		}
		run() // the fake host issues its 1,000 certificates once, untimed

		var peak uint64
		b.ReportAllocs()
		for b.Loop() {
			s.ResetCounters()
			ns.queries.Store(0)
			base, _ := heapAfterGC()
			stop := make(chan struct{})
			sampled := make(chan uint64)
			go func() {
				var most uint64
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					most = max(most, heapInUse())
					select {
					case <-tick.C:
					case <-stop:
						sampled <- most
						return
					}
				}
			}()
			run()
			close(stop)
			if most := <-sampled; most > base {
				peak = max(peak, most-base)
			}
			// One query a domain, and a resend for any that 10,000 Lookups
			// on two cores kept unanswered for a second: a few at most.
			if q, f := int(ns.queries.Load()), s.PolicyFetches(); q < domains || q > domains+domains/100 || f != domains {
				b.Fatalf("%d DNS queries and %d fetches, want %d (and at most 1%% resent) and %d", q, f, domains, domains)
			}
		}
		b.ReportMetric(float64(peak), "peak-heap-B")
	})
}

// burstDNS is a name server for a burst of a thousand queries at once: the
// fake world's server reads its UDP socket with the system's default buffer,
// which holds about 270 queries, and drops the rest. It answers every TXT
// query for _mta-sts.<domain> with the record "v=STSv1; id=1;".
type burstDNS struct {
	addr    string
	queries atomic.Int32
}

func newBurstDNS(b *testing.B) *burstDNS {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if err := pc.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		b.Fatal(err)
	}
	ns := &burstDNS{addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			ns.queries.Add(1)
			m := new(dns.Msg)
			m.SetReply(q)
			m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT,
				Class: dns.ClassINET, Ttl: 300}, Txt: []string{"v=STSv1; id=1;"}}}
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	b.Cleanup(func() { srv.Shutdown() })
	return ns
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// heapAfterGC returns the heap's spans in use and the bytes of live objects,
// after a collection.
func heapAfterGC() (inuse, live uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.HeapAlloc
}

// BenchmarkSoak does b.N Lookups over 10,000 domains, one after another in
// round robin, on one Resolver: four in five domains publish a policy, the
// fifth have no record. Every 100,000 Lookups the clock moves on past the
// TXT TTL, so each domain is asked again (an unchanged id: no fetch). After
// a collection at those round boundaries, it reports the heap in use (spans)
// and the live bytes after warming every domain, halfway, and at the end; the
// end must not exceed the middle by more than a quarter. The fake world's
// certificates for the 8,000 policy hosts are part of the heap. Run it with
// -benchtime 1000000x for the million Lookups of the report.
func BenchmarkSoak(b *testing.B) {
	const domains, round = 10000, 100000
	s := mtaststest.NewServer()
	defer s.Close()
	names := make([]string, domains)
	for i := range names {
		names[i] = fmt.Sprintf("s%05d.example", i)
		if i%5 != 4 {
			s.Publish(names[i], "1", fabrikamEnforce)
		}
	}
	clock := newClock()
	r := useDefaultClient(&mtasts.Resolver{Nameservers: []string{s.DNSAddr()}, Now: clock.Now}, s)
	ctx := context.Background()

	// Warm every domain, 32 at a time, untimed.
	var wg sync.WaitGroup
	work := make(chan string)
	for range 32 {
		wg.Go(func() {
			for d := range work {
				if _, err := r.Lookup(ctx, d); err != nil {
					b.Errorf("Lookup(%q): %v", d, err)
				}
			}
		})
	}
	for _, d := range names {
		work <- d
	}
	close(work)
	wg.Wait()
	fetches, queries := s.PolicyFetches(), s.DNSQueries()
	s.ResetCounters() // the fake server logs every query: keep that out of the heap

	type sample struct{ inuse, live uint64 }
	var heaps []sample // after warming, then at each round's end
	inuse, live := heapAfterGC()
	heaps = append(heaps, sample{inuse, live})
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		d := names[i%domains]
		p, err := r.Lookup(ctx, d)
		if err != nil || (p == nil) != (i%domains%5 == 4) {
			b.Fatalf("Lookup(%q) = %v, %v", d, p, err)
		}
		i++
		if i%round == 0 {
			b.StopTimer()
			fetches, queries = fetches+s.PolicyFetches(), queries+s.DNSQueries()
			s.ResetCounters()
			inuse, live := heapAfterGC()
			heaps = append(heaps, sample{inuse, live})
			clock.Advance(mtaststest.DefaultTTL*time.Second + time.Second)
			b.StartTimer()
		}
	}
	b.StopTimer()
	start, mid, end := heaps[0], heaps[len(heaps)/2], heaps[len(heaps)-1]
	b.Logf("live heap after warming and after each round of %d Lookups: %v", round, heaps)
	b.ReportMetric(float64(start.inuse), "inuse-start-B")
	b.ReportMetric(float64(mid.inuse), "inuse-mid-B")
	b.ReportMetric(float64(end.inuse), "inuse-end-B")
	b.ReportMetric(float64(start.live), "live-start-B")
	b.ReportMetric(float64(mid.live), "live-mid-B")
	b.ReportMetric(float64(end.live), "live-end-B")
	b.ReportMetric(float64(queries+s.DNSQueries()), "dns-queries")
	if n := fetches + s.PolicyFetches(); n != domains*4/5 {
		b.Errorf("%d fetches, want %d: one per domain with a policy, none during the soak (the ids did not change)", n, domains*4/5)
	}
	if len(heaps) >= 3 && (float64(end.inuse) > 1.25*float64(mid.inuse) || float64(end.live) > 1.25*float64(mid.live)) {
		b.Errorf("heap grew from %+v halfway to %+v at the end", mid, end)
	}
}
