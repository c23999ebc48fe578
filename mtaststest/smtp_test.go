package mtaststest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/smtp"
	"net/textproto"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// dialSMTP connects to host's MX through DialMX and reads its greeting.
func dialSMTP(t *testing.T, s *mtaststest.Server, host string) *smtp.Client {
	t.Helper()
	conn, err := s.DialMX(context.Background(), "tcp", net.JoinHostPort(host, "25"))
	require.NoError(t, err)
	c, err := smtp.NewClient(conn, host)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Hello("mail.contoso.com"))
	return c
}

func send(t *testing.T, c *smtp.Client) {
	t.Helper()
	require.NoError(t, c.Mail("a@contoso.com"))
	require.NoError(t, c.Rcpt("b@fabrikam.com"))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = w.Write([]byte("Subject: hi\r\n\r\nhello\r\n"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())
}

// An MX with a good certificate takes mail over TLS, verified against the
// Server's CA for the MX name.
func TestMXGood(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	mx := s.StartMX("mx.fabrikam.com", mtaststest.CertGood, mtaststest.MXSTARTTLS)
	c := dialSMTP(t, s, "mx.fabrikam.com")
	ok, _ := c.Extension("STARTTLS")
	require.True(t, ok)
	require.NoError(t, c.StartTLS(&tls.Config{ServerName: "mx.fabrikam.com", RootCAs: s.RootCAs()}))
	send(t, c)
	msgs := mx.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, "a@contoso.com", msgs[0].From)
	assert.Equal(t, []string{"b@fabrikam.com"}, msgs[0].To)
	assert.Equal(t, "Subject: hi\r\n\r\nhello\r\n", msgs[0].Data)
	assert.True(t, msgs[0].TLS)
	assert.Equal(t, "mx.fabrikam.com", msgs[0].ServerName)
	assert.GreaterOrEqual(t, msgs[0].TLSVersion, uint16(tls.VersionTLS12))
}

// Each broken kind fails verification as its CertKind says, and the MX
// hangs up; unverified, the same MX takes mail (opportunistic TLS).
func TestMXBrokenCertificates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind mtaststest.CertKind
		want any
	}{
		{mtaststest.CertExpired, &x509.CertificateInvalidError{}},
		{mtaststest.CertWrongName, &x509.HostnameError{}},
		{mtaststest.CertUntrusted, &x509.UnknownAuthorityError{}},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			t.Parallel()
			s := mtaststest.NewServer()
			defer s.Close()
			mx := s.StartMX("mx.fabrikam.com", tc.kind, mtaststest.MXSTARTTLS)
			c := dialSMTP(t, s, "mx.fabrikam.com")
			err := c.StartTLS(&tls.Config{ServerName: "mx.fabrikam.com", RootCAs: s.RootCAs()})
			require.Error(t, err)
			assert.ErrorAs(t, err, &tc.want)

			c = dialSMTP(t, s, "mx.fabrikam.com")
			require.NoError(t, c.StartTLS(&tls.Config{InsecureSkipVerify: true}))
			send(t, c)
			require.Len(t, mx.Messages(), 1)
			assert.True(t, mx.Messages()[0].TLS)
		})
	}
}

// An MX can hide STARTTLS, as an attacker who strips it does, or refuse it
// with 454; either way it takes mail in plain text.
func TestMXWithoutTLS(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	stripped := s.StartMX("mx1.fabrikam.com", mtaststest.CertGood, mtaststest.MXNoSTARTTLS)
	s.StartMX("mx2.fabrikam.com", mtaststest.CertGood, mtaststest.MXRefuseSTARTTLS)

	c := dialSMTP(t, s, "mx1.fabrikam.com")
	ok, _ := c.Extension("STARTTLS")
	assert.False(t, ok)
	send(t, c)
	require.Len(t, stripped.Messages(), 1)
	assert.False(t, stripped.Messages()[0].TLS)

	c = dialSMTP(t, s, "mx2.fabrikam.com")
	ok, _ = c.Extension("STARTTLS")
	assert.True(t, ok)
	err := c.StartTLS(&tls.Config{ServerName: "mx2.fabrikam.com", RootCAs: s.RootCAs()})
	var perr *textproto.Error
	require.ErrorAs(t, err, &perr)
	assert.Equal(t, 454, perr.Code)
}

// DialMX refuses hosts without an MX and ports other than 25; Close stops
// the MX.
func TestDialMX(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	ctx := context.Background()
	_, err := s.DialMX(ctx, "tcp", "mx.nowhere.example:25")
	assert.ErrorContains(t, err, "no MX started")
	mx := s.StartMX("MX.Fabrikam.com.", mtaststest.CertGood, mtaststest.MXSTARTTLS)
	assert.Equal(t, "mx.fabrikam.com", mx.Host)
	_, err = s.DialMX(ctx, "tcp", "mx.fabrikam.com:587")
	assert.Error(t, err)
	conn, err := s.DialMX(ctx, "tcp", "mx.fabrikam.com.:25")
	require.NoError(t, err)
	conn.Close()
	mx.Close()
	conn, err = net.DialTimeout("tcp", mx.Addr, time.Second)
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	assert.Error(t, err, "the MX still answers after Close")
}

// A domain published in U-labels is served under its A-labels, which is how
// a Resolver asks for it.
func TestPublishIDN(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("Bücher.example", "1", "version: STSv1\nmode: enforce\nmx: mx.xn--bcher-kva.example\nmax_age: 86400\n")
	for _, d := range []string{"bücher.example", "xn--bcher-kva.example"} {
		p, err := s.Resolver().Lookup(context.Background(), d)
		require.NoError(t, err, d)
		require.NotNil(t, p, d)
		assert.Equal(t, "xn--bcher-kva.example", p.Domain)
		assert.NoError(t, p.Validate("mx.bücher.example"))
	}
	assert.Panics(t, func() { s.Publish("a\u00a0b\u200d.example", "1", "") }, "an invalid name published nothing, silently")
}

// A Clock moves when told, and only then.
func TestClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	c := mtaststest.NewClock(start)
	assert.Equal(t, start, c.Now())
	c.Advance(time.Hour)
	assert.Equal(t, start.Add(time.Hour), c.Now())
	c.Advance(-2 * time.Hour)
	assert.Equal(t, start.Add(-time.Hour), c.Now())
	c.Set(start)
	assert.Equal(t, start, c.Now())
}
