package mtasts_test

import (
	"context"
	"sync"
	"testing"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// BenchmarkLookupCached measures the steady state a sender lives in: a cached
// policy, a TXT answer within its TTL, Lookup then Validate. "realclock" is
// the zero Resolver's clock (Now nil); "setclock" calls a caller's Now, here a
// cheap one, on every Lookup.
func BenchmarkLookupCached(b *testing.B) {
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("fabrikam.com", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmx: *.backup.fabrikam.com\nmax_age: 86400\n")
	clock := newClock()
	for _, bc := range []struct {
		name string
		now  func() *mtasts.Resolver
	}{
		{"realclock", func() *mtasts.Resolver { return s.Resolver() }},
		{"setclock", func() *mtasts.Resolver { r := s.Resolver(); r.Now = clock.Now; return r }},
	} {
		r := bc.now()
		ctx := context.Background()
		if p, err := r.Lookup(ctx, "fabrikam.com"); p == nil {
			b.Fatalf("warm-up Lookup: %v", err)
		}
		b.Run(bc.name+"/sequential", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, _ := r.Lookup(ctx, "fabrikam.com")
				if p.Validate("mx.fabrikam.com") != nil {
					b.Fatal("refused")
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p, _ := r.Lookup(ctx, "fabrikam.com")
					if p.Validate("mx.fabrikam.com") != nil {
						b.Fatal("refused")
					}
				}
			})
		})
	}
	if n := s.DNSQueries(); n != 2 {
		b.Errorf("%d DNS queries, want 2 (one per resolver's warm-up)", n)
	}
}

// BenchmarkRWMutexMap is the baseline for BenchmarkLookupCached: a map under a
// sync.RWMutex and one string compare, in the same run.
func BenchmarkRWMutexMap(b *testing.B) {
	var mu sync.RWMutex
	m := map[string][]string{"fabrikam.com": {"mx.fabrikam.com", "*.backup.fabrikam.com"}}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mu.RLock()
			mx := m["fabrikam.com"]
			mu.RUnlock()
			if mx[0] != "mx.fabrikam.com" {
				b.Fatal("refused")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.RLock()
				mx := m["fabrikam.com"]
				mu.RUnlock()
				if mx[0] != "mx.fabrikam.com" {
					b.Fatal("refused")
				}
			}
		})
	})
}
