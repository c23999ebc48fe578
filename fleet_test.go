package mtasts_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// fleet is n Resolvers sharing one SharedCache, as the MTAs of a fleet share
// one store.
func (w *world) fleet(n int, shared *mtaststest.SharedCache) []*mtasts.Resolver {
	rs := make([]*mtasts.Resolver, n)
	for i := range rs {
		rs[i] = w.resolver()
		rs[i].Cache = shared
	}
	return rs
}

// lookupAll looks d up on every Resolver at once.
func lookupAll(t *testing.T, rs []*mtasts.Resolver, d string) ([]*mtasts.Policy, []error) {
	t.Helper()
	ps, errs := make([]*mtasts.Policy, len(rs)), make([]error, len(rs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range rs {
		wg.Go(func() {
			<-start
			ps[i], errs[i] = lookup(t, r, d)
		})
	}
	close(start)
	wg.Wait()
	return ps, errs
}

func TestFleetFetchesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("fabrikam.com", "1", fabrikamEnforce)
	rs := w.fleet(16, &mtaststest.SharedCache{})

	ps, errs := lookupAll(t, rs, "fabrikam.com")
	for i := range rs {
		require.NoError(t, errs[i], "resolver %d", i)
		require.NotNil(t, ps[i], "resolver %d", i)
		assert.Equal(t, "1", ps[i].ID)
		assert.Error(t, ps[i].Validate("mx.attacker.com"))
	}
	assert.Equal(t, 1, w.PolicyFetches(), "one fetch for the fleet")

	// A new id: one fetch again, and every member takes it.
	var before uint64
	for _, r := range rs {
		before += r.Stats().Shared
	}
	w.Publish("fabrikam.com", "2", fabrikamTesting)
	w.clock.Advance(time.Hour) // past the TXT TTL
	ps, errs = lookupAll(t, rs, "fabrikam.com")
	shared := -before
	for i, r := range rs {
		require.NoError(t, errs[i])
		require.NotNil(t, ps[i])
		assert.Equal(t, "2", ps[i].ID)
		shared += r.Stats().Shared
	}
	assert.Equal(t, 2, w.PolicyFetches())
	assert.Equal(t, uint64(15), shared, "each member but the one that fetched took the new id from the others")
	assert.Empty(t, w.fails.list())
}

// A broken policy host is asked once per retry delay by the fleet, not by
// each member (RFC 8461 §3.3).
func TestFleetSharesRetryDelay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("fabrikam.com", "1", fabrikamEnforce)
	w.SetPolicyFault("fabrikam.com", mtaststest.PolicyServerError)
	shared := &mtaststest.SharedCache{}
	rs := w.fleet(16, shared)

	ps, errs := lookupAll(t, rs, "fabrikam.com")
	for i := range rs {
		assert.Nil(t, ps[i])
		assert.ErrorIs(t, errs[i], mtasts.ErrPolicyFetch, "resolver %d", i)
	}
	assert.Equal(t, 1, w.PolicyFetches())

	// A member that joins now does not ask either.
	late := w.fleet(1, shared)[0]
	_, err := lookup(t, late, "fabrikam.com")
	assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
	assert.ErrorContains(t, err, "sharing the cache")
	assert.Equal(t, 1, w.PolicyFetches())

	// Five minutes on, the fleet asks again, once, and learns the policy.
	w.SetPolicyFault("fabrikam.com", mtaststest.PolicyOK)
	shared.ExpireLeases()
	w.clock.Advance(6 * time.Minute)
	ps, errs = lookupAll(t, append(rs, late), "fabrikam.com")
	for i := range ps {
		require.NoError(t, errs[i])
		require.NotNil(t, ps[i], "resolver %d", i)
	}
	assert.Equal(t, 2, w.PolicyFetches())
}

// Run on every member refreshes each policy about once per interval for the
// whole fleet: a member whose refresh is due finds the copy another fetched.
func TestFleetRefreshesOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("fabrikam.com", "1", fabrikam30Days)
	rs := w.fleet(4, &mtaststest.SharedCache{})
	for _, r := range rs {
		mustPolicy(t, r, "fabrikam.com")
	}
	require.Equal(t, 1, w.PolicyFetches())

	ctx := context.Background()
	for day := 1; day <= 3; day++ {
		w.clock.Advance(24 * time.Hour)
		for _, r := range rs {
			mtasts.RefreshOnce(ctx, r)
		}
		assert.Equal(t, 1+day, w.PolicyFetches(), "day %d", day)
		for i, r := range rs {
			p := mustPolicy(t, r, "fabrikam.com")
			assert.WithinDuration(t, w.clock.Now(), p.Fetched, time.Minute, "day %d, resolver %d", day, i)
		}
	}
}

// What a member learns while the shared Cache is down is written once it is
// back; meanwhile it fetches alone and reports the Cache's failure.
func TestFleetWritesBackAfterOutage(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("fabrikam.com", "1", fabrikamEnforce)
	w.Publish("contoso.com", "1", fabrikamEnforce)
	shared := &mtaststest.SharedCache{}
	rs := w.fleet(2, shared)

	down := errors.New("connection refused")
	shared.SetDown(down)
	mustPolicy(t, rs[0], "fabrikam.com")
	require.NotEmpty(t, w.fails.list())
	for _, err := range w.fails.list() {
		assert.ErrorIs(t, err, mtasts.ErrCache)
		assert.ErrorIs(t, err, down)
	}

	shared.SetDown(nil)
	mustPolicy(t, rs[0], "contoso.com") // its write succeeds, and writes fabrikam.com's after it
	require.Eventually(t, func() bool {
		_, err := shared.Get(context.Background(), "fabrikam.com")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	w.Close() // DNS and HTTPS gone: the other member still enforces both
	for _, d := range []string{"fabrikam.com", "contoso.com"} {
		p := mustPolicy(t, rs[1], d)
		assert.Error(t, p.Validate("mx.attacker.com"), d)
	}
	assert.Equal(t, 2, w.PolicyFetches())
}

// A member that reads another's failure from the lease reports it as the
// other does: the same RFC 8460 result type and reason code.
func TestFleetSharedFailureClassified(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		break_ func(w *world)
		sentry error
	}{
		{"expired certificate", func(w *world) { w.SetPolicyFault("fabrikam.com", mtaststest.PolicyCertExpired) }, mtasts.ErrWebPKI},
		{"500", func(w *world) { w.SetPolicyFault("fabrikam.com", mtaststest.PolicyServerError) }, mtasts.ErrHTTPStatus},
		{"invalid policy", func(w *world) { w.SetPolicy("fabrikam.com", "version: STSv1\nmode: sometimes\n") }, mtasts.ErrInvalidPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.Publish("fabrikam.com", "1", fabrikamEnforce)
			tc.break_(w)
			rs := w.fleet(2, &mtaststest.SharedCache{})
			_, first := lookup(t, rs[0], "fabrikam.com")
			_, second := lookup(t, rs[1], "fabrikam.com")
			require.Error(t, first)
			assert.ErrorContains(t, second, "sharing the cache") // the second did not fetch
			assert.LessOrEqual(t, w.PolicyFetches(), 1)          // 0 when the handshake failed
			assert.ErrorIs(t, second, tc.sentry)
			assert.Equal(t, errors.Is(first, mtasts.ErrPolicyFetch), errors.Is(second, mtasts.ErrPolicyFetch))
			typ, reason := mtasts.Classify(first)
			require.NotEmpty(t, typ)
			typ2, reason2 := mtasts.Classify(second)
			assert.Equal(t, typ, typ2)
			assert.Equal(t, reason, reason2)
		})
	}
}

// A policy learned while the shared Cache is down is written once it is
// back, even if it has left memory meanwhile.
func TestFleetWritesBackEvicted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	shared := &mtaststest.SharedCache{}
	r := w.fleet(1, shared)[0]
	r.MaxEntries = 8
	for i := range 51 {
		w.Publish(fmt.Sprintf("d%d.example", i), "1", fabrikamEnforce)
	}
	shared.SetDown(errors.New("connection refused"))
	for i := range 50 {
		mustPolicy(t, r, fmt.Sprintf("d%d.example", i))
	}
	shared.SetDown(nil)
	mustPolicy(t, r, "d50.example")
	require.Eventually(t, func() bool {
		n := 0
		for range shared.Keys(context.Background()) {
			n++
		}
		return n == 51
	}, 10*time.Second, 10*time.Millisecond)
}

// The fleet lists the shared store once an hour, not each member: the
// policies only the store holds are refreshed by the member that lists it.
func TestFleetListsOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("fabrikam.com", "1", fabrikam30Days)
	shared := &mtaststest.SharedCache{}
	mustPolicy(t, w.fleet(1, shared)[0], "fabrikam.com")

	rs := w.fleet(3, shared) // started after it was learned: memory empty
	w.clock.Advance(24 * time.Hour)
	ctx := context.Background()
	for _, r := range rs {
		mtasts.RefreshOnce(ctx, r)
	}
	assert.Equal(t, 2, w.PolicyFetches(), "refreshed once")
	assert.Equal(t, 1, shared.Listings(), "listed once")
	var holders int
	for _, r := range rs {
		if ce, ok, err := r.Inspect(ctx, "fabrikam.com"); assert.NoError(t, err) && assert.True(t, ok) && ce.InMemory {
			holders++
		}
	}
	assert.Equal(t, 1, holders, "the member that listed the store refreshed what it holds")
}
