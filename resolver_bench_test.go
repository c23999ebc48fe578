package mtasts_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// benchDomains is how many domains the cached-path benchmarks hold in memory
// besides the one they look up: a sender's cache holds many, and a map of one
// key would be read without hashing it.
const benchDomains = 10_000

// BenchmarkLookupCached measures the steady state a sender lives in: a cached
// policy, a TXT answer within its TTL, Lookup then Validate, with
// benchDomains other domains cached. "realclock" is the zero Resolver's clock
// (Now nil); "setclock" calls a caller's Now, here a cheap one, on every
// Lookup. "rwmutex" is the baseline, in the same run: the same policies in a
// map under a sync.RWMutex, read and then validated the same way. Target: no
// slower than the baseline, and no allocation.
func BenchmarkLookupCached(b *testing.B) {
	s := mtaststest.NewServer()
	defer s.Close()
	const policy = "version: STSv1\nmode: enforce\nmx: mx.%s\nmx: *.backup.%s\nmax_age: 86400\n"
	domains := []string{"fabrikam.com"}
	for i := range benchDomains {
		domains = append(domains, fmt.Sprintf("shop%06d.com", i))
	}
	for _, d := range domains {
		s.Publish(d, "1", fmt.Sprintf(policy, d, d))
	}
	clock := newClock()
	ctx := context.Background()
	var baseline sync.Map // a map for the baseline, filled from the first Resolver
	run := func(name string, lookup func(string) *mtasts.Policy) {
		b.Run(name+"/sequential", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if lookup("fabrikam.com").Validate("mx.fabrikam.com") != nil {
					b.Fatal("refused")
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if lookup("fabrikam.com").Validate("mx.fabrikam.com") != nil {
						b.Fatal("refused")
					}
				}
			})
		})
	}
	for _, bc := range []struct {
		name string
		now  func() *mtasts.Resolver
	}{
		{"realclock", func() *mtasts.Resolver { return benchResolver(s) }},
		{"setclock", func() *mtasts.Resolver { r := benchResolver(s); r.Now = clock.Now; return r }},
	} {
		r := bc.now()
		warm(b, r, domains, &baseline)
		run(bc.name, func(d string) *mtasts.Policy {
			p, _ := r.Lookup(ctx, d)
			return p
		})
	}

	var mu sync.RWMutex
	m := map[string]*mtasts.Policy{}
	baseline.Range(func(k, v any) bool { m[k.(string)] = v.(*mtasts.Policy); return true })
	run("rwmutex", func(d string) *mtasts.Policy {
		mu.RLock()
		p := m[d]
		mu.RUnlock()
		return p
	})
	if n, want := s.DNSQueries(), 2*len(domains); n != want {
		b.Errorf("%d DNS queries, want %d (one per domain and resolver)", n, want)
	}
}

// warm looks every domain up with r, 16 at a time, and stores the policies
// in into.
func warm(b *testing.B, r *mtasts.Resolver, domains []string, into *sync.Map) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, d := range domains {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p, err := r.Lookup(context.Background(), d)
			if p == nil {
				b.Errorf("warm-up Lookup(%q): %v", d, err)
				return
			}
			into.Store(d, p)
		})
	}
	wg.Wait()
	runtime.GC() // the warm-up's garbage is not the benchmark's
}

// benchResolver is a Resolver on s that fetches as the default client does,
// a connection per fetch, so that warming thousands of domains up leaves no
// idle connection open.
func benchResolver(s *mtaststest.Server) *mtasts.Resolver {
	var d net.Dialer
	return &mtasts.Resolver{
		Nameservers: []string{s.DNSAddr()},
		HTTPClient: mtasts.DefaultClient(func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, s.HTTPSAddr())
		}, s.RootCAs()),
	}
}
