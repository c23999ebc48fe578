package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const (
	domain    = "fabrikam.com"
	badHost   = "mx1.fabrikam.com" // listed in the policy, broken as a test needs
	goodHost  = "mx2.fabrikam.com" // listed in the policy, with STARTTLS and a good certificate
	otherHost = "mx.attacker.com"  // not listed in the policy, otherwise good
	recipient = "bob@fabrikam.com"
	sender    = "alice@contoso.com"
	message   = "From: alice@contoso.com\r\nTo: bob@fabrikam.com\r\nSubject: MTA-STS test\r\n\r\nHello, Bob.\r\n"
)

func policy(mode mtasts.Mode) string {
	return "version: STSv1\nmode: " + string(mode) + "\nmx: " + badHost + "\nmx: " + goodHost + "\nmax_age: 86400\n"
}

// mxKind is how a test MX host behaves.
type mxKind int

const (
	mxGood       mxKind = iota // STARTTLS with a certificate for its name, from the CA
	mxNoSTARTTLS               // does not offer STARTTLS
	mxExpired                  // STARTTLS with an expired certificate
	mxUntrusted                // STARTTLS with a self-signed certificate
	mxWrongHost                // STARTTLS with a certificate for another name
	mxRejects                  // as good, but refuses the recipient with 550
)

// cert returns the kind of certificate an MX host of kind k presents.
func (k mxKind) cert() mtaststest.CertKind {
	switch k {
	case mxExpired:
		return mtaststest.CertExpired
	case mxUntrusted:
		return mtaststest.CertUntrusted
	case mxWrongHost:
		return mtaststest.CertWrongName
	}
	return mtaststest.CertGood
}

// received is a message an MX host accepted.
type received struct {
	from string
	to   []string
	data string
	tls  bool
	sni  string // the server name the client sent, over TLS
}

// mx is a receiving SMTP server (go-smtp) on 127.0.0.1 for one MX host name.
type mx struct {
	host   string
	addr   string
	kind   mxKind
	mu     sync.Mutex // mu guards got.
	got    []received
	server *gosmtp.Server
}

func (m *mx) messages() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.got...)
}

// session is one SMTP session on an mx.
type session struct {
	m    *mx
	conn *gosmtp.Conn
	from string
	to   []string
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if s.m.kind == mxRejects {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	state, isTLS := s.conn.TLSConnectionState()
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.got = append(s.m.got, received{from: s.from, to: s.to, data: string(data), tls: isTLS, sni: state.ServerName})
	return nil
}

// world is a fake Internet on loopback: DNS and policy hosts from
// mtaststest, and SMTP servers for MX host names, which the Sender reaches
// through its Dial. The Server's certificate authority signs the MX hosts'
// certificates too; the Sender trusts it and nothing else.
type world struct {
	ts *mtaststest.Server

	mu      sync.Mutex // mu guards mxs and reports.
	mxs     map[string]*mx
	reports []Failure
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ts := mtaststest.NewServer()
	t.Cleanup(ts.Close)
	return &world{ts: ts, mxs: map[string]*mx{}}
}

// startMX runs an SMTP server of the given kind for host.
func (w *world) startMX(t *testing.T, host string, kind mxKind) *mx {
	t.Helper()
	m := &mx{host: host, kind: kind}
	s := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return &session{m: m, conn: c}, nil
	}))
	s.Domain = host
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0) // handshakes fail on purpose
	if kind != mxNoSTARTTLS {
		cert := w.ts.CA().Issue(host, kind.cert())
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	m.addr, m.server = ln.Addr().String(), s
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	w.mu.Lock()
	w.mxs[host] = m
	w.mu.Unlock()
	return m
}

// dial maps "<MX host>:25" to the loopback port of that host's server.
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	m := w.mxs[host]
	w.mu.Unlock()
	if m == nil || port != "25" {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused: no test server for " + addr)}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, m.addr)
}

func (w *world) report(f Failure) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reports = append(w.reports, f)
}

func (w *world) reported() []Failure {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Failure(nil), w.reports...)
}

func (w *world) sender() *Sender {
	return &Sender{
		Hostname: "mail.contoso.com",
		MX:       w.ts.NetResolver(),
		STS:      w.ts.Resolver(),
		Dial:     w.dial,
		RootCAs:  w.ts.RootCAs(),
		Report:   w.report,
	}
}

func send(t *testing.T, s *Sender) (*Delivery, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.Send(ctx, sender, recipient, []byte(message))
}

// assertDelivered checks that m, and only m of the hosts given, got the
// message, over TLS with SNI = its name or in plain text.
func assertDelivered(t *testing.T, m *mx, overTLS bool, others ...*mx) {
	t.Helper()
	got := m.messages()
	if assert.Len(t, got, 1, "messages at %s", m.host) {
		assert.Equal(t, sender, got[0].from)
		assert.Equal(t, []string{recipient}, got[0].to)
		assert.Contains(t, got[0].data, "Subject: MTA-STS test")
		assert.Contains(t, got[0].data, "Hello, Bob.")
		assert.Equal(t, overTLS, got[0].tls, "message at %s came over TLS", m.host)
		if overTLS {
			assert.Equal(t, m.host, got[0].sni, "SNI at %s", m.host)
		}
	}
	for _, o := range others {
		assert.Empty(t, o.messages(), "messages at %s", o.host)
	}
}

// failureTypes lists the MX hosts and result types of failures.
func failureTypes(fs []Failure) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.MX+" "+string(f.Result))
	}
	return out
}

// The broken MX hosts a policy must catch, and what each is reported as.
var brokenMX = []struct {
	name string
	host string
	kind mxKind
	want mtasts.ResultType
}{
	{"outside the policy", otherHost, mxGood, mtasts.ResultValidationFailure},
	{"no STARTTLS", badHost, mxNoSTARTTLS, mtasts.ResultSTARTTLSNotSupported},
	{"expired certificate", badHost, mxExpired, mtasts.ResultCertificateExpired},
	{"untrusted certificate", badHost, mxUntrusted, mtasts.ResultCertificateNotTrusted},
	{"certificate for another host", badHost, mxWrongHost, mtasts.ResultCertificateHostMismatch},
}

func TestSendGoodMX(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
	w.ts.SetMX(domain, goodHost)
	good := w.startMX(t, goodHost, mxGood)

	d, err := send(t, w.sender())
	require.NoError(t, err)
	assert.Equal(t, goodHost, d.MX)
	assert.True(t, d.TLS)
	require.NotNil(t, d.Policy)
	assert.Equal(t, mtasts.ModeEnforce, d.Policy.Mode)
	assertDelivered(t, good, true)
	assert.Empty(t, w.reported())
}

// RFC 8461 §5.1: under enforce a broken MX is skipped and the next one used.
func TestSendEnforceSkipsBrokenMX(t *testing.T) {
	t.Parallel()
	for _, tc := range brokenMX {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
			w.ts.SetMX(domain, tc.host, goodHost)
			bad := w.startMX(t, tc.host, tc.kind)
			good := w.startMX(t, goodHost, mxGood)

			d, err := send(t, w.sender())
			require.NoError(t, err)
			assert.Equal(t, goodHost, d.MX)
			assertDelivered(t, good, true, bad)
			assert.Equal(t, []string{tc.host + " " + string(tc.want)}, failureTypes(w.reported()))
			assert.Equal(t, w.reported(), d.Failures)
		})
	}
}

// RFC 8461 §5.1: with no MX left under enforce the message is deferred,
// never bounced, and goes nowhere.
func TestSendEnforceNoUsableMX(t *testing.T) {
	t.Parallel()
	for _, tc := range brokenMX {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
			w.ts.SetMX(domain, tc.host)
			bad := w.startMX(t, tc.host, tc.kind)

			var stdout, stderr strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			code := run(ctx, w.sender(), []string{"-from", sender, "-to", recipient},
				strings.NewReader(message), &stdout, &stderr)
			assert.Equal(t, exitTempFail, code, "exit status; stderr:\n%s", stderr.String())
			assert.Contains(t, stderr.String(), "451 4.4.0 temporary failure")
			assert.Empty(t, stdout.String())
			assert.Empty(t, bad.messages(), "messages at %s", bad.host)
			failures := w.reported()
			require.NotEmpty(t, failures)
			for _, f := range failures {
				assert.Equal(t, tc.host+" "+string(tc.want), f.MX+" "+string(f.Result))
			}
			assert.Contains(t, stderr.String(), "report: "+domain+" MX "+tc.host+": "+string(tc.want))
		})
	}
}

// Under testing the broken MX is used, and what failed is reported.
func TestSendTestingDeliversAndReports(t *testing.T) {
	t.Parallel()
	for _, tc := range brokenMX {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.ts.Publish(domain, "1", policy(mtasts.ModeTesting))
			w.ts.SetMX(domain, tc.host, goodHost)
			bad := w.startMX(t, tc.host, tc.kind)
			good := w.startMX(t, goodHost, mxGood)

			d, err := send(t, w.sender())
			require.NoError(t, err)
			assert.Equal(t, tc.host, d.MX)
			assertDelivered(t, bad, tc.kind != mxNoSTARTTLS, good)
			assert.Equal(t, []string{tc.host + " " + string(tc.want)}, failureTypes(w.reported()))
		})
	}
}

// Without a policy, or under none, the sender is as opportunistic as before:
// the first MX gets the message. Only a missing STARTTLS is reported: a
// certificate is not checked.
func TestSendWithoutPolicy(t *testing.T) {
	t.Parallel()
	for _, setup := range []struct {
		name    string
		publish func(*mtaststest.Server)
	}{
		{"no record", func(*mtaststest.Server) {}},
		{"mode none", func(ts *mtaststest.Server) {
			ts.Publish(domain, "1", "version: STSv1\nmode: none\nmax_age: 86400\n")
		}},
	} {
		for _, tc := range brokenMX {
			t.Run(setup.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				setup.publish(w.ts)
				w.ts.SetMX(domain, tc.host, goodHost)
				bad := w.startMX(t, tc.host, tc.kind)
				good := w.startMX(t, goodHost, mxGood)

				d, err := send(t, w.sender())
				require.NoError(t, err)
				assert.Equal(t, tc.host, d.MX)
				assertDelivered(t, bad, tc.kind != mxNoSTARTTLS, good)
				if tc.kind == mxNoSTARTTLS {
					assert.Equal(t, []string{tc.host + " " + string(mtasts.ResultSTARTTLSNotSupported)}, failureTypes(w.reported()))
				} else {
					assert.Empty(t, w.reported())
				}
			})
		}
	}
}

// A policy that cannot be fetched, with nothing cached, is reported with the
// session, and the message goes out as though the domain had no policy (RFC
// 8461 §5).
func TestSendPolicyFetchFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
	w.ts.SetPolicyFault(domain, mtaststest.PolicyCertExpired)
	w.ts.SetMX(domain, otherHost, goodHost)
	other := w.startMX(t, otherHost, mxGood)
	good := w.startMX(t, goodHost, mxGood)

	d, err := send(t, w.sender())
	require.NoError(t, err)
	assert.Nil(t, d.Policy)
	assertDelivered(t, other, true, good)
	failures := w.reported()
	require.Len(t, failures, 1, "one session, one report")
	assert.Equal(t, otherHost, failures[0].MX)
	assert.Equal(t, mtasts.ResultSTSWebPKIInvalid, failures[0].Result)
	assert.Equal(t, "certificate-expired", failures[0].Reason)
}

// A session is reported once, with its first failure: an MX host that the
// policy does not list comes before its STARTTLS and its certificate (RFC
// 8461 §4.1, §4.2).
func TestSendReportsEachSessionOnce(t *testing.T) {
	t.Parallel()
	for _, mode := range []mtasts.Mode{mtasts.ModeTesting, mtasts.ModeEnforce} {
		for kind, name := range map[mxKind]string{mxNoSTARTTLS: "no STARTTLS", mxExpired: "expired",
			mxUntrusted: "untrusted", mxWrongHost: "wrong host"} {
			t.Run(string(mode)+"/"+name, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				w.ts.Publish(domain, "1", policy(mode))
				w.ts.SetMX(domain, otherHost, goodHost)
				other := w.startMX(t, otherHost, kind)
				good := w.startMX(t, goodHost, mxGood)

				d, err := send(t, w.sender())
				require.NoError(t, err)
				if mode == mtasts.ModeTesting {
					assert.Equal(t, otherHost, d.MX)
					assertDelivered(t, other, kind != mxNoSTARTTLS, good)
				} else {
					assert.Equal(t, goodHost, d.MX)
					assertDelivered(t, good, true, other)
				}
				failures := w.reported()
				assert.Equal(t, []string{otherHost + " " + string(mtasts.ResultValidationFailure)}, failureTypes(failures))
				if assert.Len(t, failures, 1) {
					assert.Equal(t, "mx-not-allowed", failures[0].Reason)
				}
			})
		}
	}
}

// RFC 8461 §5.1: before deferring a message that the cached policy refuses,
// the sender asks DNS for a new policy, and uses it if there is one.
func TestSendRefreshesPolicyBeforeGivingUp(t *testing.T) {
	t.Parallel()
	for _, republish := range []bool{true, false} {
		t.Run(fmt.Sprintf("new policy %v", republish), func(t *testing.T) {
			t.Parallel()
			const newHost = "mx3.fabrikam.com"
			w := newWorld(t)
			w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
			w.ts.SetMX(domain, goodHost)
			good := w.startMX(t, goodHost, mxGood)
			s := w.sender()
			_, err := send(t, s) // caches policy 1, whose TXT TTL is minutes
			require.NoError(t, err)
			assertDelivered(t, good, true)

			// The domain moves its mail to mx3 and, maybe, says so.
			w.ts.SetMX(domain, newHost)
			moved := w.startMX(t, newHost, mxGood)
			if republish {
				w.ts.Publish(domain, "2", "version: STSv1\nmode: enforce\nmx: "+newHost+"\nmax_age: 86400\n")
			}
			d, err := send(t, s)
			assert.Equal(t, []string{newHost + " " + string(mtasts.ResultValidationFailure)}, failureTypes(w.reported()))
			if !republish {
				var temp *TempError
				assert.ErrorAs(t, err, &temp)
				assert.Empty(t, moved.messages())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "2", d.Policy.ID)
			assertDelivered(t, moved, true)
		})
	}
}

// A 5xx reply is the MX's decision about the message: it is returned to its
// sender and no other MX is tried.
func TestSendPermanentRefusal(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
	w.ts.SetMX(domain, badHost, goodHost)
	rejects := w.startMX(t, badHost, mxRejects)
	good := w.startMX(t, goodHost, mxGood)

	var stdout, stderr strings.Builder
	code := run(context.Background(), w.sender(), []string{"-from", sender, "-to", recipient},
		strings.NewReader(message), &stdout, &stderr)
	assert.Equal(t, exitUnavailable, code, "exit status; stderr:\n%s", stderr.String())
	assert.Contains(t, stderr.String(), "550")
	assert.Empty(t, rejects.messages())
	assert.Empty(t, good.messages())
	assert.Empty(t, w.reported())
}

func TestRunDelivers(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
	w.ts.SetMX(domain, goodHost)
	good := w.startMX(t, goodHost, mxGood)

	var stdout, stderr strings.Builder
	code := run(context.Background(), w.sender(), []string{"-from", sender, "-to", recipient, "-hostname", "mail.contoso.com"},
		strings.NewReader(message), &stdout, &stderr)
	assert.Equal(t, exitOK, code, "exit status; stderr:\n%s", stderr.String())
	assert.Equal(t, "delivered to "+goodHost+" over TLS\n", stdout.String())
	assertDelivered(t, good, true)
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"-from", sender}, {"-to", recipient, "extra"}, {"-bogus"}} {
		var stdout, stderr strings.Builder
		code := run(context.Background(), &Sender{}, args, strings.NewReader(message), &stdout, &stderr)
		assert.Equal(t, exitUsage, code, "run(%q)", args)
	}
}

// go-smtp's client takes Policy.TLSConfig's configuration as it is.
func TestGoSMTPClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind mxKind
		want mtasts.ResultType
	}{
		{mxGood, ""},
		{mxExpired, mtasts.ResultCertificateExpired},
		{mxWrongHost, mtasts.ResultCertificateHostMismatch},
	} {
		w := newWorld(t)
		m := w.startMX(t, goodHost, tc.kind)
		p := &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{goodHost}}
		cfg, check := p.TLSConfig(goodHost, &tls.Config{RootCAs: w.ts.RootCAs()})
		conn, err := net.Dial("tcp", m.addr)
		require.NoError(t, err)
		c, err := gosmtp.NewClientStartTLS(conn, cfg)
		if err == nil {
			// go-smtp runs the handshake with the first command after STARTTLS.
			err = c.Hello("mail.contoso.com")
		}
		got, _ := mtasts.Classify(err)
		assert.Equal(t, tc.want, got, "Classify(%v)", err)
		if err == nil {
			assert.True(t, check.Verified())
			require.NoError(t, c.SendMail(sender, []string{recipient}, strings.NewReader(message)))
			require.NoError(t, c.Quit())
			assertDelivered(t, m, true)
		} else {
			conn.Close()
		}
	}
}

// RFC 7505: a domain whose only MX is "." accepts no mail.
func TestSendNullMX(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.SetMX(domain, ".")
	var stdout, stderr strings.Builder
	code := run(context.Background(), w.sender(), []string{"-from", sender, "-to", recipient},
		strings.NewReader(message), &stdout, &stderr)
	assert.Equal(t, exitUnavailable, code, "exit status; stderr:\n%s", stderr.String())
	assert.Contains(t, stderr.String(), "accepts no mail")
}

// A Sender with a Collector counts every session in the domain's TLSRPT
// report: the successes, and the failures with their details, one per
// session, under the policy that applied or as no-policy-found.
func TestSendCountsSessionsInCollector(t *testing.T) {
	t.Parallel()
	type mxSpec struct {
		host string
		kind mxKind
	}
	sendingIP := netip.MustParseAddr("192.0.2.25") // the collector's, for MX hosts refused before connecting
	cases := []struct {
		name       string
		setup      func(ts *mtaststest.Server)
		mx         []mxSpec
		delivered  string
		wantType   mtasts.PolicyType
		successful int64
		failed     int64
		details    []string // "<mx> <result type> <reason> <sending-mta-ip> <receiving-ip> <count>"
	}{
		{"enforce", func(ts *mtaststest.Server) { ts.Publish(domain, "1", policy(mtasts.ModeEnforce)) },
			[]mxSpec{{otherHost, mxGood}, {badHost, mxExpired}, {goodHost, mxGood}}, goodHost,
			mtasts.PolicyTypeSTS, 2, 4, []string{
				"mx.attacker.com validation-failure mx-not-allowed 192.0.2.25 - 2",
				"mx1.fabrikam.com certificate-expired certificate-expired 127.0.0.1 127.0.0.1 2",
			}},
		{"testing", func(ts *mtaststest.Server) { ts.Publish(domain, "1", policy(mtasts.ModeTesting)) },
			[]mxSpec{{badHost, mxUntrusted}, {goodHost, mxGood}}, badHost,
			mtasts.PolicyTypeSTS, 0, 2, []string{
				"mx1.fabrikam.com certificate-not-trusted certificate-not-trusted 127.0.0.1 127.0.0.1 2",
			}},
		{"no policy", func(*mtaststest.Server) {},
			[]mxSpec{{badHost, mxUntrusted}, {goodHost, mxGood}}, badHost,
			mtasts.PolicyTypeNoPolicyFound, 2, 0, nil},
		{"no policy, no STARTTLS", func(*mtaststest.Server) {},
			[]mxSpec{{badHost, mxNoSTARTTLS}, {goodHost, mxGood}}, badHost,
			mtasts.PolicyTypeNoPolicyFound, 0, 2, []string{
				"mx1.fabrikam.com starttls-not-supported starttls-not-offered 127.0.0.1 127.0.0.1 2",
			}},
		{"policy host certificate expired", func(ts *mtaststest.Server) {
			ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
			ts.SetPolicyFault(domain, mtaststest.PolicyCertExpired)
		}, []mxSpec{{otherHost, mxGood}}, otherHost,
			mtasts.PolicyTypeNoPolicyFound, 0, 2, []string{
				"mx.attacker.com sts-webpki-invalid certificate-expired 127.0.0.1 127.0.0.1 2",
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			tc.setup(w.ts)
			var hosts []string
			servers := map[string]*mx{}
			for _, m := range tc.mx {
				hosts = append(hosts, m.host)
				servers[m.host] = w.startMX(t, m.host, m.kind)
			}
			w.ts.SetMX(domain, hosts...)
			clock := mtaststest.NewClock(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
			collector := &mtasts.ReportCollector{OrganizationName: "Contoso", ContactInfo: "tlsrpt@contoso.com",
				Submitter: "mail.contoso.com", SendingIP: sendingIP, Now: clock.Now}
			s := w.sender()
			s.Collector = collector

			for range 2 { // two messages, one run of the sender each
				var stdout, stderr strings.Builder
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				code := run(ctx, s, []string{"-from", sender, "-to", recipient}, strings.NewReader(message), &stdout, &stderr)
				cancel()
				require.Equal(t, exitOK, code, "exit status; stderr:\n%s", stderr.String())
				assert.Contains(t, stdout.String(), "delivered to "+tc.delivered)
			}
			assert.Len(t, servers[tc.delivered].messages(), 2, "messages at %s", tc.delivered)

			assert.Empty(t, collector.TakeFinished(), "the day is not over")
			clock.Advance(12 * time.Hour)
			reports := collector.TakeFinished()
			require.Len(t, reports, 1)
			rep := reports[0]
			require.Len(t, rep.Policies, 1)
			pr := rep.Policies[0]
			assert.Equal(t, domain, pr.Policy.Domain)
			assert.Equal(t, tc.wantType, pr.Policy.Type)
			assert.Equal(t, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC), rep.DateRange.Start)
			assert.Equal(t, tc.successful, pr.Summary.TotalSuccessfulSessionCount, "successful sessions")
			assert.Equal(t, tc.failed, pr.Summary.TotalFailureSessionCount, "failed sessions")
			var details []string
			for _, fd := range pr.FailureDetails {
				details = append(details, fmt.Sprintf("%s %s %s %s %s %d", fd.ReceivingMXHostname, fd.ResultType,
					fd.FailureReasonCode, fd.SendingMTAIP, cmp.Or(fd.ReceivingIP, "-"), fd.FailedSessionCount))
			}
			slices.Sort(details)
			assert.Equal(t, tc.details, details)
			_, err := rep.JSON()
			assert.NoError(t, err)
		})
	}
}

// Sessions the Collector refuses are not lost silently: Delivery lists them.
func TestSendListsUncountedSessions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish(domain, "1", policy(mtasts.ModeEnforce))
	w.ts.SetMX(domain, goodHost)
	w.startMX(t, goodHost, mxGood)
	s := w.sender()
	s.Collector = &mtasts.ReportCollector{} // no OrganizationName, ContactInfo or Submitter
	d, err := send(t, s)
	require.NoError(t, err)
	require.Len(t, d.Uncounted, 1)
	assert.ErrorIs(t, d.Uncounted[0], mtasts.ErrCollectorConfig)
}
