package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// startRedis runs a redis-server of the test's own on a free port of
// 127.0.0.1 and returns its address. Without redis-server it skips the test,
// unless MTASTS_REQUIRE_REDIS=1.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MTASTS_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found, and MTASTS_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not found (install redis-server; MTASTS_REQUIRE_REDIS=1 makes this a failure)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil },
		10*time.Second, 20*time.Millisecond, "redis-server on %s", addr)
	return addr
}

// Two daemons on one Redis: what the first learns, the second serves
// without fetching, even once the policy host is broken.
func TestRedisCacheShared(t *testing.T) {
	addr := startRedis(t)
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	conf := "cache:\n  type: redis\n  options:\n    url: redis://" + addr + "/0\n"

	first := startDaemon(t, ts, conf)
	assert.Equal(t, secureEnforce, postmap(t, inet(first, "postfix"), "enforce.example"))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	n, err := c.Exists(context.Background(), "mtasts:policy:enforce.example").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "the policy is in Redis")

	ts.SetPolicyFault("enforce.example", mtaststest.PolicyServerError)
	second := startDaemon(t, ts, conf)
	assert.Equal(t, secureEnforce, postmap(t, inet(second, "postfix"), "enforce.example"))
	assert.Equal(t, 1, ts.PolicyFetches(), "the second daemon read the policy from Redis")
}
