package mtasts_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const classifyPolicy = "version: STSv1\nmode: enforce\nmx: mx1.fabrikam.com\nmax_age: 86400\n"

// policyFailure publishes a valid policy for domain, lets setup break it,
// and looks the domain up with a new Resolver on ts. It returns the error
// Lookup returned or, when Lookup hides the failure (a malformed record counts
// as no record), the first one passed to OnError.
func policyFailure(t *testing.T, ts *mtaststest.Server, domain string, setup func(r *mtasts.Resolver)) error {
	t.Helper()
	ts.Publish(domain, "1", classifyPolicy)
	var (
		mu       sync.Mutex
		reported []error
	)
	r := ts.Resolver()
	r.DNSTimeout = time.Second
	r.OnError = func(_ string, err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err)
	}
	if setup != nil {
		setup(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := r.Lookup(ctx, domain)
	if err != nil {
		return err
	}
	require.Nil(t, p, "Lookup(%q) found a policy despite the fault", domain)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, reported, "Lookup(%q) reported no failure", domain)
	return reported[0]
}

// Every failure here is produced for real on loopback: a Resolver against a
// broken policy host or DNS, Validate against a fetched policy, an SMTP
// exchange with an MX that has no STARTTLS, and TLS handshakes with broken MX
// certificates. Each must map to its RFC 8460 result type and reason code.
func TestClassifyRealFailures(t *testing.T) {
	t.Parallel()
	ts := mtaststest.NewServer()
	t.Cleanup(ts.Close)
	ca := mtaststest.NewCA()
	const host = "mx1.fabrikam.com"

	fault := func(f mtaststest.PolicyFault) func(*testing.T, string) error {
		return func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(*mtasts.Resolver) { ts.SetPolicyFault(domain, f) })
		}
	}
	dnsFault := func(f mtaststest.DNSFault) func(*testing.T, string) error {
		return func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(r *mtasts.Resolver) {
				r.DNSTimeout = 300 * time.Millisecond
				ts.SetDNSFault("_mta-sts."+domain, f)
			})
		}
	}
	// mxSession runs EHLO and STARTTLS under mode against an MX whose
	// certificate is of kind k (no STARTTLS at all when k < 0), and returns
	// the failure: StartTLS's error, or under testing, the check's.
	mxSession := func(mode mtasts.Mode, k mtaststest.CertKind, refuse bool) func(*testing.T, string) error {
		return func(t *testing.T, _ string) error {
			s := &mxSMTP{name: host, refuse: refuse}
			if k >= 0 {
				cert := ca.Issue(host, k)
				s.cert = &cert
			}
			startMXSMTP(t, s)
			check, err := startTLSWithPolicy(t, s.addr, host, mxPolicy(mode), &tls.Config{RootCAs: ca.Pool()})
			if err != nil {
				return err
			}
			return check.Err()
		}
	}
	const noSTARTTLS mtaststest.CertKind = -1

	cases := []struct {
		name       string
		produce    func(t *testing.T, domain string) error
		wantType   mtasts.ResultType
		wantReason string
		wantIs     error // a sentinel the error must wrap, if any
	}{
		// Fetching the policy (RFC 8460 §4.3.2.2).
		{"policy 404", fault(mtaststest.PolicyNotFound), mtasts.ResultSTSPolicyFetchError, "http-status", mtasts.ErrHTTPStatus},
		{"policy 500", fault(mtaststest.PolicyServerError), mtasts.ResultSTSPolicyFetchError, "http-status", mtasts.ErrHTTPStatus},
		{"policy redirect", fault(mtaststest.PolicyRedirect), mtasts.ResultSTSPolicyFetchError, "http-redirect", mtasts.ErrRedirect},
		{"policy media type", fault(mtaststest.PolicyWrongMediaType), mtasts.ResultSTSPolicyFetchError, "media-type", mtasts.ErrMediaType},
		{"policy too large", fault(mtaststest.PolicyTooLarge), mtasts.ResultSTSPolicyFetchError, "policy-too-large", mtasts.ErrPolicyTooLarge},
		{"policy fetch timeout", func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(r *mtasts.Resolver) {
				r.FetchTimeout = 500 * time.Millisecond
				ts.SetPolicyFault(domain, mtaststest.PolicyNoResponse)
			})
		}, mtasts.ResultSTSPolicyFetchError, "timeout", mtasts.ErrFetchTimeout},
		{"caller's deadline during the fetch", func(t *testing.T, domain string) error {
			ts.Publish(domain, "1", classifyPolicy)
			ts.SetPolicyFault(domain, mtaststest.PolicyNoResponse)
			// Long enough for the DNS query to be answered, so that the
			// deadline falls in the fetch.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			p, err := ts.Resolver().Lookup(ctx, domain)
			require.Nil(t, p)
			return err
		}, mtasts.ResultSTSPolicyFetchError, "timeout", mtasts.ErrFetchTimeout},
		{"policy host unreachable", func(t *testing.T, domain string) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			closed := ln.Addr().String()
			ln.Close()
			return policyFailure(t, ts, domain, func(r *mtasts.Resolver) {
				r.HTTPClient = &http.Client{Transport: &http.Transport{
					DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
						var d net.Dialer
						return d.DialContext(ctx, "tcp", closed)
					},
				}}
			})
		}, mtasts.ResultSTSPolicyFetchError, "fetch-failed", mtasts.ErrPolicyFetch},
		{"TXT SERVFAIL", dnsFault(mtaststest.DNSServFail), mtasts.ResultSTSPolicyFetchError, "dns-failure", mtasts.ErrDNSTemporary},
		{"TXT REFUSED", dnsFault(mtaststest.DNSRefused), mtasts.ResultSTSPolicyFetchError, "dns-failure", mtasts.ErrDNSTemporary},
		{"TXT timeout", dnsFault(mtaststest.DNSSilent), mtasts.ResultSTSPolicyFetchError, "dns-failure", mtasts.ErrDNSTemporary},
		{"policy syntax", func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(*mtasts.Resolver) {
				ts.SetPolicy(domain, "version: STSv1\nmode: enforce\nmx: mx1.fabrikam.com\nmax_age: soon\n")
			})
		}, mtasts.ResultSTSPolicyInvalid, "policy-syntax", mtasts.ErrInvalidPolicy},
		{"policy without mode", func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(*mtasts.Resolver) {
				ts.SetPolicy(domain, "version: STSv1\nmx: mx1.fabrikam.com\nmax_age: 86400\n")
			})
		}, mtasts.ResultSTSPolicyInvalid, "policy-syntax", mtasts.ErrInvalidPolicy},
		{"record syntax (OnError)", func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(*mtasts.Resolver) {
				ts.SetRecord(domain, "v=STSv1; id=not-alphanumeric!;")
			})
		}, mtasts.ResultSTSPolicyInvalid, "record-syntax", mtasts.ErrInvalidRecord},
		{"two records (OnError)", func(t *testing.T, domain string) error {
			return policyFailure(t, ts, domain, func(*mtasts.Resolver) {
				ts.SetTXT("_mta-sts."+domain, []string{"v=STSv1; id=1;"}, []string{"v=STSv1; id=2;"})
			})
		}, mtasts.ResultSTSPolicyInvalid, "multiple-records", mtasts.ErrMultipleRecords},
		{"policy host certificate expired", fault(mtaststest.PolicyCertExpired), mtasts.ResultSTSWebPKIInvalid, "certificate-expired", mtasts.ErrWebPKI},
		{"policy host certificate wrong name", fault(mtaststest.PolicyCertWrongName), mtasts.ResultSTSWebPKIInvalid, "certificate-host-mismatch", mtasts.ErrWebPKI},
		{"policy host certificate untrusted", fault(mtaststest.PolicyCertUntrusted), mtasts.ResultSTSWebPKIInvalid, "certificate-not-trusted", mtasts.ErrWebPKI},

		// Delivering to an MX host (RFC 8460 §4.3.1).
		{"MX not allowed", func(t *testing.T, domain string) error {
			ts.Publish(domain, "1", classifyPolicy)
			p, err := ts.Resolver().Lookup(context.Background(), domain)
			require.NoError(t, err)
			return p.Validate("mx.attacker.example")
		}, mtasts.ResultValidationFailure, "mx-not-allowed", mtasts.ErrMXNotAllowed},
		{"no STARTTLS", mxSession(mtasts.ModeEnforce, noSTARTTLS, false), mtasts.ResultSTARTTLSNotSupported, "starttls-not-offered", mtasts.ErrNoSTARTTLS},
		{"STARTTLS answered 454", mxSession(mtasts.ModeEnforce, mtaststest.CertGood, true), mtasts.ResultSTARTTLSNotSupported, "starttls-refused", mtasts.ErrNoSTARTTLS},
		{"MX certificate expired (enforce)", mxSession(mtasts.ModeEnforce, mtaststest.CertExpired, false), mtasts.ResultCertificateExpired, "certificate-expired", nil},
		{"MX certificate untrusted (enforce)", mxSession(mtasts.ModeEnforce, mtaststest.CertUntrusted, false), mtasts.ResultCertificateNotTrusted, "certificate-not-trusted", nil},
		{"MX certificate wrong host (enforce)", mxSession(mtasts.ModeEnforce, mtaststest.CertWrongName, false), mtasts.ResultCertificateHostMismatch, "certificate-host-mismatch", nil},
		{"MX certificate CN only (enforce)", mxSession(mtasts.ModeEnforce, mtaststest.CertCNOnly, false), mtasts.ResultCertificateHostMismatch, "certificate-host-mismatch", nil},
		{"MX certificate expired (testing)", mxSession(mtasts.ModeTesting, mtaststest.CertExpired, false), mtasts.ResultCertificateExpired, "certificate-expired", nil},
		{"MX certificate untrusted (testing)", mxSession(mtasts.ModeTesting, mtaststest.CertUntrusted, false), mtasts.ResultCertificateNotTrusted, "certificate-not-trusted", nil},
		{"MX certificate wrong host (testing)", mxSession(mtasts.ModeTesting, mtaststest.CertWrongName, false), mtasts.ResultCertificateHostMismatch, "certificate-host-mismatch", nil},
		{"MX speaks only TLS 1.1", func(t *testing.T, _ string) error {
			addr, hellos := startMXTLS(t, ca.Issue(host, mtaststest.CertGood), tls.VersionTLS11)
			cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, &tls.Config{RootCAs: ca.Pool()})
			err := mxHandshake(t, addr, cfg)
			mxNextHello(t, hellos)
			return err
		}, mtasts.ResultValidationFailure, "tls-failure", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			domain := strings.NewReplacer(" ", "-", "(", "", ")", "", "'", "").Replace(tc.name) + ".classify.example"
			err := tc.produce(t, domain)
			require.Error(t, err, "the failure did not happen")
			if tc.wantIs != nil {
				require.ErrorIs(t, err, tc.wantIs)
			}
			gotType, gotReason := mtasts.Classify(err)
			assert.Equal(t, tc.wantType, gotType, "Classify(%v) result type", err)
			assert.Equal(t, tc.wantReason, gotReason, "Classify(%v) reason", err)
		})
	}
}

// A session that succeeds has nothing to report.
func TestClassifySuccess(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	cert := ca.Issue(host, mtaststest.CertGood)
	s := startMXSMTP(t, &mxSMTP{name: host, cert: &cert})
	check, err := startTLSWithPolicy(t, s.addr, host, mxPolicy(mtasts.ModeEnforce), &tls.Config{RootCAs: ca.Pool()})
	require.NoError(t, err)
	require.NoError(t, check.Err())
	typ, reason := mtasts.Classify(check.Err())
	assert.Empty(t, typ)
	assert.Empty(t, reason)
}

// A 454 reply to STARTTLS (RFC 3207 §4) is starttls-not-supported once the
// sender says so with STARTTLSRefused, which keeps the reply for errors.As.
func TestSTARTTLSRefused(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	cert := mtaststest.NewCA().Issue(host, mtaststest.CertGood)
	s := startMXSMTP(t, &mxSMTP{name: host, cert: &cert, refuse: true})
	conn, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := smtp.NewClient(conn, host)
	require.NoError(t, err)
	defer c.Close()
	cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, nil)
	reply := c.StartTLS(cfg)
	require.Error(t, reply)

	// The reply alone is no failure of the domain's: only the sender knows
	// which command it answered.
	typ, reason := mtasts.Classify(reply)
	assert.Empty(t, typ, "Classify(%v)", reply)
	assert.Empty(t, reason)

	err = mtasts.STARTTLSRefused(reply)
	typ, reason = mtasts.Classify(err)
	assert.Equal(t, mtasts.ResultSTARTTLSNotSupported, typ)
	assert.Equal(t, "starttls-refused", reason)
	assert.ErrorIs(t, err, mtasts.ErrNoSTARTTLS)
	var perr *textproto.Error
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, 454, perr.Code)
	assert.Contains(t, err.Error(), "454")
	assert.NoError(t, mtasts.STARTTLSRefused(nil))

	// The session goes on in plain text after the refusal.
	require.NoError(t, c.Noop())
}

// Errors that are not TLS failures of the receiving domain's get no result
// type, and ReportCollector.Add refuses them: a connection refused, an SMTP
// 4xx reply, and the sender's own context ending, produced for real on
// loopback.
func TestClassifyUnknownErrors(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	cases := []struct {
		name    string
		produce func(t *testing.T) error
	}{
		{"connection refused", func(t *testing.T) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			addr := ln.Addr().String()
			ln.Close()
			_, err = net.DialTimeout("tcp", addr, 10*time.Second)
			return err
		}},
		{"SMTP 451 to MAIL", func(t *testing.T) error {
			cert := ca.Issue(host, mtaststest.CertGood)
			s := startMXSMTP(t, &mxSMTP{name: host, cert: &cert, tempfail: true})
			c, err := smtp.Dial(s.addr)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.StartTLS(&tls.Config{ServerName: host, RootCAs: ca.Pool()}))
			err = c.Mail("alice@contoso.com")
			var perr *textproto.Error
			require.ErrorAs(t, err, &perr)
			assert.Equal(t, 451, perr.Code)
			return err
		}},
		{"the sender's deadline during the handshake", func(t *testing.T) error {
			// An MX host that accepts the connection and says nothing.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			accepted := make(chan net.Conn, 1)
			go func() {
				conn, err := ln.Accept()
				if err == nil {
					accepted <- conn
				}
				close(accepted)
			}()
			t.Cleanup(func() {
				ln.Close()
				for conn := range accepted {
					conn.Close()
				}
			})
			cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, &tls.Config{RootCAs: ca.Pool()})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			err = tls.Client(conn, cfg).HandshakeContext(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return err
		}},
		{"the sender's cancellation", func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var d net.Dialer
			_, err := d.DialContext(ctx, "tcp", "127.0.0.1:25")
			require.ErrorIs(t, err, context.Canceled)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.produce(t)
			require.Error(t, err, "the failure did not happen")
			typ, reason := mtasts.Classify(err)
			assert.Empty(t, typ, "Classify(%v) result type", err)
			assert.Empty(t, reason, "Classify(%v) reason", err)

			c := mtasts.ReportCollector{OrganizationName: "Contoso", ContactInfo: "tlsrpt@contoso.example", Submitter: "mail.contoso.example"}
			addErr := c.Add(mtasts.SessionResult{Domain: "fabrikam.com", Err: err, MXHost: host,
				SendingIP: netip.MustParseAddr("127.0.0.1")})
			assert.ErrorIs(t, addErr, mtasts.ErrInvalidReport, "Add of %v", err)
			assert.Empty(t, c.TakeAll(), "a refused result was counted")
		})
	}
}
