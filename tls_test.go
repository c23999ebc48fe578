package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
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

// mxHello is what an MX test server saw of one TLS handshake.
type mxHello struct {
	sni string
	err error // the server's handshake error; nil if the client completed it
}

// startMXTLS runs a TLS server on 127.0.0.1 presenting cert, with TLS
// versions up to maxVersion (0: the highest), and returns its address and the
// handshakes it sees.
func startMXTLS(t *testing.T, cert tls.Certificate, maxVersion uint16) (string, <-chan mxHello) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hellos := make(chan mxHello, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				var sni string
				tc := tls.Server(conn, &tls.Config{
					GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
						sni = h.ServerName
						return &cert, nil
					},
					MinVersion: tls.VersionTLS10,
					MaxVersion: maxVersion,
				})
				err := tc.Handshake()
				hellos <- mxHello{sni: sni, err: err}
				if err == nil {
					io.Copy(io.Discard, tc) // until the client closes
				}
			}()
		}
	}()
	return ln.Addr().String(), hellos
}

// mxHandshake connects to addr and runs a client handshake with cfg.
func mxHandshake(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	return tls.Client(conn, cfg).HandshakeContext(ctx)
}

func mxNextHello(t *testing.T, hellos <-chan mxHello) mxHello {
	t.Helper()
	select {
	case h := <-hellos:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no handshake")
		return mxHello{}
	}
}

func mxPolicy(mode mtasts.Mode) *mtasts.Policy {
	return &mtasts.Policy{Mode: mode, MaxAge: 24 * time.Hour, MX: []string{"*.fabrikam.com"}, Domain: "fabrikam.com"}
}

// An opportunistic sender's configuration: it trusts the test CA, but does
// not verify, and allows old versions. Policies must override all of that.
func opportunisticBase(ca *mtaststest.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}
}

func TestTLSConfigVerification(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	want := map[mtaststest.CertKind]mtasts.ResultType{
		mtaststest.CertGood:      "",
		mtaststest.CertWildcard:  "",
		mtaststest.CertExpired:   mtasts.ResultCertificateExpired,
		mtaststest.CertWrongName: mtasts.ResultCertificateHostMismatch,
		mtaststest.CertUntrusted: mtasts.ResultCertificateNotTrusted,
		mtaststest.CertCNOnly:    mtasts.ResultCertificateHostMismatch, // the CN is never a DNS-ID
	}
	policies := map[string]*mtasts.Policy{
		"enforce": mxPolicy(mtasts.ModeEnforce),
		"testing": mxPolicy(mtasts.ModeTesting),
		"none":    mxPolicy(mtasts.ModeNone),
		"nil":     nil,
	}
	for pname, p := range policies {
		for kind, wantType := range want {
			t.Run(pname+"/"+kind.String(), func(t *testing.T) {
				t.Parallel()
				addr, hellos := startMXTLS(t, ca.Issue(host, kind), 0)
				base := opportunisticBase(ca)
				// The MX host as DNS gives it: a trailing dot, any case.
				cfg, check := p.TLSConfig("MX1.Fabrikam.com.", base)
				err := mxHandshake(t, addr, cfg)
				h := mxNextHello(t, hellos)
				assert.Equal(t, host, h.sni, "SNI seen by the MX")
				assert.Equal(t, host, check.Host())

				verifies := p != nil && (p.Mode == mtasts.ModeEnforce || p.Mode == mtasts.ModeTesting)
				switch {
				case !verifies:
					// The caller's opportunistic behaviour, unchanged.
					assert.NoError(t, err, "handshake")
					assert.NoError(t, h.err, "server handshake")
					assert.NoError(t, check.Err())
					assert.False(t, check.Verified())
				case wantType == "":
					assert.NoError(t, err, "handshake")
					assert.NoError(t, h.err, "server handshake")
					assert.NoError(t, check.Err())
					assert.True(t, check.Verified())
				case p.Mode == mtasts.ModeEnforce:
					require.Error(t, err, "handshake with a %s certificate under enforce", kind)
					assert.Error(t, h.err, "the server must not see a completed handshake")
					gotType, _ := mtasts.Classify(err)
					assert.Equal(t, wantType, gotType, "Classify(%v)", err)
					var cve *tls.CertificateVerificationError
					assert.ErrorAs(t, err, &cve)
					assert.Equal(t, err, check.Err())
					assert.False(t, check.Verified())
				default: // testing
					assert.NoError(t, err, "handshake with a %s certificate under testing", kind)
					assert.NoError(t, h.err, "server handshake")
					require.Error(t, check.Err())
					gotType, _ := mtasts.Classify(check.Err())
					assert.Equal(t, wantType, gotType, "Classify(%v)", check.Err())
					assert.False(t, check.Verified())
				}
				if p != nil {
					assert.Equal(t, p.Mode, check.Mode())
				} else {
					assert.Equal(t, mtasts.Mode(""), check.Mode())
				}
				// The caller's configuration is never changed.
				assert.Equal(t, opportunisticBase(ca).InsecureSkipVerify, base.InsecureSkipVerify)
				assert.Equal(t, uint16(tls.VersionTLS10), base.MinVersion)
				assert.Empty(t, base.ServerName)
				assert.Nil(t, base.VerifyConnection)
			})
		}
	}
}

// RFC 8461 §4.2 wildcards: "*" is one whole left-most label.
func TestTLSConfigWildcardDepth(t *testing.T) {
	t.Parallel()
	ca := mtaststest.NewCA()
	// A certificate for *.fabrikam.com does not cover a.mx.fabrikam.com.
	addr, hellos := startMXTLS(t, ca.Issue("mx.fabrikam.com", mtaststest.CertWildcard), 0)
	cfg, check := mxPolicy(mtasts.ModeEnforce).TLSConfig("a.mx.fabrikam.com", &tls.Config{RootCAs: ca.Pool()})
	err := mxHandshake(t, addr, cfg)
	mxNextHello(t, hellos)
	got, _ := mtasts.Classify(err)
	assert.Equal(t, mtasts.ResultCertificateHostMismatch, got, "Classify(%v)", err)
	assert.False(t, check.Verified())
}

// RFC 8461 §7.2 and RFC 8996: TLS 1.2 or later, whatever the caller allows.
func TestTLSConfigRefusesOldTLS(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	for _, tc := range []struct {
		name string
		p    *mtasts.Policy
		ok   bool
	}{
		{"enforce", mxPolicy(mtasts.ModeEnforce), false},
		{"testing", mxPolicy(mtasts.ModeTesting), false},
		// Without a policy the caller's MinVersion stands, which shows the
		// server really does speak TLS 1.1.
		{"none", mxPolicy(mtasts.ModeNone), true},
		{"nil", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, hellos := startMXTLS(t, ca.Issue(host, mtaststest.CertGood), tls.VersionTLS11)
			cfg, check := tc.p.TLSConfig(host, opportunisticBase(ca))
			err := mxHandshake(t, addr, cfg)
			h := mxNextHello(t, hellos)
			if tc.ok {
				assert.NoError(t, err)
				assert.NoError(t, h.err)
				return
			}
			assert.Error(t, err, "handshake with a TLS 1.1 server")
			assert.Error(t, h.err, "the server must not see a completed handshake")
			assert.GreaterOrEqual(t, cfg.MinVersion, uint16(tls.VersionTLS12))
			assert.False(t, check.Verified())
		})
	}
}

// The caller's own hooks and settings keep working beside the policy's.
func TestTLSConfigBase(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	errHook := errors.New("refused by the caller's hook")

	t.Run("VerifyConnection chained", func(t *testing.T) {
		t.Parallel()
		for _, kind := range []mtaststest.CertKind{mtaststest.CertGood, mtaststest.CertExpired} {
			addr, hellos := startMXTLS(t, ca.Issue(host, kind), 0)
			var calls int
			base := &tls.Config{RootCAs: ca.Pool(), VerifyConnection: func(cs tls.ConnectionState) error {
				calls++
				return errHook
			}}
			// Under testing the hook runs whatever the certificate.
			cfg, check := mxPolicy(mtasts.ModeTesting).TLSConfig(host, base)
			err := mxHandshake(t, addr, cfg)
			mxNextHello(t, hellos)
			assert.ErrorIs(t, err, errHook, "%s certificate", kind)
			assert.Equal(t, 1, calls, "%s certificate: hook calls", kind)
			assert.Equal(t, kind == mtaststest.CertGood, check.Verified())
		}
	})

	t.Run("VerifyConnection after a failure under enforce", func(t *testing.T) {
		t.Parallel()
		addr, hellos := startMXTLS(t, ca.Issue(host, mtaststest.CertExpired), 0)
		var calls int
		base := &tls.Config{RootCAs: ca.Pool(), VerifyConnection: func(tls.ConnectionState) error {
			calls++
			return nil
		}}
		cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, base)
		err := mxHandshake(t, addr, cfg)
		mxNextHello(t, hellos)
		got, _ := mtasts.Classify(err)
		assert.Equal(t, mtasts.ResultCertificateExpired, got)
		assert.Zero(t, calls, "the caller's hook runs only on a verified certificate")
	})

	t.Run("Time", func(t *testing.T) {
		t.Parallel()
		// A good certificate, checked an hour after it expires.
		cert := ca.Issue(host, mtaststest.CertGood)
		addr, hellos := startMXTLS(t, cert, 0)
		later := func() time.Time { return cert.Leaf.NotAfter.Add(time.Hour) }
		cfg, check := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, &tls.Config{RootCAs: ca.Pool(), Time: later})
		err := mxHandshake(t, addr, cfg)
		mxNextHello(t, hellos)
		got, _ := mtasts.Classify(err)
		assert.Equal(t, mtasts.ResultCertificateExpired, got, "Classify(%v)", err)
		assert.Equal(t, err, check.Err())
	})

	t.Run("system roots when RootCAs is nil", func(t *testing.T) {
		t.Parallel()
		// The test CA is in no system pool.
		addr, hellos := startMXTLS(t, ca.Issue(host, mtaststest.CertGood), 0)
		cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, nil)
		err := mxHandshake(t, addr, cfg)
		mxNextHello(t, hellos)
		got, _ := mtasts.Classify(err)
		assert.Equal(t, mtasts.ResultCertificateNotTrusted, got, "Classify(%v)", err)
	})

	t.Run("ServerName", func(t *testing.T) {
		t.Parallel()
		base := &tls.Config{ServerName: "smarthost.example"}
		cfg, _ := mxPolicy(mtasts.ModeEnforce).TLSConfig(host, base)
		assert.Equal(t, host, cfg.ServerName, "a policy sets the SNI to the MX host")
		cfg, _ = mxPolicy(mtasts.ModeNone).TLSConfig(host, base)
		assert.Equal(t, "smarthost.example", cfg.ServerName, "without a policy the caller's ServerName stands")
		cfg, _ = (*mtasts.Policy)(nil).TLSConfig(host, nil)
		assert.Equal(t, host, cfg.ServerName)
		assert.Equal(t, "smarthost.example", base.ServerName)
	})

	t.Run("U-labels", func(t *testing.T) {
		t.Parallel()
		_, check := mxPolicy(mtasts.ModeEnforce).TLSConfig("mx.bücher.example.", nil)
		assert.Equal(t, "mx.xn--bcher-kva.example", check.Host())
	})
}

// A configuration used for several connections, even at once, stays correct,
// and its check describes the latest handshake.
func TestTLSConfigReused(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	goodAddr, goodHellos := startMXTLS(t, ca.Issue(host, mtaststest.CertGood), 0)
	badAddr, badHellos := startMXTLS(t, ca.Issue(host, mtaststest.CertUntrusted), 0)
	cfg, check := mxPolicy(mtasts.ModeTesting).TLSConfig(host, &tls.Config{RootCAs: ca.Pool()})

	require.NoError(t, mxHandshake(t, badAddr, cfg))
	mxNextHello(t, badHellos)
	assert.Error(t, check.Err())
	require.NoError(t, mxHandshake(t, goodAddr, cfg))
	mxNextHello(t, goodHellos)
	assert.NoError(t, check.Err())
	assert.True(t, check.Verified())

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := goodAddr
			if i%2 == 1 {
				addr = badAddr
			}
			var d net.Dialer
			conn, err := d.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer conn.Close()
			tls.Client(conn, cfg).Handshake()
			check.Err()
			check.Verified()
		}()
	}
	wg.Wait()
	for range 4 {
		mxNextHello(t, goodHellos)
		mxNextHello(t, badHellos)
	}
}

func TestTLSCheckNil(t *testing.T) {
	t.Parallel()
	var c *mtasts.TLSCheck
	assert.Empty(t, c.Host())
	assert.Empty(t, c.Mode())
	assert.NoError(t, c.Err())
	assert.False(t, c.Verified())
}

// mxSMTP is a minimal SMTP server on 127.0.0.1, enough for a client's
// greeting, EHLO, STARTTLS and one message: the package's own tests cannot
// depend on an SMTP server package (examples/sender's tests use a full one).
type mxSMTP struct {
	name     string
	cert     *tls.Certificate // nil: STARTTLS is not offered
	refuse   bool             // offer STARTTLS but answer it 454
	tempfail bool             // answer MAIL 451
	addr     string
	mu       sync.Mutex // mu guards sni and got.
	sni      []string
	got      []mxMessage
	wg       sync.WaitGroup
	listener net.Listener
}

// mxMessage is a message an mxSMTP accepted.
type mxMessage struct {
	data string
	tls  bool // whether it came over TLS
}

// startMXSMTP starts s and stops it when the test ends.
func startMXSMTP(t *testing.T, s *mxSMTP) *mxSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.listener, s.addr = ln, ln.Addr().String()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				s.serve(conn)
			}()
		}
	}()
	return s
}

func (s *mxSMTP) serve(conn net.Conn) {
	tp := textproto.NewConn(conn)
	tp.PrintfLine("220 %s ESMTP", s.name)
	inTLS := false
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if s.cert != nil && !inTLS {
				tp.PrintfLine("250-%s", s.name)
				tp.PrintfLine("250 STARTTLS")
			} else {
				tp.PrintfLine("250 %s", s.name)
			}
		case "HELO", "NOOP", "RSET":
			tp.PrintfLine("250 OK")
		case "STARTTLS":
			if s.cert == nil || inTLS {
				tp.PrintfLine("502 5.5.1 command not implemented")
				continue
			}
			if s.refuse {
				tp.PrintfLine("454 4.7.0 TLS not available")
				continue
			}
			tp.PrintfLine("220 2.0.0 ready")
			tc := tls.Server(conn, &tls.Config{
				GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
					s.mu.Lock()
					s.sni = append(s.sni, h.ServerName)
					s.mu.Unlock()
					return s.cert, nil
				},
			})
			if tc.Handshake() != nil {
				return
			}
			tp, inTLS = textproto.NewConn(tc), true
		case "MAIL":
			if s.tempfail {
				tp.PrintfLine("451 4.3.0 try again later")
				continue
			}
			tp.PrintfLine("250 2.1.0 OK")
		case "RCPT":
			tp.PrintfLine("250 2.1.5 OK")
		case "DATA":
			tp.PrintfLine("354 go ahead")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, mxMessage{data: string(data), tls: inTLS})
			s.mu.Unlock()
			tp.PrintfLine("250 2.0.0 accepted")
		case "QUIT":
			tp.PrintfLine("221 2.0.0 bye")
			return
		default:
			tp.PrintfLine("502 5.5.1 command not implemented")
		}
	}
}

func (s *mxSMTP) messages() []mxMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mxMessage(nil), s.got...)
}

func (s *mxSMTP) snis() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sni...)
}

// startTLSWithPolicy does what a sender does at one MX over net/smtp: EHLO,
// then STARTTLS with the policy's configuration. A missing STARTTLS is
// wrapped in ErrNoSTARTTLS, an error reply to STARTTLS in STARTTLSRefused.
func startTLSWithPolicy(t *testing.T, addr, host string, p *mtasts.Policy, base *tls.Config) (*mtasts.TLSCheck, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := smtp.NewClient(conn, host)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Hello("sender.contoso.example"))
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return nil, errors.Join(mtasts.ErrNoSTARTTLS, errors.New(host+" does not offer STARTTLS"))
	}
	cfg, check := p.TLSConfig(host, base)
	if err := c.StartTLS(cfg); err != nil {
		var perr *textproto.Error
		if errors.As(err, &perr) {
			return check, mtasts.STARTTLSRefused(err)
		}
		return check, err
	}
	if err := c.Noop(); err != nil {
		return check, err
	}
	return check, c.Quit()
}

// The configuration goes to net/smtp's StartTLS as it is.
func TestTLSConfigNetSMTP(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	for _, tc := range []struct {
		kind mtaststest.CertKind
		mode mtasts.Mode
		want mtasts.ResultType // from StartTLS, or from the check after it
	}{
		{mtaststest.CertGood, mtasts.ModeEnforce, ""},
		{mtaststest.CertGood, mtasts.ModeTesting, ""},
		{mtaststest.CertExpired, mtasts.ModeEnforce, mtasts.ResultCertificateExpired},
		{mtaststest.CertExpired, mtasts.ModeTesting, mtasts.ResultCertificateExpired},
		{mtaststest.CertWrongName, mtasts.ModeEnforce, mtasts.ResultCertificateHostMismatch},
		{mtaststest.CertUntrusted, mtasts.ModeTesting, mtasts.ResultCertificateNotTrusted},
	} {
		t.Run(string(tc.mode)+"/"+tc.kind.String(), func(t *testing.T) {
			t.Parallel()
			cert := ca.Issue(host, tc.kind)
			s := startMXSMTP(t, &mxSMTP{name: host, cert: &cert})
			check, err := startTLSWithPolicy(t, s.addr, host, mxPolicy(tc.mode), &tls.Config{RootCAs: ca.Pool()})
			assert.Equal(t, []string{host}, s.snis(), "SNI")
			if tc.mode == mtasts.ModeEnforce && tc.want != "" {
				got, _ := mtasts.Classify(err)
				assert.Equal(t, tc.want, got, "StartTLS: Classify(%v)", err)
				return
			}
			require.NoError(t, err, "the session goes on after STARTTLS")
			got, _ := mtasts.Classify(check.Err())
			assert.Equal(t, tc.want, got, "check: Classify(%v)", check.Err())
			assert.Equal(t, tc.want == "", check.Verified())
		})
	}
}

// RFC 8461 §5: without a policy, or under none, a sender encrypts when it can
// and refuses no MX host for its certificate, even when the caller gives no
// configuration of its own; under testing the handshake goes on too, and only
// enforce refuses.
func TestTLSConfigOpportunisticWithoutPolicy(t *testing.T) {
	t.Parallel()
	const host = "mx1.fabrikam.com"
	ca := mtaststest.NewCA()
	for _, kind := range []mtaststest.CertKind{mtaststest.CertUntrusted, mtaststest.CertExpired, mtaststest.CertWrongName} {
		for _, tc := range []struct {
			name    string
			p       *mtasts.Policy
			refused bool
		}{
			{"nil", nil, false},
			{"none", mxPolicy(mtasts.ModeNone), false},
			{"testing", mxPolicy(mtasts.ModeTesting), false},
			{"enforce", mxPolicy(mtasts.ModeEnforce), true},
		} {
			for _, base := range []*tls.Config{nil, {RootCAs: ca.Pool()}} {
				name := tc.name + "/" + kind.String() + "/nil base"
				if base != nil {
					name = tc.name + "/" + kind.String() + "/RootCAs only"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					cert := ca.Issue(host, kind)
					s := startMXSMTP(t, &mxSMTP{name: host, cert: &cert})
					check, err := startTLSWithPolicy(t, s.addr, host, tc.p, base)
					assert.Equal(t, []string{host}, s.snis(), "SNI")
					if tc.refused {
						require.Error(t, err, "STARTTLS under enforce with a %s certificate", kind)
						typ, _ := mtasts.Classify(err)
						assert.NotEmpty(t, typ, "Classify(%v)", err)
						return
					}
					require.NoError(t, err, "the session goes on over TLS")
					assert.False(t, check.Verified())
					if tc.p != nil && tc.p.Mode == mtasts.ModeTesting {
						assert.Error(t, check.Err(), "what testing reports")
					} else {
						assert.NoError(t, check.Err(), "nothing to report without a policy")
					}
				})
			}
		}
	}
}
