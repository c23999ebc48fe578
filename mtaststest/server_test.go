package mtaststest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
)

func TestCounters(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.Publish("example.com", "1", testPolicy)
	s.Publish("other.example", "1", testPolicy)
	c := s.Client()
	ctx := t.Context()

	query(t, s, "_mta-sts.example.com", dns.TypeTXT)
	query(t, s, "_MTA-STS.Example.com", dns.TypeTXT)
	query(t, s, "example.com", dns.TypeMX)
	query(t, s, "nothing.example", dns.TypeA)
	for _, url := range []string{
		policyURL("example.com"),
		policyURL("example.com"),
		policyURL("other.example"),
		"https://mta-sts.example.com/favicon.ico",
	} {
		_, _, err := get(ctx, c, url)
		require.NoError(t, err)
	}

	assert.Equal(t, 4, s.DNSQueries(), "DNSQueries")
	assert.Equal(t, 2, s.DNSQueriesFor("_mta-sts.example.com."), "DNSQueriesFor the record")
	assert.Equal(t, 1, s.DNSQueriesFor("EXAMPLE.com"), "DNSQueriesFor the domain")
	assert.Equal(t, 0, s.DNSQueriesFor("never.example"), "DNSQueriesFor a name not asked")
	assert.Equal(t, []string{
		"_mta-sts.example.com TXT",
		"_mta-sts.example.com TXT",
		"example.com MX",
		"nothing.example A",
	}, s.QueryLog())
	assert.Equal(t, 3, s.PolicyFetches(), "PolicyFetches")
	assert.Equal(t, 2, s.PolicyFetchesFor("example.com"), "PolicyFetchesFor example.com")
	assert.Equal(t, 1, s.PolicyFetchesFor("Other.Example."), "PolicyFetchesFor other.example")
	assert.Equal(t, 3, s.Requests("mta-sts.example.com"), "Requests, any path")

	s.ResetCounters()
	assert.Zero(t, s.DNSQueries())
	assert.Zero(t, s.DNSQueriesFor("_mta-sts.example.com"))
	assert.Empty(t, s.QueryLog())
	assert.Zero(t, s.PolicyFetches())
	assert.Zero(t, s.PolicyFetchesFor("example.com"))
	assert.Zero(t, s.Requests("mta-sts.example.com"))
}

func TestCountersTruncationRetry(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	var records [][]string
	for i := 0; i < 10; i++ {
		records = append(records, []string{fmt.Sprintf("filler %d %0200d", i, i)})
	}
	records = append(records, []string{"v=STSv1; id=big;"})
	s.SetTXT("_mta-sts.example.com", records...)
	s.SetPolicy("example.com", testPolicy)

	p, err := s.Resolver().Lookup(t.Context(), "example.com")
	require.NoError(t, err)
	require.NotNil(t, p, "the record is found after the retry over TCP")
	assert.Equal(t, "big", p.ID)
	assert.Equal(t, 2, s.DNSQueriesFor("_mta-sts.example.com"), "one query over UDP, truncated, one over TCP")
}

// TestResolver checks that Resolver is wired to the Server, and that the
// faults reach an mtasts.Resolver as the errors they stand for.
func TestResolver(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(s *Server)
		want  []error // nil: a policy is found
	}{
		{"published", func(s *Server) {}, nil},
		{"through a CNAME", func(s *Server) {
			s.Remove("_mta-sts.example.com")
			s.SetRecord("elsewhere.example", "v=STSv1; id=1;")
			s.SetCNAME("_mta-sts.example.com", "_mta-sts.elsewhere.example")
		}, nil},
		{"SERVFAIL", func(s *Server) { s.SetDNSFault("_mta-sts.example.com", DNSServFail) }, []error{mtasts.ErrDNSTemporary}},
		{"REFUSED", func(s *Server) { s.SetDNSFault("_mta-sts.example.com", DNSRefused) }, []error{mtasts.ErrDNSTemporary}},
		{"silent", func(s *Server) { s.SetDNSFault("_mta-sts.example.com", DNSSilent) }, []error{mtasts.ErrDNSTemporary}},
		{"404", func(s *Server) { s.SetPolicyFault("example.com", PolicyNotFound) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrHTTPStatus}},
		{"500", func(s *Server) { s.SetPolicyFault("example.com", PolicyServerError) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrHTTPStatus}},
		{"redirect", func(s *Server) { s.SetPolicyFault("example.com", PolicyRedirect) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrRedirect}},
		{"text/html", func(s *Server) { s.SetPolicyFault("example.com", PolicyWrongMediaType) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrMediaType}},
		{"too large", func(s *Server) { s.SetPolicyFault("example.com", PolicyTooLarge) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrPolicyTooLarge}},
		{"no response", func(s *Server) { s.SetPolicyFault("example.com", PolicyNoResponse) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrFetchTimeout}},
		{"expired certificate", func(s *Server) { s.SetPolicyFault("example.com", PolicyCertExpired) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
		{"wrong name", func(s *Server) { s.SetPolicyFault("example.com", PolicyCertWrongName) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
		{"untrusted", func(s *Server) { s.SetPolicyFault("example.com", PolicyCertUntrusted) }, []error{mtasts.ErrPolicyFetch, mtasts.ErrWebPKI}},
		{"invalid policy", func(s *Server) { s.SetPolicy("example.com", "version: STSv1\nmode: sometimes\n") }, []error{mtasts.ErrInvalidPolicy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewServer()
			defer s.Close()
			s.Publish("example.com", "1", testPolicy)
			tt.setup(s)
			r := s.Resolver()
			r.DNSTimeout = 300 * time.Millisecond
			r.FetchTimeout = 300 * time.Millisecond

			p, err := r.Lookup(t.Context(), "example.com")
			if tt.want == nil {
				require.NoError(t, err)
				require.NotNil(t, p)
				assert.Equal(t, mtasts.ModeEnforce, p.Mode)
				assert.Equal(t, []string{"mx.example.com"}, p.MX)
				assert.Equal(t, 1, s.PolicyFetchesFor("example.com"))
				return
			}
			require.Error(t, err, "Lookup = %v, want an error", p)
			assert.Nil(t, p)
			for _, want := range tt.want {
				assert.ErrorIs(t, err, want, "Lookup error")
			}
			if errors.Is(err, mtasts.ErrRedirect) {
				assert.Zero(t, s.Requests(RedirectHost("example.com")), "the redirect was not followed")
			}
		})
	}
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	s := NewServer()
	s.Close()
	s.Close()
	_, err := exchange(t, s, "udp", "example.com", dns.TypeA, 0)
	assert.Error(t, err, "DNS after Close")
	_, _, err = get(t.Context(), s.Client(), policyURL("example.com"))
	assert.Error(t, err, "HTTPS after Close")
}

// TestConcurrentUse changes the Server while it serves, for the race detector.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		domain := fmt.Sprintf("d%d.example", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.Client()
			for j := 0; j < 10; j++ {
				s.Publish(domain, fmt.Sprint(j), testPolicy)
				s.SetMX(domain, "mx."+domain)
				s.SetTTL(uint32(j))
				s.SetPolicyFault(domain, PolicyFault(j%int(PolicyNoResponse)))
				s.SetDNSFault("x."+domain, DNSServFail)
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn("_mta-sts."+domain), dns.TypeTXT)
				_, _, err := new(dns.Client).Exchange(m, s.DNSAddr())
				assert.NoError(t, err)
				_, _, err = get(ctx, c, policyURL(domain))
				assert.NoError(t, err)
				s.Unpublish(domain)
				_ = s.QueryLog()
				_ = s.PolicyFetchesFor(domain)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 80, s.DNSQueries())
	assert.Equal(t, 80, s.PolicyFetches())
}

// TestCloseLeavesNoGoroutines is not parallel: it counts every goroutine of
// the process. The parallel tests wait, paused, until it has run.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	s := NewServer()
	s.Publish("example.com", "1", testPolicy)
	s.Publish("held.example", "1", testPolicy)
	s.SetPolicyFault("held.example", PolicyNoResponse)
	s.SetDNSFault("_mta-sts.silent.example", DNSSilent)
	var records [][]string
	for i := 0; i < 10; i++ {
		records = append(records, []string{fmt.Sprintf("%0200d", i)})
	}
	s.SetTXT("big.example", records...)

	// DNS over UDP and TCP, and a query left unanswered over TCP.
	query(t, s, "_mta-sts.example.com", dns.TypeTXT)
	_, err := exchange(t, s, "tcp", "big.example", dns.TypeTXT, 0)
	require.NoError(t, err)
	m := new(dns.Msg)
	m.SetQuestion("_mta-sts.silent.example.", dns.TypeTXT)
	_, _, err = (&dns.Client{Net: "tcp", Timeout: 100 * time.Millisecond}).Exchange(m, s.DNSAddr())
	require.Error(t, err)

	// A policy fetch that leaves a pooled connection, one with a resolver,
	// and one held by the server while Close runs.
	_, _, err = get(t.Context(), s.Client(), policyURL("example.com"))
	require.NoError(t, err)
	p, err := s.Resolver().Lookup(t.Context(), "example.com")
	require.NoError(t, err)
	require.NotNil(t, p)
	held := make(chan error, 1)
	go func() {
		_, _, err := get(context.Background(), s.Client(), policyURL("held.example"))
		held <- err
	}()
	require.Eventually(t, func() bool { return s.PolicyFetchesFor("held.example") == 1 }, 10*time.Second, 5*time.Millisecond)

	s.Close()
	require.Error(t, <-held, "the held request fails when the Server closes")

	// Goroutines wind down after their connections close; allow them time.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf)
	}
}

// TestManyServers runs Servers side by side: nothing is shared between them.
func TestManyServers(t *testing.T) {
	t.Parallel()
	for i := 0; i < 5; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := NewServer()
			defer s.Close()
			id := fmt.Sprint(i)
			s.Publish("example.com", id, testPolicy)
			p, err := s.Resolver().Lookup(t.Context(), "example.com")
			require.NoError(t, err)
			require.NotNil(t, p)
			assert.Equal(t, id, p.ID)
			assert.Equal(t, 1, s.PolicyFetches())
			resp, _, err := get(t.Context(), s.Client(), policyURL("example.com"))
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
		})
	}
}
