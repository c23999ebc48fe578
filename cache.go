package mtasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Cache is a durable or shared store under a Resolver's in-memory cache. The
// Resolver writes every newly fetched policy through to it, and reads it once
// for a domain it has nothing in memory for, so that a restarted process keeps
// enforcing what it learned before, even while DNS or HTTPS is down.
//
// Keys are policy domains in lower-case A-labels. Implementations must be safe
// for concurrent use.
type Cache interface {
	// Get returns the data stored under key, or an error wrapping ErrCacheMiss
	// if there is none. Any other error is reported and treated as a miss.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores data under key, replacing what was there. A failure is
	// reported; the in-memory cache still holds the policy, and the Resolver
	// writes it again after its next Put that succeeds, and from Run.
	Put(ctx context.Context, key string, data []byte) error
	// Delete removes key. Removing a key that is absent is not an error.
	Delete(ctx context.Context, key string) error
}

// A CacheLister is a Cache that can list its keys, so that a Resolver can find
// the policies that only its Cache holds, as after a restart, and an operator
// can inspect or purge the store.
type CacheLister interface {
	Cache
	// Keys returns the keys stored, in no particular order. A key stored and
	// left alone for the whole listing is listed once; one that is put or
	// deleted while the listing runs may be listed or not, or listed twice.
	// A listed key may be deleted before the caller reads it, so Get may then
	// return ErrCacheMiss: that is not an error of the listing. Only keys that
	// Get accepts are listed.
	//
	// An error ends the listing: it comes with an empty key as the last pair,
	// and the keys listed before it stand. If ctx is done, the listing ends
	// with ctx.Err(). The caller may stop early by leaving the loop.
	Keys(ctx context.Context) iter.Seq2[string, error]
}

// DirCache is a Cache that keeps one file per domain in a directory, created
// with mode 0700 when first written to. Writes are atomic and durable: a reader
// sees the old file or the new one, never a mix, even if the process or the
// machine dies mid-write, and a Put or Delete that succeeded survives a crash.
//
// Get, Put and Delete return ctx.Err() without touching the directory if ctx
// is done when they are called; once started, they run to the end, so that a
// write is never left half done.
//
// A process that dies mid-Put leaves a temporary file (".tmp-" and random
// digits) behind. DirCache keeps no state to clean up with, so Keys does it:
// it removes the temporary files that it passes and that were last written
// more than an hour before, long after any live Put has renamed its own.
// Whatever lists a DirCache cleans it too; a program can clean it on its own
// with
//
//	for _, err := range d.Keys(ctx) {
//		if err != nil {
//			return err
//		}
//	}
type DirCache string

var _ CacheLister = DirCache("")

// Get reads the file for key.
func (d DirCache) Get(ctx context.Context, key string) ([]byte, error) {
	name, err := d.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrCacheMiss, key)
	}
	return data, err
}

// Put writes data to a temporary file in the directory, syncs it, renames it
// over the file for key and syncs the directory, so that the new name is on
// disk too when Put returns.
func (d DirCache) Put(ctx context.Context, key string, data []byte) error {
	name, err := d.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.mkdir(); err != nil {
		return err
	}
	f, err := os.CreateTemp(string(d), tmpPattern)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), name)
	}
	if werr != nil {
		os.Remove(f.Name())
		return werr
	}
	return syncDir(string(d))
}

// Delete removes the file for key and syncs the directory. It syncs it even
// if the file was already gone: another Delete may have removed it and not yet
// made that durable.
func (d DirCache) Delete(ctx context.Context, key string) error {
	name, err := d.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(string(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Keys lists the files in the directory that are named after a policy domain
// in lower-case A-labels, which is what a Resolver stores, as CacheLister
// describes; it skips other names. A directory that does not exist yet holds
// no keys. On its way, Keys removes the temporary files that a process left
// behind more than tmpMaxAge ago; it ignores failures to do so.
func (d DirCache) Keys(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if d == "" {
			yield("", errNoDir)
			return
		}
		if err := ctx.Err(); err != nil {
			yield("", err)
			return
		}
		f, err := os.Open(string(d))
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			yield("", err)
			return
		}
		defer f.Close()
		now := time.Now()
		for {
			entries, err := f.ReadDir(256)
			for _, e := range entries {
				if err := ctx.Err(); err != nil {
					yield("", err)
					return
				}
				name := e.Name()
				if strings.HasPrefix(name, tmpPrefix) {
					d.removeStale(e, now)
					continue
				}
				if !e.Type().IsRegular() || !isNormalDomain(name) {
					continue
				}
				if !yield(name, nil) {
					return
				}
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				yield("", err)
				return
			}
		}
	}
}

// tmpMaxAge is how long after its last write a temporary file is taken for
// one that a dead process left behind. A Put renames its file right after
// writing and syncing it, well within that.
const tmpMaxAge = time.Hour

// removeStale removes the temporary file e if it was last written more than
// tmpMaxAge before now, or as long after it: a clock that was set back must
// not keep it for ever. Should it remove a live Put's file all the same (a Put
// stalled for that long, or a clock set forward), that Put fails its rename
// and says so; no entry is torn.
func (d DirCache) removeStale(e fs.DirEntry, now time.Time) {
	if !e.Type().IsRegular() {
		return
	}
	fi, err := e.Info()
	if err != nil {
		return // gone: renamed by its Put or removed by another Keys
	}
	if age := now.Sub(fi.ModTime()); age > tmpMaxAge || age < -tmpMaxAge {
		os.Remove(filepath.Join(string(d), e.Name()))
	}
}

// tmpPattern names Put's temporary files. Their leading dot keeps them apart
// from keys, which path refuses to start with a dot.
const tmpPattern = tmpPrefix + "*"

const tmpPrefix = ".tmp-"

// mkdir creates the directory if it does not exist, and syncs the parent of
// each directory it creates, so that the files Put goes on to sync are not
// lost with a directory entry that was never written.
func (d DirCache) mkdir() error {
	var missing []string // the directory and its missing ancestors, deepest first
	for p := filepath.Clean(string(d)); ; p = filepath.Dir(p) {
		_, err := os.Stat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	for _, p := range missing {
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir flushes a directory's entries to disk, where the system can.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // a directory opened for reading cannot be flushed there
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.EINVAL) {
		return nil // the file system has no use for it
	}
	return err
}

var errNoDir = errors.New("mtasts: DirCache has no directory")

// path maps a key to its file. Keys are host names; anything else (a path
// separator, "..", a leading dot) is refused rather than escaped, so a key can
// never name a file outside the directory or a temporary file.
func (d DirCache) path(key string) (string, error) {
	if d == "" {
		return "", errNoDir
	}
	if key == "" || key[0] == '.' || len(key) > 253 {
		return "", fmt.Errorf("mtasts: DirCache: invalid key %q", key)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !isAlnum(c) && c != '.' && c != '-' && c != '_' {
			return "", fmt.Errorf("mtasts: DirCache: invalid key %q", key)
		}
	}
	return filepath.Join(string(d), key), nil
}

// cacheEntry is what a Resolver stores in a Cache: the policy text, so that it
// is parsed by the same grammar on the way back, and what it was fetched under.
type cacheEntry struct {
	Version int       `json:"v"`
	Domain  string    `json:"domain"`
	ID      string    `json:"id"`
	Fetched time.Time `json:"fetched"`
	Policy  string    `json:"policy"`
}

const cacheVersion = 1

func encodePolicy(p *Policy) ([]byte, error) {
	return json.Marshal(cacheEntry{cacheVersion, p.Domain, p.ID, p.Fetched, p.String()})
}

// decodePolicy decodes what encodePolicy wrote for domain. Errors wrap
// ErrCacheCorrupt.
func decodePolicy(domain string, data []byte) (*Policy, error) {
	var e cacheEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCacheCorrupt, domain, err)
	}
	if e.Version != cacheVersion || e.Domain != domain || !validID(e.ID) || e.Fetched.IsZero() {
		return nil, fmt.Errorf("%w: %s: bad version, domain, id or time", ErrCacheCorrupt, domain)
	}
	p, err := ParsePolicy([]byte(e.Policy))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCacheCorrupt, domain, err)
	}
	p.Domain, p.ID, p.Fetched = e.Domain, e.ID, e.Fetched
	return p, nil
}
