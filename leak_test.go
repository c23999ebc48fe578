package mtasts_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// leakWait is how long goroutines are given to end once the work that started
// them is over: generous, since timers, deadlines and closing connections
// take a moment on a loaded machine.
const leakWait = 15 * time.Second

// TestMain fails the run if any goroutine started by the tests is still there
// once they have all returned (and given leakWait to end). A fuzzing run is
// not checked: its coordinator keeps goroutines of its own.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && !fuzzing() {
		if left := lingering(nil, leakWait); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: %d goroutines left behind by the tests:\n\n%s\n", len(left), strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// goroutines returns the stack of each goroutine but the caller's, by id,
// leaving out those of the runtime and of the testing package itself.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := map[string]string{}
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || ignorable(g) { // the first is the caller's own
			continue
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		all[id] = g
	}
	return all
}

func ignorable(stack string) bool {
	for _, s := range []string{
		"testing.(*M).",         // the test binary's main
		"testing.tRunner(",      // a test, finished or paused in t.Parallel
		"testing.runTests",      //
		"testing.(*T).Run(",     //
		"os/signal.",            // the signal loop, when something asked for signals
		"runtime.ensureSigM",    //
		"runtime/trace.Start",   // -trace
		"runtime/pprof.profile", // -cpuprofile
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}

// lingering waits up to wait for every goroutine not in before to end, and
// returns the stacks of those that have not.
func lingering(before map[string]string, wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for delay := time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		var left []string
		for id, g := range goroutines() {
			if _, ok := before[id]; !ok {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			slices.Sort(left)
			return left
		}
		time.Sleep(delay)
	}
}

// Every goroutine a Resolver starts ends once its Lookups have returned and
// the servers and idle connections are closed: lookups that succeed, fail,
// are shared, and are abandoned by their caller in DNS and in the fetch.
// Abandoned work runs on to the Resolver's own limits (two seconds here,
// well within the time the test waits) and then ends. Not parallel, so that
// the goroutines it finds are its own.
func TestLookupLeavesNoGoroutines(t *testing.T) {
	before := goroutines()
	func() {
		s := mtaststest.NewServer()
		defer s.Close()
		r := s.Resolver()
		r.DNSTimeout = 2 * time.Second
		r.FetchTimeout = 2 * time.Second
		r.MinTXTTTL = time.Millisecond
		s.SetTTL(0)
		ctx := context.Background()
		s.Publish("ok.example", "1", fabrikamEnforce)
		s.Publish("fail.example", "1", fabrikamEnforce)
		s.SetPolicyFault("fail.example", mtaststest.PolicyServerError)
		s.Publish("dnsstuck.example", "1", fabrikamEnforce)
		s.SetDNSFault("_mta-sts.dnsstuck.example", mtaststest.DNSSilent)
		s.Publish("httpstuck.example", "1", fabrikamEnforce)
		s.SetPolicyFault("httpstuck.example", mtaststest.PolicyNoResponse)
		s.Handle("mta-sts.slow.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
			}
			rw.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(rw, fabrikamEnforce)
		}))
		s.SetRecord("slow.example", "v=STSv1; id=1;")

		p, err := r.Lookup(ctx, "ok.example")
		require.NoError(t, err)
		require.NotNil(t, p)
		_, err = r.Lookup(ctx, "fail.example")
		assert.ErrorIs(t, err, mtasts.ErrHTTPStatus)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				p, err := r.Lookup(ctx, "slow.example")
				assert.NoError(t, err)
				assert.NotNil(t, p)
			})
		}
		wg.Wait()
		for _, d := range []string{"dnsstuck.example", "httpstuck.example", "slow.example", "ok.example"} {
			time.Sleep(5 * time.Millisecond) // past MinTXTTTL: ask again
			short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			r.Lookup(short, d) // given up before the work is done
			cancel()
		}
	}()
	if left := lingering(before, leakWait); len(left) > 0 {
		t.Errorf("%d goroutines left behind:\n\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
