package mtasts

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDirCacheRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "sub", "cache")
	c := DirCache(dir)

	_, err := c.Get(ctx, "example.com")
	assert.ErrorIs(t, err, ErrCacheMiss, "Get before any Put")

	require.NoError(t, c.Put(ctx, "example.com", []byte("one")))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "directory mode")

	require.NoError(t, c.Put(ctx, "example.com", []byte("two")))
	got, err := c.Get(ctx, "example.com")
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))

	// Writes go through a temporary file that is renamed; none is left behind.
	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, names, 1)
	assert.Equal(t, "example.com", names[0].Name())

	require.NoError(t, c.Delete(ctx, "example.com"))
	require.NoError(t, c.Delete(ctx, "example.com"), "deleting an absent key")
	_, err = c.Get(ctx, "example.com")
	assert.ErrorIs(t, err, ErrCacheMiss, "Get after Delete")
}

func TestDirCacheRefusesUnsafeKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	c := DirCache(filepath.Join(dir, "cache"))
	for _, key := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".tmp-1", "a b", "x\x00y"} {
		t.Run(key, func(t *testing.T) {
			assert.Error(t, c.Put(ctx, key, []byte("x")), "Put(%q)", key)
			_, err := c.Get(ctx, key)
			assert.Error(t, err, "Get(%q)", key)
			assert.False(t, errors.Is(err, ErrCacheMiss), "Get(%q) = %v, want a refusal, not a miss", key, err)
			assert.Error(t, c.Delete(ctx, key), "Delete(%q)", key)
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.Equal(t, "cache", e.Name(), "file written outside the cache directory")
	}
	_, err = DirCache("").Get(ctx, "example.com")
	assert.Error(t, err, "DirCache with no directory")
}

// A done ctx stops Get, Put and Delete before they touch the directory.
func TestDirCacheCancelled(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	missing := DirCache(filepath.Join(t.TempDir(), "cache"))
	assert.ErrorIs(t, missing.Put(cancelled, "example.com", []byte("x")), context.Canceled, "Put")
	_, err := os.Stat(string(missing))
	assert.ErrorIs(t, err, fs.ErrNotExist, "Put created the directory")

	dir := t.TempDir()
	c := DirCache(dir)
	require.NoError(t, c.Put(context.Background(), "example.com", []byte("one")))
	assert.ErrorIs(t, c.Put(cancelled, "example.com", []byte("two")), context.Canceled, "Put")
	data, err := c.Get(cancelled, "example.com")
	assert.ErrorIs(t, err, context.Canceled, "Get")
	assert.Nil(t, data, "Get")
	assert.ErrorIs(t, c.Delete(cancelled, "example.com"), context.Canceled, "Delete")

	names, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, names, 1, "files in the directory")
	assert.Equal(t, "example.com", names[0].Name())
	data, err = os.ReadFile(filepath.Join(dir, "example.com"))
	require.NoError(t, err)
	assert.Equal(t, "one", string(data), "the file after a cancelled Put and Delete")
}

func TestCacheEntryRoundTrip(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.backup.example.com\nmax_age: 86400\nx-note: hello world\n"))
	require.NoError(t, err)
	p.Domain, p.ID, p.Fetched = "example.com", "20240101T000000", time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	data, err := encodePolicy(p)
	require.NoError(t, err)
	got, err := decodePolicy("example.com", data)
	require.NoError(t, err)
	assert.Equal(t, p.String(), got.String())
	assert.Equal(t, p.Domain, got.Domain)
	assert.Equal(t, p.ID, got.ID)
	assert.True(t, p.Fetched.Equal(got.Fetched), "Fetched = %v, want %v", got.Fetched, p.Fetched)
	assert.True(t, p.Expires().Equal(got.Expires()), "Expires = %v, want %v", got.Expires(), p.Expires())

	_, err = decodePolicy("other.example", data)
	assert.ErrorIs(t, err, ErrCacheCorrupt, "entry read under another domain")
}

func TestCacheEntryCorrupt(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"empty":          "",
		"not JSON":       "version: STSv1\n",
		"truncated":      `{"v":1,"domain":"example.com","id":"1","fetch`,
		"wrong version":  `{"v":2,"domain":"example.com","id":"1","fetched":"2026-01-01T00:00:00Z","policy":"version: STSv1\nmode: none\nmax_age: 1\n"}`,
		"bad id":         `{"v":1,"domain":"example.com","id":"a-b","fetched":"2026-01-01T00:00:00Z","policy":"version: STSv1\nmode: none\nmax_age: 1\n"}`,
		"no time":        `{"v":1,"domain":"example.com","id":"1","policy":"version: STSv1\nmode: none\nmax_age: 1\n"}`,
		"invalid policy": `{"v":1,"domain":"example.com","id":"1","fetched":"2026-01-01T00:00:00Z","policy":"mode: enforce\n"}`,
		"binary":         "\x00\xff\xfe{",
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := decodePolicy("example.com", []byte(data))
			assert.Nil(t, p)
			assert.ErrorIs(t, err, ErrCacheCorrupt, "decodePolicy(%q)", data)
		})
	}
}
