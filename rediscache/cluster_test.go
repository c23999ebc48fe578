package rediscache_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

// startCluster starts a Redis Cluster of three primaries, each serving a
// third of the hash slots, and returns them.
func startCluster(t *testing.T) []*redisServer {
	t.Helper()
	nodes := make([]*redisServer, 3)
	bus := make([]int, len(nodes)) // the ports of the cluster bus
	for i := range nodes {
		bus[i] = freePort(t)
		nodes[i] = startRedisWith(t, "--cluster-enabled", "yes",
			"--cluster-config-file", "{dir}/nodes-{port}.conf",
			"--cluster-port", strconv.Itoa(bus[i]),
			"--cluster-node-timeout", "5000")
	}
	ctx := context.Background()
	const slots = 16384
	for i, n := range nodes {
		c := n.Client()
		lo, hi := i*slots/len(nodes), (i+1)*slots/len(nodes)-1
		require.NoError(t, c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err())
		if i > 0 {
			require.NoError(t, nodes[0].Client().Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, bus[i]).Err())
		}
	}
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			info, err := n.Client().ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "the cluster did not form")
	return nodes
}

// On a Cluster, each key lives on the primary of its slot: Keys lists every
// primary, and the lease scripts, which touch one key, run where it lives.
func TestCluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.Addr())
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	c := rediscache.New(cc, nil)
	ctx := context.Background()

	var want []string
	for i := range 300 {
		d := fmt.Sprintf("c%03d.example", i)
		want = append(want, d)
		require.Eventually(t, func() bool { // the client may not know the slots yet
			return c.Put(ctx, d, entry(d, "1", time.Now(), 86400)) == nil
		}, 10*time.Second, 50*time.Millisecond)
	}
	for _, n := range nodes {
		size, err := n.Client().DBSize(ctx).Result()
		require.NoError(t, err)
		assert.Greater(t, size, int64(50), "node %s holds too few keys to show that Keys lists every node", n.Addr())
	}
	got := listKeys(t, c)
	sort.Strings(want)
	assert.Equal(t, want, got)

	data, err := c.Get(ctx, "c007.example")
	require.NoError(t, err)
	_, err = mtasts.CachedPolicy("c007.example", data)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, "c007.example"))
	_, err = c.Get(ctx, "c007.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)

	for i := range 20 {
		name := fmt.Sprintf("c%03d.example/1", i)
		tok, _, err := c.Lease(ctx, name, time.Minute)
		require.NoError(t, err)
		require.NotEmpty(t, tok)
		require.NoError(t, c.Hold(ctx, name, tok, "failed", time.Minute))
		other, note, err := c.Lease(ctx, name, time.Minute)
		require.NoError(t, err)
		assert.Empty(t, other)
		assert.Equal(t, "failed", note)
		require.NoError(t, c.Release(ctx, name, tok))
		tok, _, err = c.Lease(ctx, name, time.Minute)
		require.NoError(t, err)
		assert.NotEmpty(t, tok, "Release did not end the lease")
	}
}

// Through Sentinel, the Cache reaches the primary that the Sentinel names.
func TestSentinel(t *testing.T) {
	t.Parallel()
	primary := startRedis(t)
	sentinel := startSentinel(t, primary)
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		MasterName: "mymaster",
		Addrs:      []string{sentinel.Addr()},
	})
	t.Cleanup(func() { client.Close() })
	c := rediscache.New(client, nil)
	ctx := context.Background()

	data := entry("s.example", "1", time.Now(), 86400)
	require.Eventually(t, func() bool { // the Sentinel may not know its primary yet
		return c.Put(ctx, "s.example", data) == nil
	}, 10*time.Second, 50*time.Millisecond)
	raw, err := primary.Client().Get(ctx, "mtasts:policy:s.example").Bytes()
	require.NoError(t, err, "not written to the primary")
	assert.Equal(t, data, raw)
	got, err := c.Get(ctx, "s.example")
	require.NoError(t, err)
	assert.Equal(t, data, got)
	assert.Equal(t, []string{"s.example"}, listKeys(t, c))

	tok, _, err := c.Lease(ctx, "s.example/1", time.Minute)
	require.NoError(t, err)
	require.NotEmpty(t, tok)
	require.NoError(t, c.Hold(ctx, "s.example/1", tok, "failed", time.Minute))
	_, note, err := c.Lease(ctx, "s.example/1", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "failed", note)
	require.NoError(t, c.Release(ctx, "s.example/1", tok))
}
