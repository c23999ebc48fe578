package rediscache_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/seedc2a895ea/mtasts/rediscache"
)

// benchDomains is how many domains Redis holds in the benchmarks: far more
// than the Resolver's MaxEntries, as in a fleet whose members each keep in
// memory only the domains they wrote to lately.
const benchDomains = 20000

// benchFleet is a fleet whose Redis holds a policy for each of benchDomains
// domains, and whose DNS publishes each one's record under the id stored, so
// that a Lookup that misses memory reads the policy from Redis, asks DNS, and
// fetches nothing.
func benchFleet(b *testing.B) (*fleet, []string) {
	b.Helper()
	f := newFleet(b)
	rc := f.redis.Client()
	ctx := context.Background()
	domains := make([]string, benchDomains)
	now := time.Now()
	pipe := rc.Pipeline()
	for i := range domains {
		d := fmt.Sprintf("d%05d.example", i)
		domains[i] = d
		f.SetRecord(d, "v=STSv1; id=1;")
		pipe.Set(ctx, "mtasts:policy:"+d, entry(d, "1", now, 86400), time.Hour)
		if pipe.Len() == 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(domains), func(i, j int) { domains[i], domains[j] = domains[j], domains[i] })
	return f, domains
}

// reportPercentiles reports the 50th and 99th percentiles of took.
func reportPercentiles(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkLookupFromRedis is a Lookup that misses memory and finds the
// policy in Redis: a Resolver keeping 1000 domains in memory looks up the
// 20,000 that Redis holds, in turn. Its cost is one GET to Redis, then the
// TXT query to DNS (the fake one on loopback) that says the policy has not
// changed: a Lookup waits for both.
func BenchmarkLookupFromRedis(b *testing.B) {
	f, domains := benchFleet(b)
	r := f.member()
	r.MaxEntries = 1000
	ctx := context.Background()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		p, err := r.Lookup(ctx, domains[i%len(domains)])
		took = append(took, time.Since(start))
		if err != nil || p == nil {
			b.Fatalf("Lookup: %v, %v", p, err)
		}
	}
	b.StopTimer()
	st := r.Stats()
	if st.Fetches != 0 {
		b.Fatalf("%d fetches: the policies were not taken from Redis", st.Fetches)
	}
	reportPercentiles(b, took)
	b.ReportMetric(100*float64(st.FromMemory)/float64(st.Lookups), "%from-memory")
	if errs := f.errs.list(); len(errs) > 0 {
		b.Fatalf("failures: %v", errs[0])
	}
}

// BenchmarkGet is one Cache.Get: a round trip to Redis on loopback, the
// part of a memory miss that Redis costs.
func BenchmarkGet(b *testing.B) {
	f, domains := benchFleet(b)
	c := rediscache.New(f.redis.Client(), nil)
	ctx := context.Background()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		_, err := c.Get(ctx, domains[i%len(domains)])
		took = append(took, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportPercentiles(b, took)
}

// BenchmarkHeapPerEntry measures what a Resolver holds in heap per domain
// it keeps in memory: the live heap with the Resolver, after it looked up
// every domain Redis holds (b.N Lookups, at least one round of the 20,000
// domains), less the live heap once it is dropped, divided by the domains it
// keeps, which MaxEntries bounds. With MaxEntries 1000 the Resolver's heap
// stays about that, however many domains the fleet's Redis holds; the run
// without a bound shows what each domain costs when all are kept.
func BenchmarkHeapPerEntry(b *testing.B) {
	for _, limit := range []int{1000, -1} {
		b.Run(fmt.Sprintf("MaxEntries=%d", limit), func(b *testing.B) {
			f, domains := benchFleet(b)
			r := f.member()
			r.MaxEntries = limit
			ctx := context.Background()
			b.ResetTimer()
			for i := range max(b.N, len(domains)) {
				if _, err := r.Lookup(ctx, domains[i%len(domains)]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			f.ResetCounters() // the fake DNS's query log is not the Resolver's
			entries := r.Stats().Entries
			with := heap()
			runtime.KeepAlive(r)
			r = nil
			held := with - heap()
			b.ReportMetric(float64(held)/float64(entries), "heap-B/entry")
			b.ReportMetric(float64(entries), "entries")
			b.ReportMetric(float64(held)/(1<<20), "heap-MiB")
		})
	}
}

// heap is the live heap, after a collection.
func heap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
