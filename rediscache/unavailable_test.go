package rediscache_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

// A Redis that does not answer holds a call for Timeout at most, and for a
// while after that (a second; a minute here) the Cache does not ask it
// again: calls fail at once.
func TestStalledRedis(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), &rediscache.Options{Timeout: 2 * time.Second})
	rediscache.SetUnavailableFor(c, time.Minute)
	ctx := context.Background()
	require.NoError(t, c.Put(ctx, "s.example", entry("s.example", "1", time.Now(), 86400)))

	srv.Stop()
	defer srv.Continue()
	start := time.Now()
	_, err := c.Get(ctx, "s.example")
	took := time.Since(start)
	require.ErrorIs(t, err, rediscache.ErrUnavailable)
	assert.NotErrorIs(t, err, mtasts.ErrCacheMiss)
	assert.ErrorContains(t, err, "GET mtasts:policy:s.example: no answer within 2s")
	assert.GreaterOrEqual(t, took, 2*time.Second, "gave up before Timeout")
	assert.Less(t, took, 5*time.Second, "Timeout not enforced")

	// Meanwhile every call fails at once, well within one Timeout for all.
	start = time.Now()
	for _, f := range []func() error{
		func() error { _, err := c.Get(ctx, "s.example"); return err },
		func() error { return c.Put(ctx, "s.example", entry("s.example", "1", time.Now(), 86400)) },
		func() error { return c.Delete(ctx, "s.example") },
		func() error { _, _, err := c.Lease(ctx, "s.example/1", time.Minute); return err },
		func() error { return c.Hold(ctx, "s.example/1", "00000000000000000000000000000000", "", time.Minute) },
		func() error { return c.Release(ctx, "s.example/1", "00000000000000000000000000000000") },
		func() error {
			for _, err := range c.Keys(ctx) {
				return err
			}
			return errors.New("Keys listed nothing")
		},
	} {
		err := f()
		assert.ErrorIs(t, err, rediscache.ErrUnavailable)
		assert.ErrorContains(t, err, "not asked again for 1m0s after: GET mtasts:policy:s.example: no answer within 2s")
	}
	assert.Less(t, time.Since(start), 2*time.Second, "a call waited on a Redis known to be down")
}

// When the time of failing at once is over, one call asks Redis again, and
// the others go on failing at once until it is answered: a dead Redis holds
// up one call per period, not every call.
func TestOneCallTriesAgain(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), &rediscache.Options{Timeout: 2 * time.Second})
	rediscache.SetUnavailableFor(c, 100*time.Millisecond)
	ctx := context.Background()
	require.NoError(t, c.Put(ctx, "o.example", entry("o.example", "1", time.Now(), 86400)))

	srv.Stop()
	defer srv.Continue()
	_, err := c.Get(ctx, "o.example")
	require.ErrorContains(t, err, "no answer within 2s")
	time.Sleep(200 * time.Millisecond) // past the 100 ms

	errs := make([]error, 10)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = c.Get(ctx, "o.example") })
	}
	wg.Wait()
	tried := 0
	for _, err := range errs {
		require.ErrorIs(t, err, rediscache.ErrUnavailable)
		if !strings.Contains(err.Error(), "not asked again") {
			tried++
			assert.ErrorContains(t, err, "no answer within 2s")
		}
	}
	assert.Equal(t, 1, tried, "calls that asked the stalled Redis")

	// Once it answers, the next call that asks finds it, and calls go
	// through again.
	srv.Continue()
	require.Eventually(t, func() bool {
		_, err := c.Get(ctx, "o.example")
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	_, err = c.Get(ctx, "o.example")
	assert.NoError(t, err)
}

// A caller's ctx bounds a call too; its end is the caller's, not a sign that
// Redis is down, so the next call asks Redis.
func TestCallerDeadline(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), &rediscache.Options{Timeout: 10 * time.Second})
	ctx := context.Background()
	require.NoError(t, c.Put(ctx, "s.example", entry("s.example", "1", time.Now(), 86400)))

	srv.Stop()
	defer srv.Continue()
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(cctx, "s.example")
	assert.Less(t, time.Since(start), 5*time.Second, "the caller's deadline was not enforced")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, rediscache.ErrUnavailable)
	_, err = c.Get(cctx, "s.example")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a done ctx")

	srv.Continue()
	_, err = c.Get(ctx, "s.example")
	assert.NoError(t, err, "the caller's deadline was taken for an outage")
}

// A Redis that is gone (killed: connections refused) fails calls with the
// client's error; one restarted on the same port is used again.
func TestKilledRedis(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), nil)
	ctx := context.Background()
	require.NoError(t, c.Put(ctx, "k.example", entry("k.example", "1", time.Now(), 86400)))

	srv.Kill()
	err := c.Put(ctx, "k.example", entry("k.example", "2", time.Now(), 86400))
	require.ErrorIs(t, err, rediscache.ErrUnavailable)
	assert.ErrorContains(t, err, "SET mtasts:policy:k.example")
	_, err = c.Get(ctx, "k.example")
	assert.ErrorIs(t, err, rediscache.ErrUnavailable)
	assert.ErrorContains(t, err, "not asked again")

	srv.Restart()
	require.Eventually(t, func() bool {
		return c.Put(ctx, "k.example", entry("k.example", "3", time.Now(), 86400)) == nil
	}, 10*time.Second, 50*time.Millisecond)
	data, err := c.Get(ctx, "k.example")
	require.NoError(t, err)
	p, err := mtasts.CachedPolicy("k.example", data)
	require.NoError(t, err)
	assert.Equal(t, "3", p.ID)
}
