package mtasts_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// storedCollector returns a collector like newCollector's that keeps its
// state in dir, and the errors its Store met.
func storedCollector(dir string, now func() time.Time) (*mtasts.ReportCollector, func() []error) {
	c := newCollector(now)
	c.Store = mtasts.DirCache(dir)
	var (
		mu   sync.Mutex
		errs []error
	)
	c.OnError = func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	return c, func() []error {
		mu.Lock()
		defer mu.Unlock()
		return append([]error(nil), errs...)
	}
}

// reportsJSON returns the reports as JSON without their ids, which each take
// draws anew.
func reportsJSON(t *testing.T, rs []*mtasts.Report) string {
	t.Helper()
	var out []json.RawMessage
	for _, r := range rs {
		cp := *r
		cp.ReportID = ""
		data, err := cp.JSON()
		require.NoError(t, err)
		out = append(out, data)
	}
	data, err := json.Marshal(out)
	require.NoError(t, err)
	return string(data)
}

// The counts a collector wrote to its Store are those a new collector on the
// same directory reports, as after a restart: every policy, failure detail
// and day is kept. Taking the reports is stored too.
func TestReportCollectorStoreSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	clock := mtaststest.NewClock(day.Add(10 * time.Hour))
	policy, err := mtasts.ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 86400\n"))
	require.NoError(t, err)
	policy.Domain = "example.com"
	sender := netip.MustParseAddr("192.0.2.10")
	noTLS := fmt.Errorf("%w: no", mtasts.ErrNoSTARTTLS)
	results := []mtasts.SessionResult{
		{Policy: policy, MXHost: "mx1.example.com", Time: day.Add(time.Hour)},
		{Policy: policy, MXHost: "mx1.example.com", Time: day.Add(2 * time.Hour)},
		{Policy: policy, Err: noTLS, MXHost: "mx2.backup.example.com", SendingIP: sender, HELO: "mx2", ReceivingIP: netip.MustParseAddr("192.0.2.25"), Time: day.Add(3 * time.Hour)},
		{Domain: "other.example", Err: noTLS, MXHost: "mx.other.example", SendingIP: sender, Time: day.Add(4 * time.Hour)},
		{Domain: "example.com", Time: day.Add(30 * time.Hour)}, // the next day
	}

	first, errs := storedCollector(dir, clock.Now)
	reference := newCollector(clock.Now)
	for _, res := range results {
		require.NoError(t, first.Add(res))
		require.NoError(t, reference.Add(res))
	}
	assert.Empty(t, errs())

	// The first collector is dropped, as by a crash: it is not told to write.
	second, errs := storedCollector(dir, clock.Now)
	clock.Set(day.Add(25 * time.Hour))
	got := second.TakeFinished()
	want := reference.TakeFinished()
	require.Len(t, want, 2)
	assert.JSONEq(t, reportsJSON(t, want), reportsJSON(t, got))
	assert.Equal(t, "mail.sender.example", got[0].Submitter)
	assert.Empty(t, errs())

	// The reports taken are gone from the Store; the next day's count stays.
	third, errs := storedCollector(dir, clock.Now)
	clock.Set(day.Add(49 * time.Hour))
	got = third.TakeFinished()
	want = reference.TakeFinished()
	require.Len(t, want, 1)
	assert.JSONEq(t, reportsJSON(t, want), reportsJSON(t, got))
	assert.Empty(t, errs())
}

// Sessions added from many goroutines at once are all written: the writes
// that concurrent Adds share leave none out.
func TestReportCollectorStoreConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return day.Add(time.Hour) }
	c, errs := storedCollector(dir, now)
	const goroutines, perG = 8, 40
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range perG {
				assert.NoError(t, c.Add(mtasts.SessionResult{Domain: fmt.Sprintf("d%d.example", g%2)}))
			}
		})
	}
	wg.Wait()
	assert.Empty(t, errs())

	restarted, errs := storedCollector(dir, now)
	var total int64
	for _, r := range restarted.TakeAll() {
		total += r.Policies[0].Summary.TotalSuccessfulSessionCount
	}
	assert.Equal(t, int64(goroutines*perG), total)
	assert.Empty(t, errs())
}

// A stored state that cannot be decoded is reported and replaced; counting
// goes on.
func TestReportCollectorStoreCorrupt(t *testing.T) {
	t.Parallel()
	for name, data := range map[string]string{
		"not json":      "{\"v\":1,\"days\":[",
		"other version": `{"v":99,"days":[]}`,
		"bad domain":    `{"v":1,"days":[{"domain":"../x","day":0,"policies":[]}]}`,
		"negative":      `{"v":1,"days":[{"domain":"example.com","day":0,"policies":[{"key":"k","result":{"policy":{"policy-type":"no-policy-found","policy-domain":"example.com"},"summary":{"total-successful-session-count":-1,"total-failure-session-count":0},"failure-details":[]}}]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "_tlsrpt-collector"), []byte(data), 0o600))
			day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
			now := func() time.Time { return day.Add(time.Hour) }
			c, errs := storedCollector(dir, now)
			require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com"}))
			require.Len(t, errs(), 1)
			assert.ErrorIs(t, errs()[0], mtasts.ErrCacheCorrupt)

			restarted, errs := storedCollector(dir, now)
			rs := restarted.TakeAll()
			require.Len(t, rs, 1)
			assert.Equal(t, int64(1), rs[0].Policies[0].Summary.TotalSuccessfulSessionCount)
			assert.Empty(t, errs())
		})
	}
}

// A Store that fails to write is reported; the session is counted in memory
// all the same.
func TestReportCollectorStoreWriteFails(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	c, errs := storedCollector(filepath.Join(file, "dir"), func() time.Time { return day })
	require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com"}))
	require.NotEmpty(t, errs())
	assert.ErrorIs(t, errs()[0], mtasts.ErrCache)
	rs := c.TakeAll()
	require.Len(t, rs, 1)
	assert.Equal(t, int64(1), rs[0].Policies[0].Summary.TotalSuccessfulSessionCount)
}

// The collector's state may share a DirCache with a Resolver: listing the
// directory shows the Resolver no key of the collector's.
func TestReportCollectorStoreSharesDirCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, errs := storedCollector(dir, nil)
	require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com"}))
	require.Empty(t, errs())
	require.FileExists(t, filepath.Join(dir, "_tlsrpt-collector"))
	for key, err := range mtasts.DirCache(dir).Keys(t.Context()) {
		require.NoError(t, err)
		t.Errorf("listed %q", key)
	}
}
