package mtasts_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// deliver is the code of README.md's "Sending under a policy", which
// TestREADMESenderIsTested holds to it word for word.
func deliver(ctx context.Context, r *mtasts.Resolver, domain string, mxHosts []string, base *tls.Config,
	dial func(ctx context.Context, mx string) (*smtp.Client, error), report func(*mtasts.Policy, string, error)) error {
	p, lookupErr := r.Lookup(ctx, domain) // on failure: deliver as without a policy, and report it
	for _, mx := range mxHosts {
		failure := cmp.Or(lookupErr, p.CheckMX(mx)) // one report per session, of its first failure
		if p.Validate(mx) != nil {
			report(p, mx, failure) // enforce: skip an MX host the policy does not list
			continue
		}
		c, err := dial(ctx, mx) // an SMTP session with mx on port 25
		if err != nil {
			continue // no session: nothing to report
		}
		cfg, check := p.TLSConfig(mx, base) // verifies the certificate only under a policy
		if ok, _ := c.Extension("STARTTLS"); !ok {
			err = fmt.Errorf("%w: %s", mtasts.ErrNoSTARTTLS, mx)
		} else if err = c.StartTLS(cfg); errors.As(err, new(*textproto.Error)) {
			err = mtasts.STARTTLSRefused(err) // a 454 reply: the session goes on in plain text
		} else if err == nil {
			err = check.Err() // testing: a bad certificate, but a working session
		}
		report(p, mx, cmp.Or(failure, err)) // nil: a successful session
		if (err == nil || check.Mode() != mtasts.ModeEnforce) && transfer(c) == nil {
			return nil // MAIL, RCPT, DATA and QUIT went through
		}
		c.Close() // refused under enforce, or failed: try the next MX
	}
	return errors.New("451 4.4.0 no usable MX host; try again later") // never a bounce (§5.1)
}

// transfer sends a test message on an SMTP session.
func transfer(c *smtp.Client) error {
	if err := c.Mail("alice@contoso.com"); err != nil {
		return err
	}
	if err := c.Rcpt("bob@fabrikam.com"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte("Subject: MTA-STS\r\n\r\nHello, Bob.\r\n")); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// The README's code block is deliver, word for word.
func TestREADMESenderIsTested(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	src, err := os.ReadFile("readme_sender_test.go")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Sending under a policy\n")
	require.True(t, ok, "README.md has no section \"Sending under a policy\"")
	_, block, ok := strings.Cut(section, "\n```go\n")
	require.True(t, ok, "the section has no Go code block")
	block, _, ok = strings.Cut(block, "\n```\n")
	require.True(t, ok, "the code block does not end")
	assert.Contains(t, string(src), "\n"+block+"\n", "README.md's code block is not deliver's code")
	assert.LessOrEqual(t, strings.Count(block, "\n")+1, 32, "lines in README.md's code block")
}

// The README's flow, run against SMTP servers on loopback whose certificates
// come from a test CA: what each MX host received, what deliver returned, and
// the one report of each session.
func TestREADMESender(t *testing.T) {
	t.Parallel()

	type mxSpec struct {
		name     string
		cert     mtaststest.CertKind // -1: no STARTTLS
		refuse   bool                // answer STARTTLS 454
		wantMsg  bool                // gets the message
		wantOver bool                // over TLS
	}
	const noSTARTTLS mtaststest.CertKind = -1
	policyFor := func(mode mtasts.Mode, domain string) string {
		return "version: STSv1\nmode: " + string(mode) + "\nmx: mx1." + domain + "\nmx: mx2." + domain + "\nmax_age: 86400\n"
	}
	cases := []struct {
		name        string
		mode        mtasts.Mode // "": no policy published
		fault       mtaststest.PolicyFault
		mx          []mxSpec // "mx1", "mx2" (listed in the policy) or "attacker"
		delivered   bool
		wantReports []string // "<mx> <result type> <reason>", or "<mx> ok"
		wantPolicy  mtasts.PolicyType
	}{
		{"no policy, untrusted certificate", "", 0, []mxSpec{{"mx1", mtaststest.CertUntrusted, false, true, true}},
			true, []string{"mx1 ok"}, mtasts.PolicyTypeNoPolicyFound},
		{"no policy, expired certificate", "", 0, []mxSpec{{"mx1", mtaststest.CertExpired, false, true, true}},
			true, []string{"mx1 ok"}, mtasts.PolicyTypeNoPolicyFound},
		{"none, certificate for another name", mtasts.ModeNone, 0, []mxSpec{{"mx1", mtaststest.CertWrongName, false, true, true}},
			true, []string{"mx1 ok"}, mtasts.PolicyTypeSTS},
		{"enforce, attacker MX", mtasts.ModeEnforce, 0, []mxSpec{
			{"attacker", mtaststest.CertGood, false, false, false},
			{"mx2", mtaststest.CertGood, false, true, true},
		}, true, []string{"attacker validation-failure mx-not-allowed", "mx2 ok"}, mtasts.PolicyTypeSTS},
		{"testing, attacker MX with an untrusted certificate", mtasts.ModeTesting, 0, []mxSpec{
			{"attacker", mtaststest.CertUntrusted, false, true, true},
			{"mx2", mtaststest.CertGood, false, false, false},
		}, true, []string{"attacker validation-failure mx-not-allowed"}, mtasts.PolicyTypeSTS},
		{"enforce, expired certificate", mtasts.ModeEnforce, 0, []mxSpec{
			{"mx1", mtaststest.CertExpired, false, false, false},
			{"mx2", mtaststest.CertGood, false, true, true},
		}, true, []string{"mx1 certificate-expired certificate-expired", "mx2 ok"}, mtasts.PolicyTypeSTS},
		{"enforce, expired certificate, no other MX", mtasts.ModeEnforce, 0, []mxSpec{
			{"mx1", mtaststest.CertExpired, false, false, false},
		}, false, []string{"mx1 certificate-expired certificate-expired"}, mtasts.PolicyTypeSTS},
		{"testing, expired certificate", mtasts.ModeTesting, 0, []mxSpec{
			{"mx1", mtaststest.CertExpired, false, true, true},
			{"mx2", mtaststest.CertGood, false, false, false},
		}, true, []string{"mx1 certificate-expired certificate-expired"}, mtasts.PolicyTypeSTS},
		{"enforce, STARTTLS answered 454", mtasts.ModeEnforce, 0, []mxSpec{
			{"mx1", mtaststest.CertGood, true, false, false},
			{"mx2", mtaststest.CertGood, false, true, true},
		}, true, []string{"mx1 starttls-not-supported starttls-refused", "mx2 ok"}, mtasts.PolicyTypeSTS},
		{"testing, STARTTLS answered 454", mtasts.ModeTesting, 0, []mxSpec{
			{"mx1", mtaststest.CertGood, true, true, false},
		}, true, []string{"mx1 starttls-not-supported starttls-refused"}, mtasts.PolicyTypeSTS},
		{"testing, no STARTTLS", mtasts.ModeTesting, 0, []mxSpec{
			{"mx1", noSTARTTLS, false, true, false},
		}, true, []string{"mx1 starttls-not-supported starttls-not-offered"}, mtasts.PolicyTypeSTS},
		{"policy host certificate expired", mtasts.ModeEnforce, mtaststest.PolicyCertExpired, []mxSpec{
			{"attacker", mtaststest.CertUntrusted, false, true, true},
		}, true, []string{"attacker sts-webpki-invalid certificate-expired"}, mtasts.PolicyTypeNoPolicyFound},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := mtaststest.NewServer() // its own, for its own mx.attacker.example
			t.Cleanup(ts.Close)
			ca := ts.CA()
			domain := fmt.Sprintf("d%d.fabrikam.example", i)
			if tc.mode != "" {
				ts.Publish(domain, "1", policyFor(tc.mode, domain))
			}
			if tc.fault != 0 {
				ts.SetPolicyFault(domain, tc.fault)
			}
			hostName := func(name string) string {
				if name == "attacker" {
					return "mx.attacker.example"
				}
				return name + "." + domain
			}
			servers := map[string]*mtaststest.MX{}
			var hosts []string
			for _, spec := range tc.mx {
				host := hostName(spec.name)
				kind, mode := spec.cert, mtaststest.MXSTARTTLS
				switch {
				case spec.cert == noSTARTTLS:
					kind, mode = mtaststest.CertGood, mtaststest.MXNoSTARTTLS
				case spec.refuse:
					mode = mtaststest.MXRefuseSTARTTLS
				}
				servers[host] = ts.StartMX(host, kind, mode)
				hosts = append(hosts, host)
			}
			dial := func(ctx context.Context, mx string) (*smtp.Client, error) {
				conn, err := ts.DialMX(ctx, "tcp", net.JoinHostPort(mx, "25"))
				if err != nil {
					return nil, err
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				c, err := smtp.NewClient(conn, mx)
				if err != nil {
					conn.Close()
				}
				return c, err
			}
			collector := &mtasts.ReportCollector{OrganizationName: "Contoso", ContactInfo: "tlsrpt@contoso.example", Submitter: "mail.contoso.example"}
			var (
				mu      sync.Mutex
				reports []string
			)
			report := func(p *mtasts.Policy, mx string, err error) {
				require.NoError(t, collector.Add(mtasts.SessionResult{Domain: domain, Policy: p, Err: err,
					MXHost: mx, SendingIP: netip.MustParseAddr("127.0.0.1")}), "Add of %s: %v", mx, err)
				short := strings.TrimSuffix(strings.TrimSuffix(mx, "."+domain), ".attacker.example")
				if short == "mx" {
					short = "attacker"
				}
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					reports = append(reports, short+" ok")
					return
				}
				typ, reason := mtasts.Classify(err)
				reports = append(reports, short+" "+string(typ)+" "+reason)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// The sender's own TLS settings: none at all without a policy,
			// as the README has it; the test CA as roots under one.
			var base *tls.Config
			if tc.mode != "" && tc.mode != mtasts.ModeNone && tc.fault == 0 {
				base = &tls.Config{RootCAs: ca.Pool()}
			}
			err := deliver(ctx, ts.Resolver(), domain, hosts, base, dial, report)
			if tc.delivered {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "451 4.4.0")
			}
			for _, spec := range tc.mx {
				host := hostName(spec.name)
				got := servers[host].Messages()
				if !spec.wantMsg {
					assert.Empty(t, got, "messages at %s", host)
					continue
				}
				if assert.Len(t, got, 1, "messages at %s", host) {
					assert.Contains(t, got[0].Data, "Hello, Bob.")
					assert.Equal(t, spec.wantOver, got[0].TLS, "message at %s came over TLS", host)
				}
			}
			mu.Lock()
			assert.Equal(t, tc.wantReports, reports, "one report per session")
			mu.Unlock()

			reps := collector.TakeAll()
			require.Len(t, reps, 1)
			require.Len(t, reps[0].Policies, 1)
			assert.Equal(t, tc.wantPolicy, reps[0].Policies[0].Policy.Type)
			var sessions int64
			for _, r := range tc.wantReports {
				if !strings.HasSuffix(r, " ok") {
					sessions++
				}
			}
			assert.Equal(t, sessions, reps[0].Policies[0].Summary.TotalFailureSessionCount)
			assert.Equal(t, int64(len(tc.wantReports))-sessions, reps[0].Policies[0].Summary.TotalSuccessfulSessionCount)
		})
	}
}
