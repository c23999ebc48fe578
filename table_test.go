package mtasts

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testPolicy is a typical policy of domain: an id, enforce, two mx patterns.
func testPolicy(domain string, fetched time.Time) *Policy {
	return &Policy{
		Mode:    ModeEnforce,
		MaxAge:  7 * 24 * time.Hour,
		MX:      []string{"mx1." + domain, "*.mx." + domain},
		Domain:  domain,
		ID:      "20261202T0000",
		Fetched: fetched,
	}
}

// store puts e into r's memory as update does.
func store(r *Resolver, e *entry) {
	m := r.memCache()
	h := m.hash(e.key())
	sh := m.shardOf(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.put(h, e, m.perShard, r.wall()); n > 0 {
		r.stats.evictions.Add(uint64(n))
	}
}

func inMemory(r *Resolver, key string) bool { return r.memCache().get(key) != nil }

// The table finds what it holds across resizes and deletions, and a policy
// entry keeps the policy's values.
func TestTable(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	r := &Resolver{Now: func() time.Time { return now }, MaxEntries: -1}
	const n = 5000
	for i := range n {
		d := fmt.Sprintf("d%d.example", i)
		if i%2 == 0 {
			store(r, &newPolicyEntry(testPolicy(d, now), 1, 2).entry)
		} else {
			store(r, &newNegEntry(d, nil, 1, 2).entry)
		}
	}
	for i := range n {
		d := fmt.Sprintf("d%d.example", i)
		e := r.memCache().get(d)
		require.NotNil(t, e, d)
		assert.Equal(t, d, e.key())
		if i%2 == 0 {
			p, err := e.result()
			require.NoError(t, err)
			assert.Equal(t, testPolicy(d, now), p)
		}
	}
	for i := 0; i < n; i += 3 {
		d := fmt.Sprintf("d%d.example", i)
		m := r.memCache()
		h := m.hash(d)
		sh := m.shardOf(h)
		sh.mu.Lock()
		assert.True(t, sh.remove(h, d))
		sh.mu.Unlock()
	}
	for i := range n {
		assert.Equal(t, i%3 != 0, inMemory(r, fmt.Sprintf("d%d.example", i)), "d%d.example", i)
	}
	s := r.Stats()
	assert.Equal(t, n-(n+2)/3, s.Entries)
	assert.Equal(t, n/2-(n+5)/6, s.Policies)
}

// A policy entry keeps nothing of what it was made from alive: its strings
// are its own.
func TestPolicyEntryCopiesStrings(t *testing.T) {
	t.Parallel()
	body := []byte("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: mx2.example.com\nmx: mx3.example.com\nmax_age: 86400\nx-ext: value\n")
	p, err := ParsePolicy(body)
	require.NoError(t, err)
	p.Domain, p.ID = "example.com", "1"
	pe := newPolicyEntry(p, 0, 1)
	assert.Equal(t, *p, pe.p)
	assert.Equal(t, ModeEnforce, pe.p.Mode)
	// Every string lies in one buffer of the entry's own, the domain within
	// an mx pattern it ends, and none in the body.
	all := append([]string{pe.p.Domain, pe.p.ID, pe.p.Extensions[0].Key, pe.p.Extensions[0].Value}, pe.p.MX...)
	size := len("mx1.example.com")*3 + len("1") + len("x-ext") + len("value")
	base := uintptr(unsafe.Pointer(unsafe.StringData(pe.p.MX[0])))
	bodyAt := uintptr(unsafe.Pointer(&body[0]))
	for _, str := range all {
		at := uintptr(unsafe.Pointer(unsafe.StringData(str)))
		assert.True(t, at >= base && at+uintptr(len(str)) <= base+uintptr(size), "%q outside the entry's buffer", str)
		assert.False(t, at >= bodyAt && at < bodyAt+uintptr(len(body)), "%q points into the body", str)
	}
}

// The sweep forgets what holds nothing worth keeping, and keeps the rest.
func TestSweep(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := &Resolver{Now: func() time.Time { return now }}
	ns := now.UnixNano()
	live := testPolicy("live.example", now.Add(-time.Minute))
	expired := testPolicy("expired.example", now.Add(-8*24*time.Hour))
	past, future := ns-1, ns+int64(time.Minute)
	cases := map[string]struct {
		e    *entry
		fail *failure
		call bool
		keep bool
	}{
		"fresh.negative":   {e: &newNegEntry("fresh.negative", nil, past, future).entry, keep: true},
		"stale.negative":   {e: &newNegEntry("stale.negative", nil, past-1, past).entry},
		"live.example":     {e: &newPolicyEntry(live, past-1, past).entry, keep: true},
		"expired.example":  {e: &newPolicyEntry(expired, past-1, past).entry},
		"in.retry":         {e: &newNegEntry("in.retry", errors.New("x"), past-1, past).entry, fail: &failure{id: "1", at: now.Add(-time.Minute), retryAt: now.Add(time.Minute)}, keep: true},
		"retry.over":       {e: &newNegEntry("retry.over", errors.New("x"), past-1, past).entry, fail: &failure{id: "1", at: now.Add(-time.Hour), retryAt: now.Add(-time.Second)}},
		"lookup.under.way": {e: &newNegEntry("lookup.under.way", nil, past-1, past).entry, call: true, keep: true},
	}
	m := r.memCache()
	for name, tc := range cases {
		store(r, tc.e)
		sh := m.shardOf(m.hash(name))
		sh.mu.Lock()
		if tc.fail != nil {
			sh.fails[name] = tc.fail
		}
		if tc.call {
			sh.calls[name] = &call{}
		}
		sh.mu.Unlock()
	}
	sweepAll := func() {
		for i := range m.shards {
			sh := &m.shards[i]
			sh.mu.Lock()
			r.sweepIfDue(sh, r.clock())
			sh.mu.Unlock()
		}
	}
	sweepAll()
	for name, tc := range cases {
		assert.Equal(t, tc.keep, inMemory(r, name), "after the sweep, %s kept", name)
	}

	// Not again within MinTXTTTL; at once if the clock steps back.
	store(r, &newNegEntry("later", nil, past-1, past).entry)
	sweepAll()
	assert.True(t, inMemory(r, "later"), "swept twice within MinTXTTTL")
	now = now.Add(-time.Hour)
	sweepAll()
	assert.False(t, inMemory(r, "later"), "not swept after the clock stepped back")
	store(r, &newNegEntry("later", nil, now.UnixNano()-2, now.UnixNano()-1).entry)
	sweepAll()
	assert.True(t, inMemory(r, "later"))
	now = now.Add(DefaultMinTXTTTL)
	sweepAll()
	assert.False(t, inMemory(r, "later"), "not swept once MinTXTTTL had passed")
}

// Past MaxEntries, negative answers and expired policies leave memory before
// live policies do, and entries read lately stay.
func TestEviction(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	r := &Resolver{Now: func() time.Time { return now }, MaxEntries: 100}
	for i := range 50 {
		store(r, &newPolicyEntry(testPolicy(fmt.Sprintf("p%d.example", i), now), 1, 2).entry)
	}
	for i := range 1000 {
		store(r, &newNegEntry(fmt.Sprintf("n%d.example", i), nil, 1, 2).entry)
	}
	s := r.Stats()
	assert.LessOrEqual(t, s.Entries, 100)
	assert.Equal(t, uint64(1000+50-s.Entries), s.Evictions)
	for i := range 50 {
		assert.True(t, inMemory(r, fmt.Sprintf("p%d.example", i)), "live policy p%d.example evicted before negative answers", i)
	}

	// Live policies go too when nothing else is left, those read lately last.
	for i := range 200 {
		inMemory(r, "p0.example") // a read sets its reference bit
		store(r, &newPolicyEntry(testPolicy(fmt.Sprintf("q%d.example", i), now), 1, 2).entry)
	}
	assert.LessOrEqual(t, r.Stats().Entries, 100)
	assert.True(t, inMemory(r, "p0.example"), "the policy read before every insertion was evicted")
}

// BenchmarkHeapPerPolicy measures the heap that a cached policy costs, over
// 1,000,000 domains each with a typical policy (an id, enforce, two mx
// patterns), stored in memory as a Lookup stores a fetched policy. Target: at
// most 256 B per policy. The domains are 14 characters long ("shop000001.com"),
// about the median length of a registered domain; the policy's strings (two
// mx hosts and a 15-character id; the domain is shared with the mx hosts)
// then take 51 bytes, held in a 64-byte block. Strings of 65 to 80 bytes cost
// 16 bytes more.
func BenchmarkHeapPerPolicy(b *testing.B) {
	n := heapBenchDomains
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for b.Loop() {
		r := &Resolver{Now: func() time.Time { return now }}
		// Policies fetched and parsed as Lookup gets them, then released.
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			d := fmt.Sprintf("shop%06d.com", i)
			p, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: mx1." + d + "\nmx: mx2." + d + "\nmax_age: 604800\n"))
			if err != nil {
				b.Fatal(err)
			}
			p.Domain, p.ID, p.Fetched = d, "20261202T000000", now
			store(r, &newPolicyEntry(p, 1, 2).entry)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := r.Stats().Policies; got != n {
			b.Fatalf("%d policies in memory, want %d", got, n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/policy")
		runtime.KeepAlive(r)
	}
}

var heapBenchDomains = 1_000_000
