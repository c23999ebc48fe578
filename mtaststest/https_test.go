package mtaststest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testPolicy = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"

// get fetches url with c, without following redirects, and returns the
// response with its body read.
func get(ctx context.Context, c *http.Client, url string) (*http.Response, string, error) {
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := cc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func policyURL(domain string) string { return "https://mta-sts." + domain + WellKnownPath }

func TestPolicyServing(t *testing.T) {
	t.Parallel()
	s := NewServer()
	t.Cleanup(s.Close) // after the parallel subtests
	s.Publish("example.com", "1", testPolicy)
	s.Handle("custom.example", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "custom "+r.URL.Path)
	}))
	c := s.Client()

	tests := []struct {
		name        string
		url         string
		status      int
		contentType string
		body        string
	}{
		{"policy", policyURL("example.com"), 200, "text/plain", testPolicy},
		{"policy host, case and final dot", "https://MTA-STS.Example.COM./.well-known/mta-sts.txt", 200, "text/plain", testPolicy},
		{"other path on the policy host", "https://mta-sts.example.com/", 404, "text/plain; charset=utf-8", "404 page not found\n"},
		{"unknown domain", policyURL("unknown.example"), 404, "text/plain; charset=utf-8", "404 page not found\n"},
		{"custom handler", "https://custom.example/some/path", 200, "text/plain; charset=utf-8", "custom /some/path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body, err := get(t.Context(), c, tt.url)
			require.NoError(t, err, "GET %s", tt.url)
			assert.Equal(t, tt.status, resp.StatusCode, "GET %s status", tt.url)
			assert.Equal(t, tt.contentType, resp.Header.Get("Content-Type"), "GET %s Content-Type", tt.url)
			assert.Equal(t, tt.body, body, "GET %s body", tt.url)
			require.NotNil(t, resp.TLS)
			assert.GreaterOrEqual(t, resp.TLS.Version, uint16(tls.VersionTLS12), "TLS version")
		})
	}
}

func TestHandlePolicyHost(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.Publish("example.com", "1", testPolicy)
	c := s.Client()
	ctx := t.Context()

	// A handler on the policy host replaces the policy; removing it restores it.
	s.Handle("mta-sts.example.com", http.NotFoundHandler())
	resp, _, err := get(ctx, c, policyURL("example.com"))
	require.NoError(t, err)
	assert.Equal(t, 404, resp.StatusCode, "with a handler on the policy host")
	s.Handle("mta-sts.example.com", nil)
	resp, body, err := get(ctx, c, policyURL("example.com"))
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode, "after removing the handler")
	assert.Equal(t, testPolicy, body)
}

func TestPolicyFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault PolicyFault
		check func(t *testing.T, resp *http.Response, body string)
	}{
		{PolicyNotFound, func(t *testing.T, resp *http.Response, body string) {
			assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		}},
		{PolicyServerError, func(t *testing.T, resp *http.Response, body string) {
			assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		}},
		{PolicyRedirect, func(t *testing.T, resp *http.Response, body string) {
			assert.Equal(t, http.StatusFound, resp.StatusCode)
			assert.Equal(t, RedirectURL("example.com"), resp.Header.Get("Location"))
		}},
		{PolicyWrongMediaType, func(t *testing.T, resp *http.Response, body string) {
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
			assert.Equal(t, testPolicy, body)
		}},
		{PolicyTooLarge, func(t *testing.T, resp *http.Response, body string) {
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
			assert.Greater(t, len(body), 64<<10, "body size")
			assert.True(t, strings.HasPrefix(body, testPolicy), "body starts with the policy")
			for _, line := range strings.Split(strings.TrimSuffix(body[len(testPolicy):], "\n"), "\n") {
				require.True(t, strings.HasPrefix(line, "padding: "), "padding line %q", line)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			s := NewServer()
			defer s.Close()
			s.Publish("example.com", "1", testPolicy)
			s.Publish("other.example", "1", testPolicy)
			c := s.Client()
			ctx := t.Context()

			s.SetPolicyFault("example.com", tt.fault)
			resp, body, err := get(ctx, c, policyURL("example.com"))
			require.NoError(t, err)
			tt.check(t, resp, body)

			// Other paths on the host and other domains.
			resp, body, err = get(ctx, c, "https://mta-sts.example.com/elsewhere")
			require.NoError(t, err)
			tt.check(t, resp, body)
			resp, body, err = get(ctx, c, policyURL("other.example"))
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode, "another domain is not affected")
			assert.Equal(t, testPolicy, body)

			s.SetPolicyFault("example.com", PolicyOK)
			resp, body, err = get(ctx, c, policyURL("example.com"))
			require.NoError(t, err)
			assert.Equal(t, 200, resp.StatusCode, "after clearing the fault")
			assert.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
			assert.Equal(t, testPolicy, body, "after clearing the fault")
		})
	}
}

func TestPolicyRedirectTarget(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.Publish("example.com", "1", testPolicy)
	c := s.Client()
	ctx := t.Context()

	resp, _, err := get(ctx, c, RedirectURL("example.com"))
	require.NoError(t, err)
	assert.Equal(t, 404, resp.StatusCode, "the target serves nothing without the fault")
	s.ResetCounters()

	s.SetPolicyFault("example.com", PolicyRedirect)
	assert.Equal(t, "127.0.0.1", aRecord(t, s, RedirectHost("example.com")), "the target has an A record")

	// A client that follows redirects gets a valid policy from the target.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, policyURL("example.com"), nil)
	require.NoError(t, err)
	resp, err = c.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, testPolicy, string(body))
	assert.Equal(t, 1, s.Requests(RedirectHost("example.com")), "requests to the target")
	assert.Equal(t, 1, s.PolicyFetchesFor("example.com"), "fetches from the policy host")
	assert.Equal(t, 2, s.PolicyFetches(), "fetches of the well-known path, any host")

	// Without a policy of its own, the domain's target serves a default one.
	s.SetPolicyFault("bare.example", PolicyRedirect)
	resp, body2, err := get(ctx, c, RedirectURL("bare.example"))
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, body2, "mode: enforce")
}

// aRecord returns the address the Server's DNS gives host.
func aRecord(t *testing.T, s *Server, host string) string {
	t.Helper()
	addrs, err := s.NetResolver().LookupHost(t.Context(), host+".")
	require.NoError(t, err, "LookupHost(%q)", host)
	require.Len(t, addrs, 1)
	return addrs[0]
}

func TestPolicyNoResponse(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.Publish("example.com", "1", testPolicy)
	s.SetPolicyFault("example.com", PolicyNoResponse)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := get(ctx, s.Client(), policyURL("example.com"))
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 10*time.Second, "the request ends with its context")
	assert.Equal(t, 1, s.PolicyFetchesFor("example.com"), "the request reached the server")
}

func TestPolicyNoResponseClose(t *testing.T) {
	t.Parallel()
	s := NewServer()
	s.Publish("example.com", "1", testPolicy)
	s.SetPolicyFault("example.com", PolicyNoResponse)

	done := make(chan error, 1)
	go func() {
		_, _, err := get(context.Background(), s.Client(), policyURL("example.com"))
		done <- err
	}()
	require.Eventually(t, func() bool { return s.PolicyFetches() == 1 }, 10*time.Second, 5*time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		assert.Error(t, err, "a held request fails when the Server closes")
	case <-time.After(10 * time.Second):
		t.Fatal("a held request still hangs after Close")
	}
}

func TestCertificateFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault PolicyFault
		check func(t *testing.T, err error)
	}{
		{PolicyCertExpired, func(t *testing.T, err error) {
			var invalid x509.CertificateInvalidError
			require.ErrorAs(t, err, &invalid)
			assert.Equal(t, x509.Expired, invalid.Reason)
		}},
		{PolicyCertWrongName, func(t *testing.T, err error) {
			var host x509.HostnameError
			require.ErrorAs(t, err, &host)
			assert.Equal(t, "mta-sts.example.com", host.Host)
			assert.Equal(t, []string{"wrong-name.invalid"}, host.Certificate.DNSNames)
		}},
		{PolicyCertUntrusted, func(t *testing.T, err error) {
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			s := NewServer()
			defer s.Close()
			s.Publish("example.com", "1", testPolicy)
			ctx := t.Context()

			// Client pools connections: the first request leaves one idle,
			// which the fault must not let the next request reuse.
			c := s.Client()
			resp, _, err := get(ctx, c, policyURL("example.com"))
			require.NoError(t, err)
			require.Equal(t, 200, resp.StatusCode)

			// A client the caller builds from RootCAs, without the dial
			// override: it dials the HTTPS address and sends the SNI itself.
			own := &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", s.HTTPSAddr())
				},
				TLSClientConfig: &tls.Config{RootCAs: s.RootCAs()},
			}}
			defer own.CloseIdleConnections()

			s.SetPolicyFault("example.com", tt.fault)
			for name, client := range map[string]*http.Client{"Client": c, "own client": own} {
				_, _, err = get(ctx, client, policyURL("example.com"))
				require.Error(t, err, "%s: GET with %v", name, tt.fault)
				var verr *tls.CertificateVerificationError
				assert.True(t, errors.As(err, &verr), "%s: %v is a certificate verification error", name, err)
				tt.check(t, err)
			}

			// Another host keeps a good certificate.
			resp, _, err = get(ctx, c, "https://mta-sts.other.example/")
			require.NoError(t, err)
			assert.Equal(t, 404, resp.StatusCode)

			s.SetPolicyFault("example.com", PolicyOK)
			resp, body, err := get(ctx, c, policyURL("example.com"))
			require.NoError(t, err, "after clearing the fault")
			assert.Equal(t, testPolicy, body)
			assert.Equal(t, 200, resp.StatusCode)
		})
	}
}

func TestCACert(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	ca := s.CACert()
	assert.True(t, ca.IsCA)
	assert.NoError(t, ca.CheckSignatureFrom(ca), "self-signed")

	// RootCAs hands out a copy: changing it does not change the Server's.
	other := NewServer()
	defer other.Close()
	s.RootCAs().AddCert(other.CACert())
	s.Publish("example.com", "1", testPolicy)
	other.Publish("example.com", "1", testPolicy)
	_, _, err := get(t.Context(), s.Client(), policyURL("example.com"))
	require.NoError(t, err)

	// Each Server has its own authority: one's client does not trust the other.
	c := s.Client()
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", other.HTTPSAddr())
	}
	_, _, err = get(t.Context(), c, policyURL("example.com"))
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, err, &unknown, "a Server's client against another Server")
}
