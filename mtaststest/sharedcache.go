package mtaststest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// A SharedCache is an in-process mtasts.CacheLeaser and mtasts.CacheLister,
// for a test that stands up several Resolvers as the MTAs of a fleet: give each
// the same SharedCache as its Cache. Leases run out on the wall clock, as a
// shared store's do. SetDown makes every call fail, as a store that is
// unreachable does. The zero value is ready to use.
type SharedCache struct {
	mu     sync.Mutex
	data   map[string][]byte
	leases map[string]lease
	down   error
	ops    int
	lists  int
}

type lease struct {
	token, note string
	until       time.Time
}

var _ mtasts.CacheLeaser = (*SharedCache)(nil)
var _ mtasts.CacheLister = (*SharedCache)(nil)

// SetDown makes every call return err from now on, or, with nil, work again.
func (c *SharedCache) SetDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = err
}

// Ops returns how many calls the SharedCache has answered or failed.
func (c *SharedCache) Ops() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops
}

// Listings returns how many times Keys has been called.
func (c *SharedCache) Listings() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lists
}

// begin locks c and counts a call, returning the error it fails with, if any.
func (c *SharedCache) begin(ctx context.Context) error {
	c.mu.Lock()
	c.ops++
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.down
}

// Get returns a copy of what key holds.
func (c *SharedCache) Get(ctx context.Context, key string) ([]byte, error) {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return nil, err
	}
	data, ok := c.data[key]
	if !ok {
		return nil, fmt.Errorf("%w: %s", mtasts.ErrCacheMiss, key)
	}
	return slices.Clone(data), nil
}

// Put stores a copy of data under key.
func (c *SharedCache) Put(ctx context.Context, key string, data []byte) error {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return err
	}
	if c.data == nil {
		c.data = map[string][]byte{}
	}
	c.data[key] = slices.Clone(data)
	return nil
}

// Delete removes key.
func (c *SharedCache) Delete(ctx context.Context, key string) error {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return err
	}
	delete(c.data, key)
	return nil
}

// Keys lists the keys held when it is called, in sorted order.
func (c *SharedCache) Keys(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		err := c.begin(ctx)
		c.lists++
		keys := slices.Sorted(maps.Keys(c.data))
		c.mu.Unlock()
		if err != nil {
			yield("", err)
			return
		}
		for _, k := range keys {
			if !yield(k, nil) {
				return
			}
		}
	}
}

// Lease takes the lease called name for ttl if no one holds it.
func (c *SharedCache) Lease(ctx context.Context, name string, ttl time.Duration) (token, note string, err error) {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return "", "", err
	}
	now := time.Now()
	if l, ok := c.leases[name]; ok && now.Before(l.until) {
		return "", l.note, nil
	}
	if c.leases == nil {
		c.leases = map[string]lease{}
	}
	b := make([]byte, 16)
	rand.Read(b)
	token = hex.EncodeToString(b)
	c.leases[name] = lease{token: token, until: now.Add(ttl)}
	return token, "", nil
}

// Hold sets the note of the lease that token holds and makes it last ttl
// from now.
func (c *SharedCache) Hold(ctx context.Context, name, token, note string, ttl time.Duration) error {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return err
	}
	if l, ok := c.leases[name]; ok && l.token == token && time.Now().Before(l.until) {
		c.leases[name] = lease{token: token, note: note, until: time.Now().Add(ttl)}
	}
	return nil
}

// Release ends the lease that token holds.
func (c *SharedCache) Release(ctx context.Context, name, token string) error {
	defer c.mu.Unlock()
	if err := c.begin(ctx); err != nil {
		return err
	}
	if l, ok := c.leases[name]; ok && l.token == token {
		delete(c.leases, name)
	}
	return nil
}

// ExpireLeases ends every lease at once, as if their time had run out: a
// test's way past the five minutes that a failed fetch holds its lease.
func (c *SharedCache) ExpireLeases() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.leases)
}
