package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const (
	fabrikamEnforce = "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmx: *.backup.fabrikam.com\nmax_age: 86400\n"
	fabrikamTesting = "version: STSv1\nmode: testing\nmx: mx.fabrikam.com\nmax_age: 86400\n"
	fabrikamNone    = "version: STSv1\nmode: none\nmax_age: 86400\n"
)

// clock is a settable time source for Resolver.Now.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c, now := &clock{}, time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c.t.Store(&now)
	return c
}

func (c *clock) Now() time.Time { return *c.t.Load() }

func (c *clock) Advance(d time.Duration) {
	for {
		old := c.t.Load()
		next := old.Add(d)
		if c.t.CompareAndSwap(old, &next) {
			return
		}
	}
}

// failures records what a Resolver passes to OnError.
type failures struct {
	mu   sync.Mutex
	errs []error
}

func (f *failures) add(domain string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Errorf("%s: %w", domain, err))
}

func (f *failures) list() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errs...)
}

// world is a fake MTA-STS world and a Resolver wired to it, on a test clock.
type world struct {
	*mtaststest.Server
	r     *mtasts.Resolver
	clock *clock
	fails *failures
}

func newWorld(t *testing.T) *world {
	t.Helper()
	s := mtaststest.NewServer()
	t.Cleanup(s.Close)
	w := &world{Server: s, clock: newClock(), fails: &failures{}}
	w.r = w.resolver()
	return w
}

// resolver returns a new Resolver on w, as a restarted process would have.
func (w *world) resolver() *mtasts.Resolver {
	r := w.Resolver()
	r.Now = w.clock.Now
	r.OnError = w.fails.add
	return r
}

func lookup(t *testing.T, r *mtasts.Resolver, domain string) (*mtasts.Policy, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return r.Lookup(ctx, domain)
}

func mustPolicy(t *testing.T, r *mtasts.Resolver, domain string) *mtasts.Policy {
	t.Helper()
	p, err := lookup(t, r, domain)
	require.NoError(t, err, "Lookup(%q)", domain)
	require.NotNil(t, p, "Lookup(%q) = nil policy", domain)
	return p
}

// The classic attack: Contoso sends to fabrikam.com and an attacker rewrites
// fabrikam's MX answer to mx.attacker.com (RFC 8461 §10.1's threat).
func TestFabrikamMXRewritten(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy  string
		deliver bool // to mx.attacker.com
	}{
		{fabrikamEnforce, false},
		{fabrikamTesting, true},
		{fabrikamNone, true},
	} {
		w := newWorld(t)
		w.Publish("fabrikam.com", "20230712120000Z", tc.policy)
		w.SetMX("fabrikam.com", "mx.attacker.com")
		p := mustPolicy(t, w.r, "fabrikam.com")
		assert.Equal(t, "fabrikam.com", p.Domain)
		assert.Equal(t, "20230712120000Z", p.ID)

		mxs, err := w.NetResolver().LookupMX(context.Background(), "fabrikam.com.")
		require.NoError(t, err)
		require.Len(t, mxs, 1)
		mx := strings.TrimSuffix(mxs[0].Host, ".")
		err = p.Validate(mx)
		if tc.deliver {
			assert.NoError(t, err, "mode %s: Validate(%q)", p.Mode, mx)
		} else {
			assert.ErrorIs(t, err, mtasts.ErrMXNotAllowed, "mode %s: Validate(%q)", p.Mode, mx)
			var mxErr *mtasts.MXError
			require.ErrorAs(t, err, &mxErr)
			assert.Equal(t, "mx.attacker.com", mxErr.Host)
			assert.Equal(t, "fabrikam.com", mxErr.Domain)
		}
		// Testing mode delivers, and Match tells the reporter the MX failed.
		assert.False(t, p.Match(mx), "mode %s: Match(%q)", p.Mode, mx)
		assert.NoError(t, p.Validate("mx.fabrikam.com"), "mode %s: the honest MX", p.Mode)
	}
}

func TestNoRecord(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetPolicy("plain.example", fabrikamEnforce) // a policy file alone does not count
	w.SetTXT("_mta-sts.nodata.example")           // the name exists, with no TXT records
	w.SetMX("_mta-sts.nodata.example", "mx.nodata.example")
	w.SetRecord("spf.example", "v=spf1 -all")
	for _, d := range []string{"plain.example", "nodata.example", "spf.example", "absent.example"} {
		p, err := lookup(t, w.r, d)
		assert.Nil(t, p, "Lookup(%q)", d)
		assert.NoError(t, err, "Lookup(%q)", d)
	}
	assert.Zero(t, w.PolicyFetches(), "fetches for domains with no record")
	assert.Empty(t, w.fails.list(), "no record is not a failure to report")
}

// RFC 8461 §3.1: which TXT answers make a record.
func TestRecordShapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		setup   func(w *world)
		policy  bool
		failure error // what OnError must see, if anything
	}{
		{"split strings", func(w *world) {
			w.SetTXT("_mta-sts.d.example", []string{"v=STSv1; ", "id=ab", "c;"})
		}, true, nil},
		{"STS beside SPF", func(w *world) {
			w.SetTXT("_mta-sts.d.example", []string{"v=spf1 -all"}, []string{"v=STSv1; id=1;"})
		}, true, nil},
		{"space before separator", func(w *world) {
			w.SetRecord("d.example", "v=STSv1 ; id=1")
		}, true, nil},
		{"tab separator", func(w *world) { // sent raw, escaped by the DNS decoder
			w.SetTXT("_mta-sts.d.example", []string{"v=STSv1;\tid=1;\tq=a\"b\\c"})
		}, true, nil},
		{"CNAME chain", func(w *world) {
			w.SetCNAME("_mta-sts.d.example", "_mta-sts.hop.example")
			w.SetCNAME("_mta-sts.hop.example", "sts.provider.example")
			w.SetTXT("sts.provider.example", []string{"v=STSv1; id=1;"})
		}, true, nil},
		{"truncated over UDP", func(w *world) {
			var recs [][]string
			for i := range 40 {
				recs = append(recs, []string{fmt.Sprintf("filler-%02d %s", i, strings.Repeat("z", 200))})
			}
			w.SetTXT("_mta-sts.d.example", append(recs, []string{"v=STSv1; id=1;"})...)
		}, true, nil},
		{"two STS records", func(w *world) {
			w.SetTXT("_mta-sts.d.example", []string{"v=STSv1; id=1;"}, []string{"v=STSv1; id=2;"})
		}, false, mtasts.ErrMultipleRecords},
		{"invalid id", func(w *world) {
			w.SetRecord("d.example", "v=STSv1; id=not-valid!;")
		}, false, mtasts.ErrInvalidRecord},
		{"no id", func(w *world) {
			w.SetRecord("d.example", "v=STSv1;")
		}, false, mtasts.ErrInvalidRecord},
		{"lower-case version", func(w *world) {
			w.SetRecord("d.example", "v=stsv1; id=1;")
		}, false, nil},
		{"version 10", func(w *world) {
			w.SetRecord("d.example", "v=STSv10; id=1;")
		}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.SetPolicy("d.example", fabrikamEnforce)
			tc.setup(w)
			p, err := lookup(t, w.r, "d.example")
			assert.NoError(t, err, "a bad record counts as no record")
			if tc.policy {
				assert.NotNil(t, p)
				assert.Equal(t, 1, w.PolicyFetches())
			} else {
				assert.Nil(t, p)
				assert.Zero(t, w.PolicyFetches())
			}
			fails := w.fails.list()
			if tc.failure == nil {
				assert.Empty(t, fails)
			} else if assert.Len(t, fails, 1) {
				assert.ErrorIs(t, fails[0], tc.failure)
			}
		})
	}
}

// RFC 8461 §3.4: the policy domain is the recipient domain itself.
func TestNoParentWalk(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("example.com", "1", fabrikamEnforce)
	p, err := lookup(t, w.r, "mail.example.com")
	assert.Nil(t, p)
	assert.NoError(t, err)
	assert.Equal(t, []string{"_mta-sts.mail.example.com TXT"}, w.QueryLog())
}

func TestDomainForms(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("example.com", "1", fabrikamEnforce)
	w.Publish("xn--bcher-kva.example", "1", fabrikamEnforce)
	for _, d := range []string{"example.com", "Example.COM.", "bücher.example", "BÜCHER.example.", "xn--bcher-kva.example"} {
		p := mustPolicy(t, w.r, d)
		assert.NotEmpty(t, p.Domain)
		assert.Equal(t, strings.ToLower(p.Domain), p.Domain, "Lookup(%q).Domain", d)
	}
	assert.Equal(t, 2, w.PolicyFetches(), "one fetch per policy domain, whatever the spelling")

	before := w.DNSQueries()
	for _, bad := range []string{"", ".", "..", "a..b", ".example.com", "[192.0.2.1]", "192.0.2.1", "2001:db8::1",
		"[IPv6:2001:db8::1]", "exa mple.com", "a_b.example", "-a.example", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 25) + "com", "example.com..", "\xff.example"} {
		p, err := lookup(t, w.r, bad)
		assert.Nil(t, p, "Lookup(%q)", bad)
		assert.ErrorIs(t, err, mtasts.ErrInvalidDomain, "Lookup(%q)", bad)
	}
	assert.Equal(t, before, w.DNSQueries(), "DNS queries for malformed domains")
}

func TestDNSFailures(t *testing.T) {
	t.Parallel()
	for _, f := range []mtaststest.DNSFault{mtaststest.DNSServFail, mtaststest.DNSRefused, mtaststest.DNSSilent} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.r.DNSTimeout = 200 * time.Millisecond
			w.Publish("d.example", "1", fabrikamEnforce)
			w.SetDNSFault("_mta-sts.d.example", f)
			p, err := lookup(t, w.r, "d.example")
			assert.Nil(t, p)
			assert.ErrorIs(t, err, mtasts.ErrDNSTemporary)
			assert.Zero(t, w.PolicyFetches())
			if fails := w.fails.list(); assert.Len(t, fails, 1) {
				assert.ErrorIs(t, fails[0], mtasts.ErrDNSTemporary)
			}
		})
	}
}

// Name servers are tried in order; one that does not answer within a second
// is passed over for the next, well within DNSTimeout.
func TestNameserverFallback(t *testing.T) {
	t.Parallel()
	dead, err := net.ListenPacket("udp", "127.0.0.1:0") // takes queries, never answers
	require.NoError(t, err)
	defer dead.Close()
	w := newWorld(t)
	w.r.DNSTimeout = time.Minute
	w.r.Nameservers = append([]string{dead.LocalAddr().String()}, w.r.Nameservers...)
	w.Publish("d.example", "1", fabrikamEnforce)
	start := time.Now()
	mustPolicy(t, w.r, "d.example")
	assert.Less(t, time.Since(start), 30*time.Second, "the dead server waited for")
}

// RFC 8461 §3.3: what a policy fetch must refuse, with nothing cached.
func TestFetchFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		fault mtaststest.PolicyFault
		want  []error
	}{
		{mtaststest.PolicyNotFound, []error{mtasts.ErrPolicyFetch, mtasts.ErrHTTPStatus}},
		{mtaststest.PolicyServerError, []error{mtasts.ErrPolicyFetch, mtasts.ErrHTTPStatus}},
		{mtaststest.PolicyRedirect, []error{mtasts.ErrPolicyFetch, mtasts.ErrRedirect}},
		{mtaststest.PolicyWrongMediaType, []error{mtasts.ErrPolicyFetch, mtasts.ErrMediaType}},
		{mtaststest.PolicyTooLarge, []error{mtasts.ErrPolicyFetch, mtasts.ErrPolicyTooLarge}},
		{mtaststest.PolicyNoResponse, []error{mtasts.ErrPolicyFetch, mtasts.ErrFetchTimeout}},
		{mtaststest.PolicyCertExpired, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
		{mtaststest.PolicyCertWrongName, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
		{mtaststest.PolicyCertUntrusted, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
	}
	for _, tc := range cases {
		t.Run(tc.fault.String(), func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.useDefaultClient()
			w.r.FetchTimeout = time.Second // for PolicyNoResponse
			w.Publish("d.example", "1", fabrikamEnforce)
			w.SetPolicyFault("d.example", tc.fault)
			p, err := lookup(t, w.r, "d.example")
			assert.Nil(t, p)
			for _, want := range tc.want {
				assert.ErrorIs(t, err, want)
			}
			if !errors.Is(tc.want[1], mtasts.ErrWebPKI) {
				assert.NotErrorIs(t, err, mtasts.ErrWebPKI)
			}
			if fails := w.fails.list(); assert.Len(t, fails, 1) {
				assert.ErrorIs(t, fails[0], tc.want[1])
			}
			assert.Zero(t, w.Requests(mtaststest.RedirectHost("d.example")), "redirect followed")
		})
	}
}

// useDefaultClient makes w's Resolver fetch as one without an HTTPClient does,
// with its limits, but connecting to w's HTTPS server and trusting its
// authority.
func (w *world) useDefaultClient() {
	w.r.HTTPClient = mtasts.DefaultClient(func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", w.HTTPSAddr())
	}, w.RootCAs())
}

func TestInvalidPolicy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", "version: STSv1\nmode: enforce\nmax_age: 86400\n")
	p, err := lookup(t, w.r, "d.example")
	assert.Nil(t, p)
	assert.ErrorIs(t, err, mtasts.ErrInvalidPolicy)
	assert.NotErrorIs(t, err, mtasts.ErrPolicyFetch)
}

// Redirects are refused even when the caller's client would follow them.
func TestRedirectNotFollowedByCallersClient(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	w.Handle("mta-sts.d.example", http.RedirectHandler("https://mta-sts.other.example/.well-known/mta-sts.txt", http.StatusMovedPermanently))
	w.Publish("other.example", "1", fabrikamEnforce)
	client := w.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return nil }
	w.r.HTTPClient = client
	p, err := lookup(t, w.r, "d.example")
	assert.Nil(t, p)
	assert.ErrorIs(t, err, mtasts.ErrRedirect)
	assert.Zero(t, w.Requests("mta-sts.other.example"))
}

func TestMediaTypeParametersIgnored(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetRecord("d.example", "v=STSv1; id=1;")
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8; format=flowed")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	mustPolicy(t, w.r, "d.example")
}

// The fetch sends what RFC 8461 §3.3 asks: GET of the well-known path, with
// SNI for the policy host. The default client asks over HTTP/1.1, for no
// compression, and closes the connection after the response.
func TestFetchRequest(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.useDefaultClient()
	w.SetRecord("d.example", "v=STSv1; id=1;")
	var got struct {
		method, path, sni, host, proto, encoding string
		tls                                      uint16
		close                                    bool
	}
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.host = r.Method, r.URL.Path, r.Host
		got.proto, got.encoding, got.close = r.Proto, r.Header.Get("Accept-Encoding"), r.Close
		if r.TLS != nil {
			got.sni, got.tls = r.TLS.ServerName, r.TLS.Version
		}
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	mustPolicy(t, w.r, "d.example")
	assert.Equal(t, http.MethodGet, got.method)
	assert.Equal(t, "/.well-known/mta-sts.txt", got.path)
	assert.Equal(t, "mta-sts.d.example", got.host)
	assert.Equal(t, "mta-sts.d.example", got.sni)
	assert.GreaterOrEqual(t, got.tls, uint16(0x0303), "TLS 1.2 or later")
	assert.Equal(t, "HTTP/1.1", got.proto)
	assert.Empty(t, got.encoding, "Accept-Encoding")
	assert.True(t, got.close, "Connection: close")
}

// A policy host may send an informational response, such as 103 Early Hints
// with its Link headers, before the 200 with the policy; the fetch reads past
// it.
func TestEarlyHintsBeforePolicy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.useDefaultClient()
	w.SetRecord("d.example", "v=STSv1; id=1;")
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Link", "</style.css>; rel=preload; as=style")
		rw.WriteHeader(http.StatusEarlyHints)
		rw.Header().Del("Link")
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	p := mustPolicy(t, w.r, "d.example")
	assert.Equal(t, "1", p.ID)
	assert.Empty(t, w.fails.list())
}

// RFC 8461 §7.2: a policy host that offers less than TLS 1.2 is refused, by
// the default client in the handshake, and by fetch itself when a caller's
// client accepts it.
func TestPolicyHostBelowTLS12(t *testing.T) {
	t.Parallel()
	ca := mtaststest.NewCA()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(rw, fabrikamEnforce)
		}),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{ca.Issue("mta-sts.d.example", mtaststest.CertGood)},
			MinVersion:   tls.VersionTLS10,
			MaxVersion:   tls.VersionTLS11,
		},
		ErrorLog: log.New(io.Discard, "", 0), // the refused handshakes
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	t.Run("default client", func(t *testing.T) {
		w := newWorld(t)
		w.SetRecord("d.example", "v=STSv1; id=1;")
		w.r.HTTPClient = mtasts.DefaultClient(dial, ca.Pool())
		p, err := lookup(t, w.r, "d.example")
		assert.Nil(t, p)
		assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
		assert.ErrorContains(t, err, "protocol version")
	})
	t.Run("caller's client", func(t *testing.T) {
		w := newWorld(t)
		w.SetRecord("d.example", "v=STSv1; id=1;")
		tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS10}}
		defer tr.CloseIdleConnections()
		w.r.HTTPClient = &http.Client{Transport: tr}
		p, err := lookup(t, w.r, "d.example")
		assert.Nil(t, p)
		assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
		assert.ErrorIs(t, err, mtasts.ErrWebPKI)
		assert.ErrorContains(t, err, "not TLS 1.2 or later")
	})
}

// A caller's deadline ends its wait, not the work: the query or fetch runs
// to the Resolver's own limits, and its failure is recorded and reported once.
func TestContextDeadline(t *testing.T) {
	t.Parallel()
	for _, stuck := range []string{"dns", "https"} {
		t.Run(stuck, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.r.DNSTimeout = time.Second
			w.r.FetchTimeout = time.Second
			w.Publish("d.example", "1", fabrikamEnforce)
			if stuck == "dns" {
				w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSSilent)
			} else {
				w.SetPolicyFault("d.example", mtaststest.PolicyNoResponse)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			p, err := w.r.Lookup(ctx, "d.example")
			assert.Nil(t, p)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			if stuck == "dns" {
				assert.ErrorIs(t, err, mtasts.ErrDNSTemporary)
			} else {
				assert.ErrorIs(t, err, mtasts.ErrFetchTimeout)
				assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
			}
			assert.Less(t, time.Since(start), 900*time.Millisecond, "Lookup overran its deadline")

			// The work goes on to its own limit and reports its failure.
			require.Eventually(t, func() bool { return len(w.fails.list()) > 0 }, 10*time.Second, 10*time.Millisecond,
				"the abandoned work reported nothing")
			fails := w.fails.list()
			require.Len(t, fails, 1)
			if stuck == "dns" {
				assert.ErrorIs(t, fails[0], mtasts.ErrDNSTemporary)
			} else {
				assert.ErrorIs(t, fails[0], mtasts.ErrFetchTimeout)
				// The failed id waits five minutes before it is fetched again.
				_, err := lookup(t, w.r, "d.example")
				assert.ErrorIs(t, err, mtasts.ErrFetchTimeout)
				assert.Equal(t, 1, w.PolicyFetches())
				w.SetPolicyFault("d.example", mtaststest.PolicyOK)
				w.clock.Advance(5 * time.Minute)
			}
			if stuck == "dns" {
				w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSOK)
				w.clock.Advance(mtasts.DefaultMinTXTTTL)
			}
			mustPolicy(t, w.r, "d.example")
		})
	}
}

// A policy host made slower than every caller's deadline is no downgrade:
// the one fetch the callers share completes and its policy is cached.
func TestSlowPolicyHostStillLearned(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Handle("mta-sts.slow.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	w.SetRecord("slow.example", "v=STSv1; id=1;")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			p, err := w.r.Lookup(ctx, "slow.example")
			assert.Nil(t, p)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		p, _ := w.r.Lookup(ctx, "slow.example")
		return p != nil
	}, 10*time.Second, 20*time.Millisecond, "the slow host's policy was never learned")
	assert.Equal(t, 1, w.Requests("mta-sts.slow.example"), "fetches")
	assert.Empty(t, w.fails.list())
}

func TestCachedBySameID(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	first := mustPolicy(t, w.r, "d.example")
	for range 23 {
		w.clock.Advance(time.Hour)
		assert.Same(t, first, mustPolicy(t, w.r, "d.example"))
	}
	assert.Equal(t, 1, w.PolicyFetches(), "fetches for an unchanged id within max_age")
	assert.Greater(t, w.DNSQueries(), 20, "the TXT record is asked again after its TTL")

	// Past max_age the policy is fetched again, even with the same id.
	w.clock.Advance(2 * time.Hour)
	again := mustPolicy(t, w.r, "d.example")
	assert.NotSame(t, first, again)
	assert.Equal(t, 2, w.PolicyFetches())
}

// Within the TXT record's TTL Lookup asks DNS nothing; after it, once.
func TestSteadyStateAsksNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	require.Equal(t, 1, w.DNSQueries())
	for range 290 {
		w.clock.Advance(time.Second)
		mustPolicy(t, w.r, "d.example")
	}
	assert.Equal(t, 1, w.DNSQueries(), "queries within the 300 s TTL")
	w.clock.Advance(11 * time.Second)
	mustPolicy(t, w.r, "d.example")
	assert.Equal(t, 2, w.DNSQueries(), "queries once the TTL has passed")
}

// A TTL of zero does not mean a query per message: MinTXTTTL holds the answer.
func TestMinTXTTTL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		min, step time.Duration
		queries   int
	}{
		{0, 10 * time.Second, 2},               // DefaultMinTXTTTL: one minute
		{5 * time.Minute, 30 * time.Second, 1}, // configured
	} {
		w := newWorld(t)
		w.SetTTL(0)
		w.r.MinTXTTTL = tc.min
		w.Publish("d.example", "1", fabrikamEnforce)
		w.SetRecord("none.example", "v=spf1") // negative answers too
		for range 10 {
			mustPolicy(t, w.r, "d.example")
			p, err := lookup(t, w.r, "none.example")
			require.Nil(t, p)
			require.NoError(t, err)
			w.clock.Advance(tc.step)
		}
		assert.Equal(t, tc.queries, w.DNSQueriesFor("_mta-sts.d.example"), "MinTXTTTL %v", tc.min)
		assert.Equal(t, tc.queries, w.DNSQueriesFor("_mta-sts.none.example"), "MinTXTTTL %v, negative", tc.min)
	}
}

// With the real clock (Now nil) the in-memory answer goes stale on time too.
func TestRealClockStaleness(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.SetTTL(0)
	s.Publish("d.example", "1", fabrikamEnforce)
	r := s.Resolver()
	r.MinTXTTTL = 100 * time.Millisecond
	mustPolicy(t, r, "d.example")
	mustPolicy(t, r, "d.example")
	assert.Equal(t, 1, s.DNSQueries(), "queries within MinTXTTTL")
	deadline := time.Now().Add(10 * time.Second)
	for s.DNSQueries() == 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		mustPolicy(t, r, "d.example")
	}
	assert.Equal(t, 2, s.DNSQueries(), "queries once MinTXTTTL had passed")
	assert.Equal(t, 1, s.PolicyFetches())

	// max_age bounds the in-memory answer as well.
	s.SetTTL(3600)
	s.Publish("short.example", "1", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n")
	mustPolicy(t, r, "short.example")
	time.Sleep(1100 * time.Millisecond)
	mustPolicy(t, r, "short.example")
	assert.Equal(t, 2, s.PolicyFetchesFor("short.example"), "fetches once max_age had passed")
}

func TestNewIDRefetches(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	assert.Equal(t, mtasts.ModeEnforce, mustPolicy(t, w.r, "d.example").Mode)
	w.Publish("d.example", "2", fabrikamTesting)
	w.clock.Advance(10 * time.Minute)
	p := mustPolicy(t, w.r, "d.example")
	assert.Equal(t, mtasts.ModeTesting, p.Mode)
	assert.Equal(t, "2", p.ID)
	assert.Equal(t, 2, w.PolicyFetches())
}

// RFC 8461 §3.1, §3.3 and §10.2: an attacker who removes the record, breaks
// DNS, or announces a new id and blocks its fetch, cannot drop a cached,
// unexpired policy. Each failure still reaches OnError.
func TestCachedPolicySurvives(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		attack func(w *world)
		report error // what OnError must see; nil for none
	}{
		{"record removed", func(w *world) { w.Unpublish("d.example") }, nil},
		{"record made invalid", func(w *world) { w.SetRecord("d.example", "v=STSv1; id=;") }, mtasts.ErrInvalidRecord},
		{"record duplicated", func(w *world) {
			w.SetTXT("_mta-sts.d.example", []string{"v=STSv1; id=1;"}, []string{"v=STSv1; id=2;"})
		}, mtasts.ErrMultipleRecords},
		{"SERVFAIL", func(w *world) { w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSServFail) }, mtasts.ErrDNSTemporary},
		{"REFUSED", func(w *world) { w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSRefused) }, mtasts.ErrDNSTemporary},
		{"DNS silent", func(w *world) { w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSSilent) }, mtasts.ErrDNSTemporary},
		{"new id, 404", func(w *world) {
			w.SetRecord("d.example", "v=STSv1; id=2;")
			w.SetPolicyFault("d.example", mtaststest.PolicyNotFound)
		}, mtasts.ErrHTTPStatus},
		{"new id, untrusted certificate", func(w *world) {
			w.Publish("d.example", "2", fabrikamNone)
			w.SetPolicyFault("d.example", mtaststest.PolicyCertUntrusted)
		}, mtasts.ErrWebPKI},
		{"new id, redirect", func(w *world) {
			w.Publish("d.example", "2", fabrikamNone)
			w.SetPolicyFault("d.example", mtaststest.PolicyRedirect)
		}, mtasts.ErrRedirect},
		{"new id, invalid policy", func(w *world) {
			w.Publish("d.example", "2", "version: STSv1\nmode: none\n")
		}, mtasts.ErrInvalidPolicy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.r.DNSTimeout = 200 * time.Millisecond
			w.Publish("d.example", "1", fabrikamEnforce)
			mustPolicy(t, w.r, "d.example")
			tc.attack(w)
			for range 3 {
				w.clock.Advance(2 * time.Hour)
				p := mustPolicy(t, w.r, "d.example")
				assert.ErrorIs(t, p.Validate("mx.attacker.com"), mtasts.ErrMXNotAllowed)
			}
			fails := w.fails.list()
			if tc.report == nil {
				assert.Empty(t, fails)
			} else if assert.NotEmpty(t, fails) {
				for _, err := range fails {
					assert.ErrorIs(t, err, tc.report)
				}
			}
		})
	}
}

func TestCachedPolicyExpires(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 3600\n")
	mustPolicy(t, w.r, "d.example")
	w.Unpublish("d.example")
	w.clock.Advance(3599 * time.Second)
	mustPolicy(t, w.r, "d.example")
	w.clock.Advance(time.Second)
	p, err := lookup(t, w.r, "d.example")
	assert.Nil(t, p, "policy applied past its max_age")
	assert.NoError(t, err)
}

// RFC 8461 §8.3: a fetched "none" policy replaces a cached enforce one.
func TestNoneReplacesEnforce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	w.Publish("d.example", "2", fabrikamNone)
	w.clock.Advance(time.Hour)
	p := mustPolicy(t, w.r, "d.example")
	assert.Equal(t, mtasts.ModeNone, p.Mode)
	assert.NoError(t, p.Validate("mx.attacker.com"))
}

// RFC 8461 §3.3 and §10.3: a failed fetch of an id is not retried for five
// minutes, however many messages arrive; a new id is fetched at once.
func TestFailedFetchBackoff(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetTTL(0)
	w.SetRecord("d.example", "v=STSv1; id=1;") // no policy served: every fetch fails
	for range 30 {
		p, err := lookup(t, w.r, "d.example")
		assert.Nil(t, p)
		assert.ErrorIs(t, err, mtasts.ErrHTTPStatus, "the failure is returned while it lasts")
		w.clock.Advance(9 * time.Second)
	}
	assert.Equal(t, 1, w.PolicyFetches(), "fetches within 270 s of a failure")
	assert.Len(t, w.fails.list(), 1, "one failure, reported once")
	w.clock.Advance(31 * time.Second)
	_, err := lookup(t, w.r, "d.example")
	assert.ErrorIs(t, err, mtasts.ErrHTTPStatus)
	assert.Equal(t, 2, w.PolicyFetches(), "fetches after five minutes")

	w.Publish("d.example", "2", fabrikamEnforce)
	w.clock.Advance(time.Minute)
	mustPolicy(t, w.r, "d.example")
	assert.Equal(t, 3, w.PolicyFetches())
}

// Many senders asking at once for one cold domain share one query and one fetch.
func TestConcurrentColdLookups(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	release := make(chan struct{})
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		<-release // hold the fetch until every caller waits for it
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	const n = 500
	var wg sync.WaitGroup
	policies := make(chan *mtasts.Policy, n)
	for range n {
		wg.Go(func() {
			p, err := lookup(t, w.r, "d.example")
			assert.NoError(t, err)
			policies <- p
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	close(policies)
	first := <-policies
	require.NotNil(t, first)
	for p := range policies {
		assert.Same(t, first, p)
	}
	assert.Equal(t, 1, w.DNSQueries())
	assert.Equal(t, 1, w.Requests("mta-sts.d.example"))
}

// A caller that gives up does not cancel the work for the others waiting.
func TestCallerGivingUpLeavesOthers(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetRecord("d.example", "v=STSv1; id=1;")
	release := make(chan struct{})
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		<-release
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(rw, fabrikamEnforce)
	}))
	patient := make(chan *mtasts.Policy)
	go func() {
		p, _ := lookup(t, w.r, "d.example")
		patient <- p
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p, err := w.r.Lookup(ctx, "d.example")
	assert.Nil(t, p)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	assert.NotNil(t, <-patient)
	assert.Equal(t, 1, w.Requests("mta-sts.d.example"))
}

// The durable cache keeps policies across a restart: a new Resolver on the
// same directory enforces the policy while DNS and HTTPS are down.
func TestDirCacheSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := newWorld(t)
	w.r.Cache = mtasts.DirCache(dir)
	w.Publish("d.example", "1", fabrikamEnforce)
	first := mustPolicy(t, w.r, "d.example")

	w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSServFail)
	w.SetPolicyFault("d.example", mtaststest.PolicyServerError)
	w.clock.Advance(time.Hour)
	r2 := w.resolver()
	r2.Cache = mtasts.DirCache(dir)
	p := mustPolicy(t, r2, "d.example")
	assert.Equal(t, first.String(), p.String())
	assert.Equal(t, first.ID, p.ID)
	assert.True(t, first.Expires().Equal(p.Expires()), "restored policy expires %v, want %v", p.Expires(), first.Expires())
	assert.ErrorIs(t, p.Validate("mx.attacker.com"), mtasts.ErrMXNotAllowed)

	// Past its max_age the restored policy no longer applies.
	w.clock.Advance(24 * time.Hour)
	p, err := lookup(t, r2, "d.example")
	assert.Nil(t, p)
	assert.ErrorIs(t, err, mtasts.ErrDNSTemporary)
}

// The cache is read once per domain, and an unchanged id in DNS means no fetch.
func TestDirCacheSavesFetch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	w.r.Cache = mtasts.DirCache(dir)
	mustPolicy(t, w.r, "d.example")
	r2 := w.resolver()
	r2.Cache = mtasts.DirCache(dir)
	mustPolicy(t, r2, "d.example")
	assert.Equal(t, 1, w.PolicyFetches())
}

func TestCorruptCacheEntry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "d.example"), []byte("{garbage"), 0o600))
	w := newWorld(t)
	w.r.Cache = mtasts.DirCache(dir)
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	if fails := w.fails.list(); assert.Len(t, fails, 1) {
		assert.ErrorIs(t, fails[0], mtasts.ErrCacheCorrupt)
	}
	// The fetched policy replaced the corrupt entry.
	r2 := w.resolver()
	r2.Cache = mtasts.DirCache(dir)
	w.SetDNSFault("_mta-sts.d.example", mtaststest.DNSServFail)
	mustPolicy(t, r2, "d.example")
}

// A cache that fails does not stop Lookup; its failures are reported.
func TestFailingCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	w.r.Cache = mtasts.DirCache(filepath.Join(file, "cache")) // under a file: every write fails
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	fails := w.fails.list()
	require.NotEmpty(t, fails)
	assert.ErrorIs(t, fails[len(fails)-1], mtasts.ErrCache)
	assert.ErrorContains(t, fails[len(fails)-1], "writing d.example")
}

// RFC 8461 §5.1: before failing a message for a policy, check for a new one.
// Refresh asks DNS at once, inside the TXT TTL that Lookup would honour.
func TestRefresh(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.Publish("d.example", "1", fabrikamEnforce)
	mustPolicy(t, w.r, "d.example")
	w.Publish("d.example", "2", fabrikamTesting)
	w.clock.Advance(time.Second)
	assert.Equal(t, mtasts.ModeEnforce, mustPolicy(t, w.r, "d.example").Mode, "Lookup within the TTL")

	ctx := context.Background()
	p, err := w.r.Refresh(ctx, "D.Example.")
	require.NoError(t, err)
	require.NotNil(t, p)
	assert.Equal(t, mtasts.ModeTesting, p.Mode, "Refresh")
	assert.Equal(t, mtasts.ModeTesting, mustPolicy(t, w.r, "d.example").Mode, "Lookup after Refresh")
	assert.Equal(t, 2, w.DNSQueries())

	// An unchanged id: a query, no fetch.
	_, err = w.r.Refresh(ctx, "d.example")
	require.NoError(t, err)
	assert.Equal(t, 3, w.DNSQueries())
	assert.Equal(t, 2, w.PolicyFetches())

	_, err = w.r.Refresh(ctx, "[192.0.2.1]")
	assert.ErrorIs(t, err, mtasts.ErrInvalidDomain)
}

// A TXT answer is kept at most an hour, so that a new id is noticed; a TTL
// with the top bit set counts as zero (RFC 2181 §8), so MinTXTTTL holds it.
func TestTXTTTLBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ttl  uint32
		keep time.Duration
	}{
		{7 * 86400, time.Hour},
		{1<<31 + 600, mtasts.DefaultMinTXTTTL},
	} {
		w := newWorld(t)
		w.SetTTL(tc.ttl)
		w.Publish("d.example", "1", fabrikamEnforce)
		w.SetRecord("none.example", "v=spf1")
		for _, d := range []string{"d.example", "none.example"} {
			_, err := lookup(t, w.r, d)
			require.NoError(t, err)
		}
		w.clock.Advance(tc.keep - time.Second)
		for _, d := range []string{"d.example", "none.example"} {
			_, err := lookup(t, w.r, d)
			require.NoError(t, err)
		}
		assert.Equal(t, 2, w.DNSQueries(), "TTL %d: queries before %v", tc.ttl, tc.keep)
		w.clock.Advance(time.Second)
		for _, d := range []string{"d.example", "none.example"} {
			_, err := lookup(t, w.r, d)
			require.NoError(t, err)
		}
		assert.Equal(t, 4, w.DNSQueries(), "TTL %d: queries at %v", tc.ttl, tc.keep)
	}
}
