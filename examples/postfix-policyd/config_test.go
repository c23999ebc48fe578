package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/rediscache"
)

// TestConfigMigrates reads the files mta-sts-daemon documents, as a site
// that switches would have them.
func TestConfigMigrates(t *testing.T) {
	cfg, warnings, err := parseConfig([]byte(`
host: 127.0.0.1
port: 8461
reuse_port: true
shutdown_timeout: 20
cache_grace: 30
proactive_policy_fetching:
  enabled: true
  interval: 3600
  concurrency_limit: 10
  grace_ratio: 2.0
cache:
  type: internal
  options:
    cache_size: 10000
default_zone:
  strict_testing: false
  timeout: 4
zones:
  myzone:
    strict_testing: true
    timeout: 1.5
    require_sni: false
`))
	require.NoError(t, err)
	assert.Equal(t, []string{"proactive_policy_fetching.grace_ratio: not used; a policy is fetched again every interval, and at most half its max_age after its last fetch"}, warnings)
	assert.Equal(t, "127.0.0.1", cfg.Host)
	assert.Equal(t, 8461, cfg.Port)
	assert.True(t, cfg.ReusePort)
	assert.Equal(t, 20*time.Second, cfg.ShutdownTimeout)
	assert.Equal(t, 30*time.Second, cfg.CacheGrace)
	assert.True(t, cfg.Refresh)
	assert.Equal(t, time.Hour, cfg.RefreshInt)
	assert.Equal(t, 10, cfg.RefreshConc)
	assert.Equal(t, 10000, cfg.CacheSize)
	assert.Equal(t, Zone{RequireSNI: true, Timeout: 4 * time.Second}, cfg.DefaultZ)
	assert.Equal(t, &Zone{StrictTesting: true, Timeout: 1500 * time.Millisecond}, cfg.zone("myzone"))
	assert.Equal(t, &cfg.DefaultZ, cfg.zone("postfix"))
	assert.True(t, cfg.DANE)

	// Defaults: an empty file means what it meant to mta-sts-daemon.
	cfg, warnings, err = parseConfig(nil)
	require.NoError(t, err)
	assert.Empty(t, warnings)
	assert.Equal(t, "127.0.0.1", cfg.Host)
	assert.Equal(t, 8461, cfg.Port)
	assert.Equal(t, 60*time.Second, cfg.CacheGrace)
	assert.Equal(t, "internal", cfg.CacheType)
	assert.True(t, cfg.Refresh)
	assert.False(t, cfg.RefreshSet)

	// The unix-socket example: path and mode, no TCP.
	cfg, _, err = parseConfig([]byte("path: \"/var/run/mta-sts.sock\"\nmode: 0666\ncache:\n  type: sqlite\n  options:\n    filename: \"/var/lib/mta-sts/cache.db\"\n"))
	require.NoError(t, err)
	assert.Equal(t, "/var/run/mta-sts.sock", cfg.Path)
	assert.Equal(t, os.FileMode(0o666), cfg.Mode)
	assert.Empty(t, cfg.Host)
	assert.Equal(t, "sqlite", cfg.CacheType)
	assert.Equal(t, "/var/lib/mta-sts/cache.db", cfg.CacheFile)
}

// TestConfigDebianExamples: every example that Debian's package ships
// parses, without a warning.
func TestConfigDebianExamples(t *testing.T) {
	files, _ := filepath.Glob("/usr/share/doc/postfix-mta-sts-resolver/examples/mta-sts-daemon.yml.*")
	if len(files) == 0 {
		t.Skip("postfix-mta-sts-resolver's examples are not installed")
	}
	for _, f := range files {
		cfg, warnings, err := loadConfig(f)
		require.NoError(t, err, f)
		assert.Empty(t, warnings, f)
		assert.Contains(t, []string{"internal", "sqlite", "redis"}, cfg.CacheType, f)
	}
}

func TestConfigWarnsAndRefuses(t *testing.T) {
	_, warnings, err := parseConfig([]byte("hots: 127.0.0.1\ncache:\n  type: internal\n  options:\n    cache_size: 5\n    size: 7\ndefault_zone:\n  strict: true\nzones:\n  z:\n    timout: 3\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{
		"unknown option cache.options.size: ignored",
		"unknown option default_zone.strict: ignored",
		"unknown option hots: ignored",
		"unknown option zones.z.timout: ignored",
	}, warnings)

	for _, bad := range []string{
		"port: eighty\n",
		"cache:\n  type: memcached\n",
		"cache:\n  type: sqlite\n",
		"default_zone:\n  timeout: soon\n",
		"zones: [a, b]\n",
		"reuse_port: 1\n",
		"shutdown_timeout: -1\n",
		"port: 70000\n",
		"host: [\n",
	} {
		_, _, err := parseConfig([]byte(bad))
		assert.Error(t, err, "%q", bad)
	}
}

func TestNewCache(t *testing.T) {
	log := testLogger(t)
	cfg, warnings, err := parseConfig([]byte("cache:\n  type: redis\n  options:\n    url: redis://127.0.0.1/0\n" +
		"    max_connections: 25\n    socket_timeout: 1.5\n    socket_connect_timeout: 2\n    health_check_interval: 3\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"cache.options.health_check_interval: not used by the redis cache " +
		"(url, max_connections, socket_timeout and socket_connect_timeout are)"}, warnings)
	assert.Equal(t, 25, cfg.RedisPool)
	assert.Equal(t, 1500*time.Millisecond, cfg.RedisIOTimeout)
	assert.Equal(t, 2*time.Second, cfg.RedisDialTimeout)
	c, err := newCache(cfg, log)
	require.NoError(t, err)
	assert.IsType(t, &rediscache.Cache{}, c)

	cfg, _, err = parseConfig([]byte("cache:\n  type: redis\n  options:\n    url: http://127.0.0.1/0\n"))
	require.NoError(t, err)
	_, err = newCache(cfg, log)
	assert.ErrorContains(t, err, "cache.options.url")
	_, err = start(context.Background(), cfg, log, nil)
	assert.Error(t, err, "the daemon does not start")

	cfg, _, err = parseConfig([]byte("cache:\n  type: internal\n"))
	require.NoError(t, err)
	c, err = newCache(cfg, log)
	require.NoError(t, err)
	assert.Nil(t, c, "internal: memory only")
}

// TestRunCommandLine drives the command: -c, the admin listener, inspect
// and purge, and a clean stop.
func TestRunCommandLine(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "mta-sts-daemon.yml")
	require.NoError(t, os.WriteFile(conf, []byte("host: 127.0.0.1\nport: 0\nnameservers: [\"127.0.0.1:9\"]\ndane: false\nmetrics: 127.0.0.1:0\n"), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan int)
	go func() { done <- run(ctx, []string{"-c", conf, "-v", "debug"}, &out, &out) }()
	var admin string
	require.Eventually(t, func() bool {
		admin = findLogged(out.String(), `msg="admin listener" addr=`)
		return admin != ""
	}, 30*time.Second, 10*time.Millisecond)

	var cmdOut syncBuffer
	assert.Equal(t, 0, run(context.Background(), []string{"-c", conf, "-metrics", admin, "inspect", "example.com"}, &cmdOut, &cmdOut))
	assert.Contains(t, cmdOut.String(), "domain: example.com\nmta-sts: nothing held\n")
	assert.Equal(t, 0, run(context.Background(), []string{"-c", conf, "-metrics", admin, "purge", "example.com"}, &cmdOut, &cmdOut))
	assert.Contains(t, cmdOut.String(), "purged example.com\n")
	assert.Equal(t, 1, run(context.Background(), []string{"-c", conf, "-metrics", admin, "inspect", "[192.0.2.1]"}, &cmdOut, &cmdOut))
	assert.Equal(t, 2, run(context.Background(), []string{"-c", conf, "frobnicate", "x"}, &cmdOut, &cmdOut))
	assert.Equal(t, 2, run(context.Background(), []string{"-c", filepath.Join(dir, "missing.yml")}, &cmdOut, &cmdOut))

	cancel()
	assert.Equal(t, 0, <-done)
	assert.Contains(t, out.String(), "msg=stopped")
}

// TestUnixSocketMode: mode sets the socket's permissions, as mta-sts-daemon
// does, and a socket file left by a previous run is replaced.
func TestUnixSocketMode(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, mode := range []os.FileMode{0o600, 0o666} {
		cfg, _, err := parseConfig(fmt.Appendf(nil, "path: %s\nmode: 0%o\ndane: false\n", sock, mode))
		require.NoError(t, err)
		in, err := start(context.Background(), cfg, testLogger(t), nil)
		require.NoError(t, err)
		fi, err := os.Stat(sock)
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm())
		assert.Equal(t, []string{"unix"}, networks(in), "path alone: no TCP listener")
		in.shutdown()
	}
}

func networks(in *instance) []string {
	var out []string
	for _, a := range in.addrs {
		out = append(out, a.Network())
	}
	return out
}

// TestReusePort: with reuse_port, a second daemon can listen on the port of a
// running one (a restart without a gap); without it, it cannot.
func TestReusePort(t *testing.T) {
	log := testLogger(t)
	first, _, err := parseConfig([]byte("host: 127.0.0.1\nport: 0\ndane: false\n"))
	require.NoError(t, err)
	a, err := start(context.Background(), first, log, nil)
	require.NoError(t, err)
	defer a.shutdown()
	port := a.addrs[0].(*net.TCPAddr).Port

	same, _, err := parseConfig(fmt.Appendf(nil, "host: 127.0.0.1\nport: %d\ndane: false\n", port))
	require.NoError(t, err)
	b, err := start(context.Background(), same, log, nil)
	require.NoError(t, err, "reuse_port (the default) shares the port")
	b.shutdown()

	same.ReusePort = false
	_, err = start(context.Background(), same, log, nil)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
}
