package mtasts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const fabrikam30Days = "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 2592000\n"

// Run fetches a cached policy again about daily, so that it does not lapse at
// the time its first fetch set: an attacker has to block the policy host for
// the whole of max_age after the last refresh to remove it (RFC 8461 §10.2).
// Without Run, the policy below would lapse on day 30.
func TestRunKeepsPolicyInForce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikam30Days)
	ctx := context.Background()
	first := mustPolicy(t, w.r, "d.example")

	w.clock.Advance(12 * time.Hour)
	mtasts.RefreshOnce(ctx, w.r)
	assert.Equal(t, 1, w.PolicyFetches(), "refreshed before it was due")

	for day := 1; day <= 40; day++ {
		w.clock.Advance(12 * time.Hour)
		mtasts.RefreshOnce(ctx, w.r)
		w.clock.Advance(12 * time.Hour)
		if day == 20 {
			// From now on, an attacker breaks DNS and the policy host.
			w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSServFail)
			w.SetPolicyFault("d.example", mtaststest.PolicyServerError)
		}
		p, err := lookup(t, w.r, "d.example")
		require.NoError(t, err, "day %d", day)
		require.NotNil(t, p, "day %d: the policy lapsed", day)
		assert.Equal(t, mtasts.ModeEnforce, p.Mode)
	}
	p := mustPolicy(t, w.r, "d.example")
	assert.True(t, p.Fetched.After(first.Fetched.Add(19*24*time.Hour)), "last fetched %v, first %v", p.Fetched, first.Fetched)
	assert.GreaterOrEqual(t, w.PolicyFetches(), 20, "about one fetch a day")
	// Each failed refresh was reported, and each waited its five minutes.
	assert.NotEmpty(t, w.fails.list())
	for _, err := range w.fails.list() {
		assert.True(t, errors.Is(err, mtasts.ErrDNSTemporary) || errors.Is(err, mtasts.ErrHTTPStatus), "reported %v", err)
	}
}

// A failed refresh keeps the live policy, is reported, and waits five minutes
// before the same id is fetched again; under mode none it is not reported.
func TestRunFailureKeepsPolicy(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{fabrikamEnforce, fabrikamNone} {
		w := newWorld(t)
		w.Publish("d.example", "1", mode)
		ctx := context.Background()
		mustPolicy(t, w.r, "d.example")
		w.SetPolicyFault("d.example", mtaststest.PolicyServerError)
		w.clock.Advance(13 * time.Hour) // half the max_age of a day
		mtasts.RefreshOnce(ctx, w.r)
		assert.Equal(t, 2, w.PolicyFetches())
		if mode == fabrikamNone {
			assert.Empty(t, w.fails.list(), "a failure under mode none was reported")
		} else {
			require.Len(t, w.fails.list(), 1)
			assert.ErrorIs(t, w.fails.list()[0], mtasts.ErrHTTPStatus)
		}
		p := mustPolicy(t, w.r, "d.example")
		assert.Equal(t, w.clock.Now().Add(-13*time.Hour), p.Fetched, "the live policy stays")

		mtasts.RefreshOnce(ctx, w.r)
		w.clock.Advance(4 * time.Minute)
		mtasts.RefreshOnce(ctx, w.r)
		assert.Equal(t, 2, w.PolicyFetches(), "fetched again within five minutes")
		w.clock.Advance(time.Minute)
		w.SetPolicyFault("d.example", mtaststest.PolicyOK)
		mtasts.RefreshOnce(ctx, w.r)
		assert.Equal(t, 3, w.PolicyFetches())
		assert.Equal(t, w.clock.Now(), mustPolicy(t, w.r, "d.example").Fetched, "refreshed")
	}
}

// A restarted process refreshes the policies that only its durable Cache
// holds, and deletes the expired ones.
func TestRunRefreshesCacheOnly(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dir := t.TempDir()
	w.r.Cache = mtasts.DirCache(dir)
	w.Publish("d.example", "1", fabrikamEnforce)
	w.Publish("old.example", "1", "version: STSv1\nmode: enforce\nmx: mx.old.example\nmax_age: 3600\n")
	ctx := context.Background()
	mustPolicy(t, w.r, "d.example")
	mustPolicy(t, w.r, "old.example")
	require.FileExists(t, filepath.Join(dir, "old.example"))

	// Restarted: a new Resolver on the same directory, nothing in memory.
	r2 := w.resolver()
	r2.Cache = mtasts.DirCache(dir)
	w.clock.Advance(13 * time.Hour)
	mtasts.RefreshOnce(ctx, r2)
	assert.Equal(t, 2, w.PolicyFetchesFor("d.example"), "the policy only Cache held was not refreshed")
	assert.Equal(t, 1, w.PolicyFetchesFor("old.example"), "an expired policy was refreshed")
	assert.NoFileExists(t, filepath.Join(dir, "old.example"), "the expired policy is still in Cache")
	ce, ok, err := r2.Inspect(ctx, "d.example")
	require.NoError(t, err)
	require.True(t, ok)
	assert.True(t, ce.InMemory)
	assert.Equal(t, w.clock.Now(), ce.Policy.Fetched)

	// What was refreshed was written through.
	r3 := w.resolver()
	r3.Cache = mtasts.DirCache(dir)
	ce, ok, err = r3.Inspect(ctx, "d.example")
	require.NoError(t, err)
	require.True(t, ok)
	assert.False(t, ce.InMemory)
	assert.Equal(t, w.clock.Now(), ce.Policy.Fetched)
}

// Run returns once its ctx is done, and refreshes on the real clock too: a
// policy whose max_age is two seconds never lapses while Run runs.
func TestRunRealClock(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("d.example", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 2\n")
	r := s.Resolver()
	mustPolicy(t, r, "d.example")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Lookups for three refreshes, or ten seconds on a loaded machine: the
	// policy expires two seconds after each fetch, and must never lapse.
	deadline := time.Now().Add(10 * time.Second)
	for s.PolicyFetches() < 4 && time.Now().Before(deadline) {
		p, err := lookup(t, r, "d.example")
		require.NoError(t, err)
		require.NotNil(t, p, "the policy lapsed while Run ran")
		time.Sleep(50 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, s.PolicyFetches(), 4, "refreshed about every second")
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its ctx was done")
	}
}

// A clock stepped back makes what was stored after its new reading stale:
// the TXT answer is asked again, and a failed fetch's wait ends.
func TestClockSteppedBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	w.Publish("broken.example", "1", fabrikamEnforce)
	w.SetPolicyFault("broken.example", mtaststest.PolicyServerError)
	mustPolicy(t, w.r, "d.example")
	_, err := lookup(t, w.r, "broken.example")
	require.ErrorIs(t, err, mtasts.ErrHTTPStatus)
	require.Equal(t, 2, w.DNSQueries())

	w.clock.Advance(-24 * time.Hour)
	mustPolicy(t, w.r, "d.example")
	assert.Equal(t, 3, w.DNSQueries(), "an answer stored in the clock's future was still fresh")
	_, err = lookup(t, w.r, "broken.example")
	assert.ErrorIs(t, err, mtasts.ErrHTTPStatus)
	assert.Equal(t, 2, w.PolicyFetchesFor("broken.example"), "a failure in the clock's future still held its id back")
}

// A Resolver that is no longer referenced is collected, and with it what it
// cached: nothing it armed (a timer per entry, say) keeps either alive.
func TestDroppedResolverCollected(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("d.example", "1", fabrikamEnforce)
	resolverGone, policyGone := make(chan struct{}), make(chan struct{})
	func() {
		r := s.Resolver() // the real clock
		p := mustPolicy(t, r, "d.example")
		_, err := lookup(t, r, "none.example")
		require.NoError(t, err)
		runtime.AddCleanup(r, func(ch chan struct{}) { close(ch) }, resolverGone)
		runtime.AddCleanup(p, func(ch chan struct{}) { close(ch) }, policyGone)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for _, gone := range []chan struct{}{resolverGone, policyGone} {
		for collected := false; !collected; {
			runtime.GC()
			select {
			case <-gone:
				collected = true
			case <-time.After(10 * time.Millisecond):
			}
			require.True(t, time.Now().Before(deadline), "the dropped Resolver or its policy was not collected")
		}
	}
}

// Sweeps running while first lookups are under way lose none of them, and
// no work is done twice.
func TestSweepDuringLookups(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.resolver()
	r.MinTXTTTL = time.Nanosecond // a sweep on every slow Lookup
	const n = 100
	for i := range n {
		w.Publish(fmt.Sprintf("d%d.example", i), "1", fabrikamEnforce)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			w.clock.Advance(time.Millisecond)
			mustPolicy(t, r, fmt.Sprintf("d%d.example", i))
		})
	}
	wg.Wait()
	assert.Equal(t, n, w.PolicyFetches())
	assert.Equal(t, n, r.Stats().Policies)
}

// Past MaxEntries, a live policy leaves memory and a later Lookup finds it in
// the durable Cache, without the network.
func TestMaxEntriesWithCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.r.MaxEntries = 10
	w.r.Cache = mtasts.DirCache(t.TempDir())
	const n = 30
	for i := range n {
		w.Publish(fmt.Sprintf("d%d.example", i), "1", fabrikamEnforce)
		mustPolicy(t, w.r, fmt.Sprintf("d%d.example", i))
	}
	st := w.r.Stats()
	assert.LessOrEqual(t, st.Entries, 10)
	assert.Equal(t, uint64(n-st.Entries), st.Evictions)
	for i := range n {
		w.SetDNSFault(fmt.Sprintf("_mta-sts.d%d.example", i), mtaststest.DNSServFail)
		w.SetPolicyFault(fmt.Sprintf("d%d.example", i), mtaststest.PolicyServerError)
	}
	for i := range n {
		p := mustPolicy(t, w.r, fmt.Sprintf("d%d.example", i))
		assert.Equal(t, mtasts.ModeEnforce, p.Mode)
	}
	assert.Equal(t, n, w.PolicyFetches(), "an evicted policy was fetched again")
	assert.LessOrEqual(t, w.r.Stats().Entries, 10)
}

// Entries lists what memory and Cache hold; Purge forgets a domain in both,
// with its failure, so that the next Lookup fetches at once.
func TestEntriesAndPurge(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dir := t.TempDir()
	w.r.Cache = mtasts.DirCache(dir)
	ctx := context.Background()
	w.Publish("a.example", "1", fabrikamEnforce)
	w.Publish("broken.example", "1", fabrikamEnforce)
	w.SetPolicyFault("broken.example", mtaststest.PolicyServerError)
	mustPolicy(t, w.r, "a.example")
	_, err := lookup(t, w.r, "broken.example")
	require.ErrorIs(t, err, mtasts.ErrHTTPStatus)
	_, err = lookup(t, w.r, "none.example")
	require.NoError(t, err)
	// A policy only Cache holds, from another process.
	other := w.resolver()
	other.Cache = mtasts.DirCache(dir)
	w.Publish("b.example", "2", fabrikamTesting)
	mustPolicy(t, other, "b.example")

	got := map[string]mtasts.CacheEntry{}
	for ce, err := range w.r.Entries(ctx) {
		require.NoError(t, err)
		got[ce.Domain] = ce
	}
	require.Len(t, got, 4)
	assert.True(t, got["a.example"].InMemory)
	assert.Equal(t, "1", got["a.example"].Policy.ID)
	assert.Nil(t, got["broken.example"].Policy)
	assert.ErrorIs(t, got["broken.example"].Err, mtasts.ErrHTTPStatus)
	assert.ErrorIs(t, got["broken.example"].LastFailure, mtasts.ErrHTTPStatus)
	assert.Equal(t, w.clock.Now().Add(5*time.Minute), got["broken.example"].RetryAt)
	assert.Nil(t, got["none.example"].Policy)
	assert.NoError(t, got["none.example"].Err)
	assert.False(t, got["b.example"].InMemory)
	assert.Equal(t, mtasts.ModeTesting, got["b.example"].Policy.Mode)

	// The domain fixes its policy; the operator purges it.
	w.SetPolicyFault("broken.example", mtaststest.PolicyOK)
	_, err = lookup(t, w.r, "broken.example")
	assert.ErrorIs(t, err, mtasts.ErrHTTPStatus, "within the retry delay")
	require.NoError(t, w.r.Purge(ctx, "Broken.Example."))
	mustPolicy(t, w.r, "broken.example")
	assert.Equal(t, 2, w.PolicyFetchesFor("broken.example"))

	require.NoError(t, w.r.Purge(ctx, "a.example"))
	_, ok, err := w.r.Inspect(ctx, "a.example")
	require.NoError(t, err)
	assert.False(t, ok, "a purged domain is still held")
	assert.NoFileExists(t, filepath.Join(dir, "a.example"))
	_, err = os.Stat(filepath.Join(dir, "b.example"))
	assert.NoError(t, err)
	assert.ErrorIs(t, w.r.Purge(ctx, "[192.0.2.1]"), mtasts.ErrInvalidDomain)
}

// The Logger gets one record per fetch, change, refresh and failure, and
// Stats counts them.
func TestLoggerAndStats(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	w.r.Logger = slog.New(slog.NewJSONHandler(&lockedWriter{&mu, &buf}, nil))
	ctx := context.Background()
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	mustPolicy(t, w.r, "d.example")
	w.Publish("d.example", "2", fabrikamTesting)
	w.clock.Advance(time.Hour)
	mustPolicy(t, w.r, "d.example")
	w.clock.Advance(13 * time.Hour)
	mtasts.RefreshOnce(ctx, w.r)
	w.SetPolicyFault("d.example", mtaststest.PolicyServerError)
	w.clock.Advance(13 * time.Hour)
	mtasts.RefreshOnce(ctx, w.r)

	mu.Lock()
	var msgs []string
	for line := range bytes.Lines(buf.Bytes()) {
		var rec struct{ Msg, Domain, ID, Old_ID string }
		require.NoError(t, json.Unmarshal(line, &rec))
		assert.Equal(t, "d.example", rec.Domain)
		msgs = append(msgs, rec.Msg+" "+rec.ID+rec.Old_ID)
	}
	mu.Unlock()
	assert.Equal(t, []string{
		"mtasts: policy fetched 1",
		"mtasts: policy changed 21",
		"mtasts: policy refreshed 2",
		"mtasts: failure ",
	}, msgs)

	st := w.r.Stats()
	assert.Equal(t, uint64(3), st.Lookups)
	assert.Equal(t, uint64(1), st.FromMemory)
	assert.Equal(t, uint64(4), st.Fetches)
	assert.Equal(t, uint64(1), st.Refreshes)
	assert.Equal(t, uint64(1), st.RefreshFailures)
	assert.Equal(t, uint64(1), st.FetchFailures)
	assert.Equal(t, uint64(w.DNSQueries()), st.DNSQueries)
	assert.Equal(t, 1, st.Entries)
	assert.Equal(t, 1, st.Policies)
	assert.Equal(t, 1, st.FailuresInMemory)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A policy that expired in Cache is deleted from it when a Lookup finds it:
// nothing else would ever remove it.
func TestLookupDeletesExpiredFromCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dir := t.TempDir()
	w.r.Cache = mtasts.DirCache(dir)
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	require.FileExists(t, filepath.Join(dir, "d.example"))

	// A day and more later, the domain has dropped MTA-STS; a restarted
	// process finds the expired policy in Cache.
	w.clock.Advance(25 * time.Hour)
	w.Remove("_mta-sts.d.example")
	r2 := w.resolver()
	r2.Cache = mtasts.DirCache(dir)
	p, err := lookup(t, r2, "d.example")
	require.NoError(t, err)
	assert.Nil(t, p, "an expired policy applied")
	assert.NoFileExists(t, filepath.Join(dir, "d.example"))
}

// First lookups abandoned by their callers leave nothing behind for good:
// their work records its answers, and the sweep forgets them once stale.
func TestAbandonedFirstLookupsSwept(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 50 {
		w.r.Lookup(gone, fmt.Sprintf("d%d.example", i)) // given up before it started
	}
	require.Eventually(t, func() bool { return w.r.Stats().LookupsUnderWay == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 50, w.r.Stats().Entries, "the abandoned work recorded its answers")
	w.clock.Advance(time.Hour)
	// A slow Lookup sweeps its part of memory: a thousand reach every part.
	for i := range 1000 {
		_, err := lookup(t, w.r, fmt.Sprintf("sweep%d.example", i))
		require.NoError(t, err)
	}
	for i := range 50 {
		_, held, err := w.r.Inspect(context.Background(), fmt.Sprintf("d%d.example", i))
		require.NoError(t, err)
		assert.False(t, held, "d%d.example: the stale answer of an abandoned lookup was kept", i)
	}
	assert.Equal(t, 1000, w.r.Stats().Entries)
}
