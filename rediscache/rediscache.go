// Package rediscache is an mtasts.Cache kept in Redis, for a fleet of MTAs
// that share what they learn of MTA-STS policies.
//
// One Redis (a single node, a Sentinel-managed primary, or a Cluster) serves
// every MTA of the fleet. Each MTA's mtasts.Resolver uses a Cache made with
// New as its Cache: a policy that one member fetches is written to Redis, and
// the others read it from there instead of fetching it again, so that a
// member that starts while DNS or the policy host is down, or is being
// attacked, still enforces what the fleet learned. A Cache is also an
// mtasts.CacheLister, so that Resolver.Run refreshes the policies only Redis
// holds, and an mtasts.CacheLeaser, so that a policy the whole fleet needs is
// fetched by one member, and a broken policy host is asked once per retry
// delay by the fleet rather than once by each member.
//
// # Keys
//
// With the default Prefix "mtasts:", a policy for example.com is kept under
// "mtasts:policy:example.com", as the JSON the Resolver writes (versioned and
// self-describing: {"v":1,"domain":...,"id":...,"fetched":...,"policy":...}),
// with a Redis expiry Grace (a day by default) after the policy's own, so
// that Redis never drops a policy that RFC 8461 says to keep. A lease is kept
// under "mtasts:lease:<name>" as its holder's random token, a colon and the
// holder's note. Each key is used alone by each command, so a Cluster may put
// them on any node.
//
// # When Redis is down
//
// Every call to Redis is bounded by Timeout (250 ms by default) on top of the
// caller's ctx, whatever the client's own timeouts. After a failure, the Cache
// does not ask Redis again for a second: the calls made meanwhile fail at once
// with an error wrapping ErrUnavailable, and then one call tries Redis again
// while the others go on failing at once.
// A Resolver treats a failing Cache as a missing one: it reports the errors
// and goes on from memory, DNS and HTTPS, fetching alone when it cannot take a
// lease, so mail is never held up waiting for Redis; the policies it could
// not write, it writes once Redis takes writes again (after its next write
// that succeeds, and from Run).
package rediscache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"iter"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seedc2a895ea/mtasts"
)

// Defaults for the zero fields of Options.
const (
	DefaultPrefix  = "mtasts:"
	DefaultTimeout = 250 * time.Millisecond
	DefaultGrace   = 24 * time.Hour
)

// unavailableFor is how long the Cache fails at once after Redis failed.
const unavailableFor = time.Second

// scanCount is the COUNT hint of each SCAN that Keys sends.
const scanCount = 1000

// ErrUnavailable is wrapped by the errors of calls that Redis did not answer
// in time or at all, and of the calls that the Cache refused to send for a
// second after such a failure.
var ErrUnavailable = errors.New("rediscache: Redis unavailable")

var errNoClient = errors.New("rediscache: no Redis client")

// Options configure a Cache. The zero value, as a nil *Options, gives the
// defaults.
type Options struct {
	// Prefix starts every key the Cache uses, so that one Redis can hold
	// other data, or the caches of unrelated fleets, beside it. If empty,
	// DefaultPrefix.
	Prefix string

	// Timeout bounds each call to Redis, on top of the caller's ctx. If zero
	// or negative, DefaultTimeout.
	Timeout time.Duration

	// Grace is how long after a policy's expiry (its fetch time plus its
	// max_age) Redis keeps it, so that a clock that differs between an MTA
	// and Redis does not remove a live policy early. If zero, DefaultGrace;
	// a negative Grace is taken as zero.
	Grace time.Duration

	// Now returns the current time, which Put compares with a policy's
	// expiry. If nil, time.Now. Set it to the Resolver's Now if that is set.
	Now func() time.Time
}

// A Cache is an mtasts.Cache, mtasts.CacheLister and mtasts.CacheLeaser kept
// in Redis. It is safe for concurrent use, and several processes may use the
// same Redis and Prefix at once: that is what it is for. Make one with New.
type Cache struct {
	client  redis.UniversalClient
	policy  string // prefix + "policy:"
	lease   string // prefix + "lease:"
	match   string // SCAN pattern for the policy keys
	timeout time.Duration
	grace   time.Duration
	now     func() time.Time

	// downUntil is when Redis is next asked after a failure, in Unix
	// nanoseconds; zero while Redis answers. lastErr is that failure.
	// downFor is unavailableFor, but for tests.
	downFor   time.Duration
	downUntil atomic.Int64
	lastErr   atomic.Pointer[error]
}

var (
	_ mtasts.CacheLister = (*Cache)(nil)
	_ mtasts.CacheLeaser = (*Cache)(nil)
)

// New returns a Cache that keeps its data in Redis through client, which may
// be a *redis.Client, a Sentinel failover client or a *redis.ClusterClient
// (or a *redis.Ring, whose shards Keys lists in turn). opts may be nil. The
// Cache does not close the client. If client is nil, every call fails.
func New(client redis.UniversalClient, opts *Options) *Cache {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	switch {
	case o.Grace == 0:
		o.Grace = DefaultGrace
	case o.Grace < 0:
		o.Grace = 0
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Cache{
		client:  client,
		policy:  o.Prefix + "policy:",
		lease:   o.Prefix + "lease:",
		match:   escapeGlob(o.Prefix+"policy:") + "*",
		timeout: o.Timeout,
		grace:   o.Grace,
		now:     o.Now,
		downFor: unavailableFor,
	}
}

// Get returns the policy data stored for the domain key, or an error wrapping
// mtasts.ErrCacheMiss if there is none. It returns what Redis holds as it is:
// the Resolver decodes it, and reports what it cannot read.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	k := c.policy + key
	data, err := call(ctx, c, "GET "+k, func(ctx context.Context) ([]byte, error) {
		return c.client.Get(ctx, k).Bytes()
	})
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %s", mtasts.ErrCacheMiss, key)
	}
	return data, err
}

// Put stores data, which must be what a Resolver stores for the domain key
// (mtasts.CachedPolicy decodes it), under key, with a Redis expiry Grace after
// the policy expires. Data that does not decode is refused with an error
// wrapping mtasts.ErrCacheCorrupt, so that Redis holds nothing another member
// cannot read. A policy that has already expired is not stored: Put deletes
// what the key held, as storing it and letting it expire would.
func (c *Cache) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	p, err := mtasts.CachedPolicy(key, data)
	if err != nil {
		return fmt.Errorf("rediscache: refusing to store %s: %w", key, err)
	}
	k := c.policy + key
	now := c.now()
	ttl := p.Expires().Add(c.grace).Sub(now)
	if !now.Before(p.Expires()) || ttl < time.Millisecond {
		_, err := call(ctx, c, "DEL "+k, func(ctx context.Context) (int64, error) {
			return c.client.Del(ctx, k).Result()
		})
		return err
	}
	_, err = call(ctx, c, "SET "+k, func(ctx context.Context) (string, error) {
		return c.client.Set(ctx, k, data, ttl).Result()
	})
	return err
}

// Delete removes the policy stored for the domain key, if any.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	k := c.policy + key
	_, err := call(ctx, c, "DEL "+k, func(ctx context.Context) (int64, error) {
		return c.client.Del(ctx, k).Result()
	})
	return err
}

// Keys lists the domains that Redis holds a policy for, with SCAN (never
// KEYS, which would stop Redis for the whole listing), on every primary of a
// Cluster or shard of a Ring in turn. Each SCAN call is bounded by Timeout. A
// key SCAN returns twice, as it may while Redis resizes its tables, is listed
// once; to know which it has listed, Keys keeps 8 bytes (a hash of the key)
// per key while it runs. Keys whose domain part Get would refuse, which no
// Resolver writes, are skipped.
func (c *Cache) Keys(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		nodes, err := c.nodes(ctx)
		if err != nil {
			yield("", err)
			return
		}
		seed := maphash.MakeSeed()
		seen := map[uint64]struct{}{}
		for _, node := range nodes {
			var cursor uint64
			for {
				type page struct {
					keys   []string
					cursor uint64
				}
				cur := cursor
				pg, err := call(ctx, c, "SCAN "+c.match, func(ctx context.Context) (page, error) {
					keys, next, err := node.Scan(ctx, cur, c.match, scanCount).Result()
					return page{keys, next}, err
				})
				if err != nil {
					yield("", err)
					return
				}
				for _, k := range pg.keys {
					if err := ctx.Err(); err != nil {
						yield("", err)
						return
					}
					d, ok := strings.CutPrefix(k, c.policy)
					if !ok || checkKey(d) != nil {
						continue
					}
					h := maphash.String(seed, d)
					if _, dup := seen[h]; dup {
						continue
					}
					seen[h] = struct{}{}
					if !yield(d, nil) {
						return
					}
				}
				cursor = pg.cursor
				if cursor == 0 {
					break
				}
			}
		}
	}
}

// nodes returns the clients that Keys scans: each primary of a Cluster, each
// shard of a Ring, or the client itself.
func (c *Cache) nodes(ctx context.Context) ([]redis.Cmdable, error) {
	var each func(context.Context, func(context.Context, *redis.Client) error) error
	switch cl := c.client.(type) {
	case *redis.ClusterClient:
		each = cl.ForEachMaster
	case *redis.Ring:
		each = cl.ForEachShard
	default:
		return []redis.Cmdable{c.client}, nil
	}
	return call(ctx, c, "listing the nodes", func(ctx context.Context) ([]redis.Cmdable, error) {
		var mu sync.Mutex
		var nodes []redis.Cmdable
		err := each(ctx, func(_ context.Context, cl *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, cl)
			mu.Unlock()
			return nil
		})
		return nodes, err
	})
}

// The lease scripts. A lease's value is its holder's token, a colon and the
// holder's note; each script touches that one key, as a Cluster requires.
var (
	// leaseScript sets KEYS[1] to ARGV[1] (token and colon) for ARGV[2]
	// milliseconds if it is not set, and returns {1}; else it returns {0,
	// the value}.
	leaseScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return {1}
end
return {0, redis.call('GET', KEYS[1])}
`)

	// holdScript sets KEYS[1] to ARGV[1] (token and colon) followed by
	// ARGV[2] (the note) for ARGV[3] milliseconds if its value starts with
	// ARGV[1], and returns 1; else it returns 0.
	holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
	redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
	return 1
end
return 0
`)

	// releaseScript deletes KEYS[1] if its value starts with ARGV[1] (token
	// and colon), and returns how many keys it deleted.
	releaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)
)

// tokenLen is the length of a lease token: 16 random bytes in hex.
const tokenLen = 32

// Lease takes the lease called name for ttl, rounded up to a millisecond, if
// no one holds it, and returns a new random token for Hold and Release. If
// another holds it, Lease returns an empty token and the note that holder
// last set with Hold. Taking the lease and reading the holder's note are one
// step in Redis, so a lease that ends between them is not missed.
func (c *Cache) Lease(ctx context.Context, name string, ttl time.Duration) (token, note string, err error) {
	if err := checkLease(name, ttl); err != nil {
		return "", "", err
	}
	var b [tokenLen / 2]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	k := c.lease + name
	res, err := call(ctx, c, "lease "+k, func(ctx context.Context) ([]any, error) {
		return leaseScript.Run(ctx, c.client, []string{k}, tok+":", millis(ttl)).Slice()
	})
	if err != nil {
		return "", "", err
	}
	if len(res) == 1 && res[0] == int64(1) {
		return tok, "", nil
	}
	if len(res) != 2 || res[0] != int64(0) {
		return "", "", fmt.Errorf("rediscache: lease %s: unexpected reply %v", k, res)
	}
	v, _ := res[1].(string)
	_, note, _ = strings.Cut(v, ":")
	return "", note, nil
}

// Hold sets the note of the lease that token holds and makes the lease last
// ttl, rounded up to a millisecond, from now. If token no longer holds it, Hold
// does nothing and returns nil.
func (c *Cache) Hold(ctx context.Context, name, token, note string, ttl time.Duration) error {
	if err := checkLease(name, ttl); err != nil {
		return err
	}
	if err := checkToken(token); err != nil {
		return err
	}
	k := c.lease + name
	_, err := call(ctx, c, "hold "+k, func(ctx context.Context) (int64, error) {
		return holdScript.Run(ctx, c.client, []string{k}, token+":", note, millis(ttl)).Int64()
	})
	return err
}

// Release ends the lease that token holds. If token no longer holds it,
// Release does nothing and returns nil.
func (c *Cache) Release(ctx context.Context, name, token string) error {
	if err := checkLease(name, time.Millisecond); err != nil {
		return err
	}
	if err := checkToken(token); err != nil {
		return err
	}
	k := c.lease + name
	_, err := call(ctx, c, "release "+k, func(ctx context.Context) (int64, error) {
		return releaseScript.Run(ctx, c.client, []string{k}, token+":").Int64()
	})
	return err
}

// millis is d in whole milliseconds, rounded up, as PX wants.
func millis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// call runs one Redis call, fn, bounded by the Cache's Timeout on top of ctx:
// if fn has not returned by then, call returns without it (fn goes on in its
// goroutine until the client's own timeouts end it), so that a client made
// without ContextTimeoutEnabled is bounded too. While Redis is taken for
// down, call fails at once. A miss (redis.Nil) is returned as it is; other
// errors say what was asked.
func call[T any](ctx context.Context, c *Cache, what string, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if c.client == nil {
		return zero, errNoClient
	}
	if err := c.admit(); err != nil {
		return zero, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(cctx)
		done <- result{v, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-cctx.Done():
		res.err = cctx.Err()
	}
	err := res.err
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		if c.downUntil.Load() != 0 {
			c.downUntil.Store(0)
		}
		return res.v, err
	case ctx.Err() != nil:
		// The caller gave up: that says nothing of Redis.
		return zero, fmt.Errorf("rediscache: %s: %w", what, ctx.Err())
	case isReply(err) && !unavailableReply(err):
		// Redis answered; the trouble is with this call, not with Redis.
		return zero, fmt.Errorf("rediscache: %s: %w", what, err)
	}
	var cause error
	if errors.Is(err, context.DeadlineExceeded) {
		cause = fmt.Errorf("%s: no answer within %v", what, c.timeout)
	} else {
		cause = fmt.Errorf("%s: %w", what, err)
	}
	c.lastErr.Store(&cause)
	c.downUntil.Store(time.Now().Add(c.downFor).UnixNano())
	return zero, fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// admit returns nil if a call may go to Redis: Redis answered last time, or
// it failed more than downFor ago and this call is the first since, which
// tries it again while the others go on failing at once, until it has its
// answer or its Timeout.
func (c *Cache) admit() error {
	for {
		until := c.downUntil.Load()
		if until == 0 {
			return nil
		}
		now := time.Now().UnixNano()
		if now >= until {
			if c.downUntil.CompareAndSwap(until, now+int64(c.timeout+c.downFor)) {
				return nil
			}
			continue
		}
		if p := c.lastErr.Load(); p != nil {
			return fmt.Errorf("%w: not asked again for %v after: %w", ErrUnavailable, c.downFor, *p)
		}
		return ErrUnavailable
	}
}

// isReply reports whether err is an error reply from Redis.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// unavailableReply reports whether the error reply err says that Redis cannot
// serve anything for now, rather than that this call was wrong.
func unavailableReply(err error) bool {
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY "} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// checkKey refuses what no Resolver uses as a key: keys are policy domains
// in lower-case A-labels (letters, digits, dots, hyphens; underscores are
// allowed as DirCache allows them), at most 253 bytes, not starting with a
// dot.
func checkKey(key string) error {
	if key == "" || key[0] == '.' || len(key) > 253 {
		return fmt.Errorf("rediscache: invalid key %q", key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("rediscache: invalid key %q", key)
		}
	}
	return nil
}

// maxLeaseName bounds a lease name: a domain, a slash and a record id (at
// most 32 characters) fit well within it.
const maxLeaseName = 512

func checkLease(name string, ttl time.Duration) error {
	if name == "" || len(name) > maxLeaseName {
		return fmt.Errorf("rediscache: invalid lease name %q", name)
	}
	if ttl <= 0 {
		return fmt.Errorf("rediscache: lease %q: ttl %v is not positive", name, ttl)
	}
	return nil
}

// checkToken refuses a token that Lease did not return: one that, being
// empty or holding a colon, could match another holder's.
func checkToken(token string) error {
	if len(token) != tokenLen {
		return fmt.Errorf("rediscache: invalid lease token %q", token)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("rediscache: invalid lease token %q", token)
		}
	}
	return nil
}

// escapeGlob escapes the characters that SCAN's MATCH treats specially, so
// that a Prefix holding them matches itself only.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
