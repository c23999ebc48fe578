package mtasts

import (
	"context"
	"errors"
	"fmt"
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

// keys collects what c.Keys lists and the error that ended the listing.
func keys(ctx context.Context, c CacheLister) ([]string, error) {
	var got []string
	for key, err := range c.Keys(ctx) {
		if err != nil {
			return got, err
		}
		got = append(got, key)
	}
	return got, nil
}

func TestDirCacheKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	c := DirCache(dir)

	want := []string{"example.com", "mail.example.org", "xn--bcher-kva.example", "a-1.b2.example"}
	for _, key := range want {
		require.NoError(t, c.Put(ctx, key, []byte(key)))
	}
	old := time.Now().Add(-2 * tmpMaxAge)
	write := func(name string, mtime time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("junk"), 0o600))
		require.NoError(t, os.Chtimes(p, mtime, mtime))
	}
	// Temporary files: a crashed Put's, and a live one's.
	write(".tmp-1234", old)
	write(".tmp-5678", time.Now())
	write(".tmp-future", time.Now().Add(2*tmpMaxAge))
	// Names that are not keys, and which Keys must leave alone.
	junk := []string{"README", ".hidden", "under_score.example", "1234", "Example.com", "example.com."}
	for _, name := range junk {
		write(name, old)
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.example"), 0o700))
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".tmp-dir"), 0o700))
	require.NoError(t, os.Chtimes(filepath.Join(dir, ".tmp-dir"), old, old))
	require.NoError(t, os.Symlink("example.com", filepath.Join(dir, "link.example")))

	got, err := keys(ctx, c)
	require.NoError(t, err)
	assert.ElementsMatch(t, want, got)
	for _, key := range got {
		data, err := c.Get(ctx, key)
		require.NoError(t, err, "Get of a listed key")
		assert.Equal(t, key, string(data))
	}

	left := map[string]bool{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		left[e.Name()] = true
	}
	assert.False(t, left[".tmp-1234"], "a temporary file older than tmpMaxAge was kept")
	assert.False(t, left[".tmp-future"], "a temporary file dated after tmpMaxAge from now was kept")
	assert.True(t, left[".tmp-5678"], "a live temporary file was removed")
	assert.True(t, left[".tmp-dir"], "a directory was removed")
	for _, name := range append(junk, "sub.example", "link.example") {
		assert.True(t, left[name], "%s was removed", name)
	}

	// Stopping early is allowed.
	n := 0
	for range c.Keys(ctx) {
		n++
		break
	}
	assert.Equal(t, 1, n)
}

func TestDirCacheKeysMissingDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "not", "yet")
	got, err := keys(context.Background(), DirCache(dir))
	assert.NoError(t, err)
	assert.Empty(t, got)
	_, err = os.Stat(filepath.Join(dir, ".."))
	assert.ErrorIs(t, err, fs.ErrNotExist, "Keys created a directory")
}

func TestDirCacheKeysErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, err := keys(ctx, DirCache(""))
	assert.Error(t, err, "DirCache with no directory")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	got, err := keys(ctx, DirCache(file))
	assert.Error(t, err, "a DirCache that is a file")
	assert.Empty(t, got)
}

// A done ctx ends the listing with ctx.Err(), before it starts or between keys.
func TestDirCacheKeysCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := DirCache(dir)
	for i := range 10 {
		require.NoError(t, c.Put(context.Background(), fmt.Sprintf("k%d.example", i), []byte("x")))
	}
	stale := filepath.Join(dir, ".tmp-1")
	require.NoError(t, os.WriteFile(stale, nil, 0o600))
	old := time.Now().Add(-2 * tmpMaxAge)
	require.NoError(t, os.Chtimes(stale, old, old))

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := keys(cancelled, c)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, got)
	assert.FileExists(t, stale, "Keys cleaned with a done ctx")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var listed []string
	var errs []error
	for key, err := range c.Keys(ctx) {
		if err != nil {
			errs = append(errs, err)
			continue // the listing must end by itself
		}
		listed = append(listed, key)
		cancel()
	}
	assert.Len(t, listed, 1, "keys listed after the cancel")
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], context.Canceled)
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
