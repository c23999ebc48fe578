package rediscache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

// entry is what a Resolver stores for domain: the core's JSON, version 1.
func entry(domain, id string, fetched time.Time, maxAge int) []byte {
	data, err := json.Marshal(map[string]any{
		"v": 1, "domain": domain, "id": id, "fetched": fetched,
		"policy": fmt.Sprintf("version: STSv1\nmode: enforce\nmx: mx.%s\nmax_age: %d\n", domain, maxAge),
	})
	if err != nil {
		panic(err)
	}
	return data
}

func TestGetPutDelete(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	c := rediscache.New(rc, nil)
	ctx := context.Background()

	_, err := c.Get(ctx, "a.example")
	require.ErrorIs(t, err, mtasts.ErrCacheMiss)

	now := time.Now()
	data := entry("a.example", "20240101", now, 86400)
	require.NoError(t, c.Put(ctx, "a.example", data))
	got, err := c.Get(ctx, "a.example")
	require.NoError(t, err)
	assert.Equal(t, data, got, "stored as it was given")

	// The key layout, and an expiry a day (the default grace) after the
	// policy's: max_age plus 24 h from the fetch.
	raw, err := rc.Get(ctx, "mtasts:policy:a.example").Bytes()
	require.NoError(t, err)
	assert.Equal(t, data, raw)
	ttl, err := rc.PTTL(ctx, "mtasts:policy:a.example").Result()
	require.NoError(t, err)
	want := now.Add(86400 * time.Second).Add(rediscache.DefaultGrace).Sub(time.Now())
	assert.InDelta(t, want.Seconds(), ttl.Seconds(), 60, "PTTL %v, want about %v", ttl, want)
	assert.Greater(t, ttl, 86400*time.Second, "Redis would drop a live policy")

	// Put replaces.
	data2 := entry("a.example", "20240202", now, 3600)
	require.NoError(t, c.Put(ctx, "a.example", data2))
	got, err = c.Get(ctx, "a.example")
	require.NoError(t, err)
	assert.Equal(t, data2, got)

	require.NoError(t, c.Delete(ctx, "a.example"))
	_, err = c.Get(ctx, "a.example")
	require.ErrorIs(t, err, mtasts.ErrCacheMiss)
	require.NoError(t, c.Delete(ctx, "a.example"), "deleting an absent key")
}

func TestGrace(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	fetched := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		grace, want time.Duration
	}{
		{time.Hour, 2 * time.Hour},               // max_age 2 h from an hour ago, plus one
		{-time.Hour, time.Hour},                  // negative: none
		{0, time.Hour + rediscache.DefaultGrace}, // zero: the default
	} {
		c := rediscache.New(rc, &rediscache.Options{Grace: tc.grace})
		require.NoError(t, c.Put(ctx, "g.example", entry("g.example", "1", fetched, 7200)))
		ttl, err := rc.PTTL(ctx, "mtasts:policy:g.example").Result()
		require.NoError(t, err)
		assert.InDelta(t, tc.want.Seconds(), ttl.Seconds(), 60, "grace %v: PTTL %v", tc.grace, ttl)
	}
}

// A policy that has expired is not written, and what was there goes: Put
// replaces, and an expired policy is as good as none.
func TestPutExpired(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	c := rediscache.New(rc, nil)
	require.NoError(t, c.Put(ctx, "x.example", entry("x.example", "1", time.Now(), 86400)))
	require.NoError(t, c.Put(ctx, "x.example", entry("x.example", "2", time.Now().Add(-2*time.Hour), 3600)))
	n, err := rc.Exists(ctx, "mtasts:policy:x.example").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "an expired policy was kept")

	// Judged by Now: the same policy is live on a clock two hours earlier.
	past := func() time.Time { return time.Now().Add(-2 * time.Hour) }
	c = rediscache.New(rc, &rediscache.Options{Now: past})
	require.NoError(t, c.Put(ctx, "x.example", entry("x.example", "2", time.Now().Add(-2*time.Hour), 3600)))
	ttl, err := rc.PTTL(ctx, "mtasts:policy:x.example").Result()
	require.NoError(t, err)
	assert.InDelta(t, (time.Hour + rediscache.DefaultGrace).Seconds(), ttl.Seconds(), 60)
}

// Put refuses what a Resolver could not read back, Get passes on what Redis
// holds (the Resolver judges it), and keys that are not domains in lower-case
// A-labels are refused before Redis is asked.
func TestBadInput(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	c := rediscache.New(rc, nil)
	now := time.Now()

	v2 := []byte(strings.Replace(string(entry("b.example", "1", now, 86400)), `"v":1`, `"v":2`, 1))
	for name, data := range map[string][]byte{
		"junk":         []byte("junk"),
		"empty":        nil,
		"version 2":    v2,
		"other domain": entry("c.example", "1", now, 86400),
		"bad policy":   []byte(`{"v":1,"domain":"b.example","id":"1","fetched":"2026-01-01T00:00:00Z","policy":"mode: enforce"}`),
	} {
		err := c.Put(ctx, "b.example", data)
		assert.ErrorIs(t, err, mtasts.ErrCacheCorrupt, name)
	}
	n, err := rc.Exists(ctx, "mtasts:policy:b.example").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "refused data was written")

	require.NoError(t, rc.Set(ctx, "mtasts:policy:b.example", "junk", 0).Err())
	got, err := c.Get(ctx, "b.example")
	require.NoError(t, err)
	assert.Equal(t, "junk", string(got))
	// A value of another type is an error, not a miss nor an outage.
	require.NoError(t, rc.Del(ctx, "mtasts:policy:b.example").Err())
	require.NoError(t, rc.LPush(ctx, "mtasts:policy:b.example", "x").Err())
	_, err = c.Get(ctx, "b.example")
	require.Error(t, err)
	assert.NotErrorIs(t, err, mtasts.ErrCacheMiss)
	assert.NotErrorIs(t, err, rediscache.ErrUnavailable)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	_, err = c.Get(ctx, "a.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss, "the Cache took a bad call for an outage")

	for _, key := range []string{"", "A.example", "a b", "a*", ".a", "a/b", "a:b", strings.Repeat("a", 254)} {
		_, err := c.Get(ctx, key)
		assert.ErrorContains(t, err, "invalid key", "Get %q", key)
		assert.NotErrorIs(t, err, mtasts.ErrCacheMiss, "Get %q", key)
		assert.ErrorContains(t, c.Put(ctx, key, entry(key, "1", now, 60)), "invalid key", "Put %q", key)
		assert.ErrorContains(t, c.Delete(ctx, key), "invalid key", "Delete %q", key)
	}
}

func listKeys(t *testing.T, c *rediscache.Cache) []string {
	t.Helper()
	var keys []string
	for k, err := range c.Keys(context.Background()) {
		require.NoError(t, err)
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Caches with different prefixes share a Redis without seeing each other's
// keys, even a prefix that holds SCAN's pattern characters.
func TestPrefix(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	def := rediscache.New(rc, nil)
	a := rediscache.New(rc, &rediscache.Options{Prefix: "fleet-a:"})
	star := rediscache.New(rc, &rediscache.Options{Prefix: "p*"})
	p1 := rediscache.New(rc, &rediscache.Options{Prefix: "p1"})
	now := time.Now()
	require.NoError(t, def.Put(ctx, "d.example", entry("d.example", "1", now, 86400)))
	require.NoError(t, a.Put(ctx, "a.example", entry("a.example", "1", now, 86400)))
	require.NoError(t, star.Put(ctx, "s.example", entry("s.example", "1", now, 86400)))
	require.NoError(t, p1.Put(ctx, "p.example", entry("p.example", "1", now, 86400)))

	_, err := a.Get(ctx, "d.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)
	_, err = def.Get(ctx, "a.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)
	assert.Equal(t, []string{"d.example"}, listKeys(t, def))
	assert.Equal(t, []string{"a.example"}, listKeys(t, a))
	assert.Equal(t, []string{"s.example"}, listKeys(t, star))
	assert.Equal(t, []string{"p.example"}, listKeys(t, p1))
	n, err := rc.Exists(ctx, "fleet-a:policy:a.example", "p*policy:s.example", "p1policy:p.example").Result()
	require.NoError(t, err)
	assert.EqualValues(t, 3, n)

	tok, _, err := a.Lease(ctx, "a.example/1", time.Minute)
	require.NoError(t, err)
	require.NotEmpty(t, tok)
	tok, _, err = def.Lease(ctx, "a.example/1", time.Minute)
	require.NoError(t, err)
	assert.NotEmpty(t, tok, "a lease of another prefix")
}

// Keys lists every domain once, over many SCAN pages, and skips what is not
// a policy key.
func TestKeys(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	c := rediscache.New(rc, nil)
	now := time.Now()
	var want []string
	pipe := rc.Pipeline()
	for i := range 2500 {
		d := fmt.Sprintf("d%04d.example", i)
		want = append(want, d)
		pipe.Set(ctx, "mtasts:policy:"+d, entry(d, "1", now, 86400), time.Hour)
	}
	pipe.Set(ctx, "mtasts:policy:Not A Domain", "x", time.Hour)
	pipe.Set(ctx, "mtasts:lease:d0001.example/1", "x", time.Hour)
	pipe.Set(ctx, "other:policy:o.example", "x", time.Hour)
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	sort.Strings(want)
	assert.Equal(t, want, listKeys(t, c))

	// The caller may stop.
	n := 0
	for _, err := range c.Keys(ctx) {
		require.NoError(t, err)
		n++
		if n == 10 {
			break
		}
	}
	assert.Equal(t, 10, n)

	// A ctx that ends ends the listing with its error, the last pair.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var last error
	n = 0
	for k, err := range c.Keys(cctx) {
		if err != nil {
			assert.Empty(t, k)
			last = err
			continue
		}
		require.NoError(t, last, "a pair after the error")
		n++
		if n == 5 {
			cancel()
		}
	}
	assert.ErrorIs(t, last, context.Canceled)
	assert.Equal(t, 5, n)

	// An empty Redis lists nothing.
	e := rediscache.New(rc, &rediscache.Options{Prefix: "empty:"})
	assert.Empty(t, listKeys(t, e))
}

// Keys lists each key stored for the whole listing once, even while Redis
// shrinks its table under the SCAN cursor, when SCAN itself may return a key
// twice.
func TestKeysWhileTableShrinks(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	c := rediscache.New(rc, nil)
	now := time.Now()
	pipe := rc.Pipeline()
	var want []string
	for i := range 300 {
		d := fmt.Sprintf("keep%03d.example", i)
		want = append(want, d)
		pipe.Set(ctx, "mtasts:policy:"+d, entry(d, "1", now, 86400), time.Hour)
	}
	for i := range 60000 {
		pipe.Set(ctx, fmt.Sprintf("filler:%d", i), "x", time.Hour)
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	sort.Strings(want)

	var got []string
	deleted := false
	for k, err := range c.Keys(ctx) {
		require.NoError(t, err)
		got = append(got, k)
		if !deleted {
			// Most of the table goes, so Redis shrinks it mid-listing.
			deleted = true
			for i := 0; i < 60000; i += 1000 {
				keys := make([]string, 1000)
				for j := range keys {
					keys[j] = fmt.Sprintf("filler:%d", i+j)
				}
				require.NoError(t, rc.Del(ctx, keys...).Err())
			}
			time.Sleep(500 * time.Millisecond) // for Redis's cron to resize the table
		}
	}
	sort.Strings(got)
	assert.Equal(t, want, got)
}

var tokenRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestLease(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	ctx := context.Background()
	c := rediscache.New(rc, nil)
	const name = "l.example/20240101"

	tok, note, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Regexp(t, tokenRE, tok)
	assert.Empty(t, note)
	ttl, err := rc.PTTL(ctx, "mtasts:lease:"+name).Result()
	require.NoError(t, err)
	assert.InDelta(t, 60, ttl.Seconds(), 5)

	other, note, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, other, "a lease held was taken again")
	assert.Empty(t, note)

	// Hold sets the note others see, and the time left.
	require.NoError(t, c.Hold(ctx, name, tok, "fetch failed: 500: a:b", 5*time.Minute))
	other, note, err = c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, other)
	assert.Equal(t, "fetch failed: 500: a:b", note)
	ttl, err = rc.PTTL(ctx, "mtasts:lease:"+name).Result()
	require.NoError(t, err)
	assert.InDelta(t, 300, ttl.Seconds(), 5)
	raw, err := rc.Get(ctx, "mtasts:lease:"+name).Result()
	require.NoError(t, err)
	assert.Equal(t, tok+":fetch failed: 500: a:b", raw, "token and note in one key")

	// A token that does not hold the lease can neither hold nor release it.
	stale := strings.Repeat("0", 32)
	require.NoError(t, c.Hold(ctx, name, stale, "stale", time.Millisecond))
	require.NoError(t, c.Release(ctx, name, stale))
	_, note, err = c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "fetch failed: 500: a:b", note, "a stale token changed the lease")
	ttl, err = rc.PTTL(ctx, "mtasts:lease:"+name).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Minute, "a stale token changed the lease's time")

	// Release frees it.
	require.NoError(t, c.Release(ctx, name, tok))
	tok2, _, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Regexp(t, tokenRE, tok2)
	assert.NotEqual(t, tok, tok2)

	// The old holder can no longer touch it.
	require.NoError(t, c.Hold(ctx, name, tok, "old", time.Hour))
	require.NoError(t, c.Release(ctx, name, tok))
	tok3, note, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, tok3, "the old holder released the new holder's lease")
	assert.Empty(t, note, "the old holder set the new holder's note")
	require.NoError(t, c.Release(ctx, name, tok2))

	// Leases are apart from policies.
	_, err = c.Get(ctx, "l.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)
}

// A lease whose holder died ends when its time runs out, and its late holder
// cannot touch the next one.
func TestLeaseExpires(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), nil)
	ctx := context.Background()
	const name = "e.example/1"
	tok, _, err := c.Lease(ctx, name, 50*time.Millisecond)
	require.NoError(t, err)
	require.NotEmpty(t, tok)
	again, _, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	require.Empty(t, again)

	time.Sleep(300 * time.Millisecond) // well past 50 ms
	next, _, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	require.NotEmpty(t, next, "an expired lease still held")

	require.NoError(t, c.Hold(ctx, name, tok, "late", time.Hour))
	require.NoError(t, c.Release(ctx, name, tok))
	again, note, err := c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, again, "the late holder released the lease")
	assert.Empty(t, note, "the late holder set the note")

	// Hold makes it last: well past the first ttl.
	require.NoError(t, c.Hold(ctx, name, next, "busy", 5*time.Second))
	time.Sleep(300 * time.Millisecond)
	again, note, err = c.Lease(ctx, name, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, again)
	assert.Equal(t, "busy", note)
}

func TestLeaseBadInput(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	c := rediscache.New(srv.Client(), nil)
	ctx := context.Background()
	tok, _, err := c.Lease(ctx, "b.example/1", time.Minute)
	require.NoError(t, err)
	for _, bad := range []string{"", "x", strings.Repeat("0", 31) + ":", strings.ToUpper(tok), tok + "0"} {
		assert.ErrorContains(t, c.Hold(ctx, "b.example/1", bad, "n", time.Minute), "invalid lease token", "%q", bad)
		assert.ErrorContains(t, c.Release(ctx, "b.example/1", bad), "invalid lease token", "%q", bad)
	}
	_, _, err = c.Lease(ctx, "", time.Minute)
	assert.ErrorContains(t, err, "invalid lease name")
	_, _, err = c.Lease(ctx, strings.Repeat("n", 513), time.Minute)
	assert.ErrorContains(t, err, "invalid lease name")
	for _, ttl := range []time.Duration{0, -time.Second} {
		_, _, err = c.Lease(ctx, "b.example/2", ttl)
		assert.ErrorContains(t, err, "not positive")
		assert.ErrorContains(t, c.Hold(ctx, "b.example/1", tok, "n", ttl), "not positive")
	}
	// Still held by tok, untouched.
	again, _, err := c.Lease(ctx, "b.example/1", time.Minute)
	require.NoError(t, err)
	assert.Empty(t, again)
	// A ttl under a millisecond is rounded up, not refused.
	tok, _, err = c.Lease(ctx, "b.example/3", time.Microsecond)
	require.NoError(t, err)
	assert.NotEmpty(t, tok)
}

// A key of another type under a lease name is an error, not a lease taken.
func TestLeaseWrongType(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	rc := srv.Client()
	c := rediscache.New(rc, nil)
	ctx := context.Background()
	require.NoError(t, rc.LPush(ctx, "mtasts:lease:w.example/1", "x").Err())
	tok, _, err := c.Lease(ctx, "w.example/1", time.Minute)
	assert.Error(t, err)
	assert.Empty(t, tok)
	var re redis.Error
	assert.True(t, errors.As(err, &re), "%v", err)
}

// A Cache without a client fails every call, and panics in none.
func TestNoClient(t *testing.T) {
	t.Parallel()
	c := rediscache.New(nil, nil)
	ctx := context.Background()
	_, err := c.Get(ctx, "n.example")
	assert.ErrorContains(t, err, "no Redis client")
	assert.ErrorContains(t, c.Put(ctx, "n.example", entry("n.example", "1", time.Now(), 60)), "no Redis client")
	assert.ErrorContains(t, c.Delete(ctx, "n.example"), "no Redis client")
	_, _, err = c.Lease(ctx, "n.example/1", time.Minute)
	assert.ErrorContains(t, err, "no Redis client")
	assert.ErrorContains(t, c.Hold(ctx, "n.example/1", strings.Repeat("0", 32), "", time.Minute), "no Redis client")
	assert.ErrorContains(t, c.Release(ctx, "n.example/1", strings.Repeat("0", 32)), "no Redis client")
	var errs []error
	for _, err := range c.Keys(ctx) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorContains(t, errs[0], "no Redis client")
}
