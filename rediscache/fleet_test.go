package rediscache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

func policyFor(domain string) string {
	return "version: STSv1\nmode: enforce\nmx: mx." + domain + "\nmax_age: 86400\n"
}

// errLog records what the Resolvers of a fleet pass to OnError.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) add(domain string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Errorf("%s: %w", domain, err))
}

func (l *errLog) list() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// any reports whether an error recorded wraps target.
func (l *errLog) any(target error) bool {
	for _, err := range l.list() {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// fleet is a fake MTA-STS world, one redis-server, and the Resolvers of MTAs
// that share it.
type fleet struct {
	*mtaststest.Server
	redis *redisServer
	errs  errLog
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	f := &fleet{Server: mtaststest.NewServer(), redis: startRedis(t)}
	t.Cleanup(f.Close)
	return f
}

// member returns a new Resolver of the fleet, with a Cache of its own (and a
// client of its own) on the fleet's Redis, as a separate MTA would have.
func (f *fleet) member() *mtasts.Resolver {
	r := f.Resolver()
	r.Cache = rediscache.New(f.redis.Client(), nil)
	r.OnError = f.errs.add
	r.DNSTimeout = time.Second
	r.FetchTimeout = 10 * time.Second
	return r
}

func (f *fleet) members(n int) []*mtasts.Resolver {
	rs := make([]*mtasts.Resolver, n)
	for i := range rs {
		rs[i] = f.member()
	}
	return rs
}

func lookup(r *mtasts.Resolver, d string) (*mtasts.Policy, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.Lookup(ctx, d)
}

// all runs f for each Resolver at once.
func all(rs []*mtasts.Resolver, f func(*mtasts.Resolver) (*mtasts.Policy, error)) ([]*mtasts.Policy, []error) {
	ps, errs := make([]*mtasts.Policy, len(rs)), make([]error, len(rs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range rs {
		wg.Go(func() {
			<-start
			ps[i], errs[i] = f(r)
		})
	}
	close(start)
	wg.Wait()
	return ps, errs
}

// A policy one member fetched is read from Redis by another, which does not
// fetch it.
func TestFleetSharesPolicies(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.Publish("d.example", "20240101", policyFor("d.example"))
	r1, r2 := f.member(), f.member()

	p1, err := lookup(r1, "d.example")
	require.NoError(t, err)
	require.NotNil(t, p1)
	require.Equal(t, 1, f.PolicyFetches())

	data, err := f.redis.Client().Get(context.Background(), "mtasts:policy:d.example").Bytes()
	require.NoError(t, err, "the policy is not in Redis")
	stored, err := mtasts.CachedPolicy("d.example", data)
	require.NoError(t, err)
	assert.Equal(t, "20240101", stored.ID)

	p2, err := lookup(r2, "d.example")
	require.NoError(t, err)
	require.NotNil(t, p2)
	assert.Equal(t, "20240101", p2.ID)
	assert.Equal(t, p1.MX, p2.MX)
	assert.True(t, p1.Fetched.Equal(p2.Fetched), "not the copy r1 fetched")
	assert.Equal(t, 1, f.PolicyFetches(), "r2 fetched what Redis held")
	assert.Zero(t, r2.Stats().Fetches)
	assert.ErrorIs(t, p2.Validate("mx.attacker.example"), mtasts.ErrMXNotAllowed)
	assert.Empty(t, f.errs.list())
}

// Sixteen members that need one new policy at once fetch it once: one takes
// the lease, the others read what it wrote. So with a new id for a policy
// they all hold.
func TestFleetFetchesNewIDOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.Publish("n.example", "1", policyFor("n.example"))
	rs := f.members(16)

	ps, errs := all(rs, func(r *mtasts.Resolver) (*mtasts.Policy, error) { return lookup(r, "n.example") })
	for i := range rs {
		require.NoError(t, errs[i], "member %d", i)
		require.NotNil(t, ps[i], "member %d", i)
		assert.Equal(t, "1", ps[i].ID)
	}
	assert.Equal(t, 1, f.PolicyFetchesFor("n.example"), "one fetch for the fleet")

	sharedBefore := uint64(0)
	for _, r := range rs {
		sharedBefore += r.Stats().Shared
	}
	f.Publish("n.example", "2", "version: STSv1\nmode: enforce\nmx: mx2.n.example\nmax_age: 86400\n")
	ps, errs = all(rs, func(r *mtasts.Resolver) (*mtasts.Policy, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.Refresh(ctx, "n.example")
	})
	for i := range rs {
		require.NoError(t, errs[i], "member %d", i)
		require.NotNil(t, ps[i], "member %d", i)
		assert.Equal(t, "2", ps[i].ID, "member %d", i)
		assert.NoError(t, ps[i].Validate("mx2.n.example"), "member %d", i)
	}
	assert.Equal(t, 2, f.PolicyFetchesFor("n.example"), "one fetch for the fleet's new id")
	var fetches, shared uint64
	for _, r := range rs {
		fetches += r.Stats().Fetches
		shared += r.Stats().Shared
	}
	assert.EqualValues(t, 2, fetches)
	// Every member asked for the new id at once: fifteen took it from Redis.
	// (For the first id, a member may also have found the policy in Redis
	// before it asked DNS, which does not count as shared.)
	assert.EqualValues(t, 15, shared-sharedBefore, "members that took the new policy from Redis")
	assert.Empty(t, f.errs.list())
}

// A broken policy host is asked once by the fleet, not once per member: the
// member whose fetch failed leaves the failure in the lease for the retry
// delay, and the others, and a member that starts later, take it from there.
func TestFleetSharesBackoff(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.Publish("b.example", "1", policyFor("b.example"))
	f.SetPolicyFault("b.example", mtaststest.PolicyServerError)
	rs := f.members(8)

	ps, errs := all(rs, func(r *mtasts.Resolver) (*mtasts.Policy, error) { return lookup(r, "b.example") })
	for i := range rs {
		assert.Nil(t, ps[i], "member %d", i)
		assert.ErrorIs(t, errs[i], mtasts.ErrPolicyFetch, "member %d", i)
	}
	assert.Equal(t, 1, f.PolicyFetchesFor("b.example"), "the fleet asked the broken host more than once")

	late := f.member()
	_, err := lookup(late, "b.example")
	assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
	assert.ErrorContains(t, err, "500", "the holder's failure is lost")
	assert.Equal(t, 1, f.PolicyFetchesFor("b.example"), "a late member asked the broken host again")

	// The failure is kept in Redis for the five-minute retry delay.
	rc := f.redis.Client()
	ctx := context.Background()
	ttl, err := rc.PTTL(ctx, "mtasts:lease:b.example/1").Result()
	require.NoError(t, err)
	assert.InDelta(t, (5 * time.Minute).Seconds(), ttl.Seconds(), 60)
	n, err := rc.Exists(ctx, "mtasts:policy:b.example").Result()
	require.NoError(t, err)
	assert.Zero(t, n)
}

// A member that starts after DNS and HTTPS are gone enforces what the others
// learned: Redis holds it.
func TestFleetEnforcesWithoutDNSAndHTTPS(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.Publish("e1.example", "1", policyFor("e1.example"))
	f.Publish("e2.example", "1", policyFor("e2.example"))
	r1, r2 := f.member(), f.member()
	_, err := lookup(r1, "e1.example")
	require.NoError(t, err)
	_, err = lookup(r2, "e2.example")
	require.NoError(t, err)

	f.Close()
	r3 := f.member()
	for _, d := range []string{"e1.example", "e2.example"} {
		p, err := lookup(r3, d)
		require.NoError(t, err, d)
		require.NotNil(t, p, "%s: the policy the fleet learned is not enforced", d)
		assert.Equal(t, mtasts.ModeEnforce, p.Mode)
		assert.NoError(t, p.Validate("mx."+d))
		assert.ErrorIs(t, p.Validate("mx.attacker.example"), mtasts.ErrMXNotAllowed, d)
	}
	assert.True(t, f.errs.any(mtasts.ErrDNSTemporary), "the DNS failures were not reported: %v", f.errs.list())

	// A domain the fleet never learned has no policy to enforce.
	p, err := lookup(r3, "unknown.example")
	assert.Nil(t, p)
	assert.ErrorIs(t, err, mtasts.ErrDNSTemporary)
}

// Values that this version cannot read, written by a later one or damaged
// by hand, are reported and ignored: the Resolver fetches the policy, and
// writes what it fetched over them.
func TestFleetIgnoresUnreadableValues(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	rc := f.redis.Client()
	ctx := context.Background()
	v2 := fmt.Sprintf(`{"v":2,"domain":"v2.example","id":"1","fetched":%q,"policy":%q,"signature":"x"}`,
		time.Now().Format(time.RFC3339), policyFor("v2.example"))
	for d, value := range map[string]string{
		"v2.example":   v2,
		"junk.example": "junk",
		"torn.example": `{"v":1,"domain":"torn.example","id":"1","fetch`,
	} {
		t.Run(d, func(t *testing.T) {
			f.Publish(d, "7", policyFor(d))
			require.NoError(t, rc.Set(ctx, "mtasts:policy:"+d, value, time.Hour).Err())
			var errs errLog
			r := f.member()
			r.OnError = errs.add

			p, err := lookup(r, d)
			require.NoError(t, err)
			require.NotNil(t, p)
			assert.Equal(t, "7", p.ID)
			assert.Equal(t, 1, f.PolicyFetchesFor(d), "the unreadable value was not ignored")
			assert.True(t, errs.any(mtasts.ErrCacheCorrupt), "not reported as ErrCacheCorrupt: %v", errs.list())

			data, err := rc.Get(ctx, "mtasts:policy:"+d).Bytes()
			require.NoError(t, err)
			stored, err := mtasts.CachedPolicy(d, data)
			require.NoError(t, err, "the fetched policy was not written over the unreadable value")
			assert.Equal(t, "7", stored.ID)
		})
	}
}

// Redis killed while Lookups run: no Lookup outlasts its deadline by more
// than a generous margin, nothing panics, the failures are reported, and once
// Redis is back (empty, on the same port) the fleet writes to it again, the
// policies learned while it was down included.
func TestFleetSurvivesRedisDeath(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const n = 60
	domain := func(i int) string { return fmt.Sprintf("r%02d.example", i) }
	for i := range n {
		f.Publish(domain(i), "1", policyFor(domain(i)))
	}
	f.Publish("down.example", "1", policyFor("down.example"))
	rs := f.members(3)
	for _, r := range rs {
		r.MaxEntries = 8 // most Lookups miss memory and ask Redis
	}
	learner := f.member() // keeps in memory what it learns while Redis is down
	rs = append(rs, learner)
	ctx := context.Background()
	runCtx, stopRun := context.WithCancel(ctx)
	var runs sync.WaitGroup
	for _, r := range rs {
		runs.Go(func() { r.Run(runCtx) })
	}
	defer func() { stopRun(); runs.Wait() }()

	const deadline = time.Second
	const margin = 2 * time.Second
	var longest atomic.Int64 // the longest a Lookup ran
	var lookups, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		r := rs[w%3]
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				lctx, cancel := context.WithTimeout(ctx, deadline)
				start := time.Now()
				_, err := r.Lookup(lctx, domain(i%n))
				if took := int64(time.Since(start)); took > longest.Load() {
					longest.Store(took) // one writer at a time is enough for a bound
				}
				cancel()
				lookups.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}

	time.Sleep(500 * time.Millisecond)
	f.redis.Kill()
	killedAt := lookups.Load()
	time.Sleep(1500 * time.Millisecond)

	// Learned while Redis is down.
	p, err := lookup(learner, "down.example")
	require.NoError(t, err)
	require.NotNil(t, p)
	time.Sleep(500 * time.Millisecond)
	assert.Greater(t, lookups.Load(), killedAt, "the Lookups stopped when Redis died")
	assert.True(t, f.errs.any(rediscache.ErrUnavailable), "Redis's failure was not reported: %v", f.errs.list())
	assert.True(t, f.errs.any(mtasts.ErrCache))

	f.redis.Restart()
	rc := f.redis.Client()
	// Learned once Redis is back: a new domain's Put succeeds (once the
	// Cache asks Redis again: a second after its last failure), and the
	// one that failed is written again after it.
	tries := 0
	require.Eventually(t, func() bool {
		tries++
		d := fmt.Sprintf("after%d.example", tries)
		f.Publish(d, "1", policyFor(d))
		if _, err := lookup(learner, d); err != nil {
			return false
		}
		n, err := rc.Exists(ctx, "mtasts:policy:"+d).Result()
		return err == nil && n == 1
	}, 15*time.Second, 100*time.Millisecond, "a policy learned after Redis came back is not in it")
	require.Eventually(t, func() bool {
		n, err := rc.Exists(ctx, "mtasts:policy:down.example").Result()
		return err == nil && n == 1
	}, 15*time.Second, 100*time.Millisecond, "the policy learned while Redis was down was not written once it was back")

	close(stop)
	wg.Wait()
	t.Logf("%d Lookups with a deadline of %v, %d failed; the longest took %v", lookups.Load(), deadline, failed.Load(), time.Duration(longest.Load()))
	assert.Less(t, time.Duration(longest.Load()), deadline+margin, "a Lookup outlasted its deadline")
	for _, r := range rs {
		for _, d := range []string{domain(0), domain(n - 1)} {
			p, err := lookup(r, d)
			assert.NoError(t, err, d)
			assert.NotNil(t, p, d)
		}
	}
}

// Run's refreshes go through the leases too: when a policy falls due, one
// member fetches it again and the others take that copy from Redis, so the
// fleet refreshes it once.
func TestFleetRefreshesOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	clock := mtaststest.NewClock(time.Now())
	const month = "version: STSv1\nmode: enforce\nmx: mx.f.example\nmax_age: 2592000\n"
	f.Publish("f.example", "1", month)
	rs := f.members(4)
	for _, r := range rs {
		r.Now = clock.Now
		r.Cache = rediscache.New(f.redis.Client(), &rediscache.Options{Now: clock.Now})
	}
	for _, r := range rs {
		p, err := lookup(r, "f.example")
		require.NoError(t, err)
		require.NotNil(t, p)
	}
	require.Equal(t, 1, f.PolicyFetchesFor("f.example"))

	clock.Advance(25 * time.Hour) // past the day between refreshes
	ctx, stop := context.WithCancel(context.Background())
	var runs sync.WaitGroup
	for _, r := range rs {
		runs.Go(func() { r.Run(ctx) })
	}
	refreshed := func() (n uint64) {
		for _, r := range rs {
			n += r.Stats().Refreshes
		}
		return n
	}
	assert.Eventually(t, func() bool { return refreshed() >= 4 }, 15*time.Second, 50*time.Millisecond,
		"not every member refreshed")
	stop()
	runs.Wait()
	assert.EqualValues(t, 4, refreshed())
	assert.Equal(t, 2, f.PolicyFetchesFor("f.example"), "the fleet refreshed the policy more than once")
	for _, r := range rs {
		p, err := lookup(r, "f.example")
		require.NoError(t, err)
		assert.True(t, p.Fetched.After(clock.Now().Add(-time.Hour)), "a member kept the old copy: fetched %v", p.Fetched)
	}
	data, err := f.redis.Client().Get(context.Background(), "mtasts:policy:f.example").Bytes()
	require.NoError(t, err)
	stored, err := mtasts.CachedPolicy("f.example", data)
	require.NoError(t, err)
	assert.True(t, stored.Fetched.After(clock.Now().Add(-time.Hour)), "Redis holds the old copy")
	assert.Empty(t, f.errs.list())
}
