package mtaststest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handshake runs a TLS server on 127.0.0.1 presenting cert and returns the
// error of a client handshake that trusts roots and sends serverName.
func handshake(t *testing.T, cert tls.Certificate, roots *x509.CertPool, serverName string) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
	}()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: serverName}).Handshake()
}

// Each kind fails x509 verification against the CA's Pool as its comment
// says, both on its own and in a TLS handshake.
func TestCAIssue(t *testing.T) {
	t.Parallel()
	const host = "mx.example.com"
	ca := NewCA()
	hostnameError := func(t *testing.T, err error) {
		var herr x509.HostnameError
		require.ErrorAs(t, err, &herr)
		assert.Equal(t, host, herr.Host)
	}
	tests := []struct {
		kind  CertKind
		check func(t *testing.T, err error) // nil: verifies
	}{
		{CertGood, nil},
		{CertWildcard, nil},
		{CertExpired, func(t *testing.T, err error) {
			var invalid x509.CertificateInvalidError
			require.ErrorAs(t, err, &invalid)
			assert.Equal(t, x509.Expired, invalid.Reason)
		}},
		{CertWrongName, hostnameError},
		{CertUntrusted, func(t *testing.T, err error) {
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown)
		}},
		{CertCNOnly, hostnameError},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			t.Parallel()
			cert := ca.Issue(host, tt.kind)
			require.Len(t, cert.Certificate, 1)
			require.NotNil(t, cert.Leaf)
			assert.Equal(t, cert.Certificate[0], cert.Leaf.Raw, "Leaf is the certificate presented")

			_, verr := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool()})
			herr := handshake(t, cert, ca.Pool(), host)
			if tt.check == nil {
				assert.NoError(t, verr, "Verify")
				assert.NoError(t, herr, "handshake")
				return
			}
			require.Error(t, verr, "Verify")
			tt.check(t, verr)
			require.Error(t, herr, "handshake")
			var cve *tls.CertificateVerificationError
			assert.ErrorAs(t, herr, &cve)
			tt.check(t, herr)
		})
	}
}

func TestCAIssueNames(t *testing.T) {
	t.Parallel()
	ca := NewCA()
	verify := func(c tls.Certificate, name string) error {
		_, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()})
		return err
	}

	good := ca.Issue("mx.example.com", CertGood)
	assert.Equal(t, "mx.example.com", good.Leaf.Subject.CommonName)
	assert.Equal(t, []string{"mx.example.com"}, good.Leaf.DNSNames)
	assert.Empty(t, good.Leaf.IPAddresses)
	assert.True(t, good.Leaf.NotAfter.After(time.Now().AddDate(0, 11, 0)), "valid for a year: %v", good.Leaf.NotAfter)
	assert.Error(t, verify(good, "mx2.example.com"))

	wrong := ca.Issue("mx.example.com", CertWrongName)
	assert.Equal(t, []string{"wrong-name.invalid"}, wrong.Leaf.DNSNames)
	assert.NoError(t, verify(wrong, "wrong-name.invalid"), "signed by the CA")

	cnOnly := ca.Issue("mx.example.com", CertCNOnly)
	assert.Equal(t, "mx.example.com", cnOnly.Leaf.Subject.CommonName)
	assert.Empty(t, cnOnly.Leaf.DNSNames)

	// A wildcard covers the host and its siblings, not a name one label deeper.
	wild := ca.Issue("mx.example.com", CertWildcard)
	assert.Equal(t, []string{"*.example.com"}, wild.Leaf.DNSNames)
	assert.NoError(t, verify(wild, "mx2.example.com"))
	var herr x509.HostnameError
	assert.ErrorAs(t, verify(wild, "a.mx.example.com"), &herr)

	// An IP address goes in an IP address SAN.
	ip := ca.Issue("127.0.0.1", CertGood)
	assert.Empty(t, ip.Leaf.DNSNames)
	if assert.Len(t, ip.Leaf.IPAddresses, 1) {
		assert.True(t, ip.Leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))
	}
	assert.NoError(t, verify(ip, "127.0.0.1"))
	// The client sends no SNI for an IP address, and verifies the IP SAN.
	assert.NoError(t, handshake(t, ip, ca.Pool(), "127.0.0.1"), "handshake with 127.0.0.1")

	// Each call makes a new key.
	again := ca.Issue("mx.example.com", CertGood)
	assert.NotEqual(t, good.Certificate[0], again.Certificate[0])
}

func TestCAIssuePanics(t *testing.T) {
	t.Parallel()
	ca := NewCA()
	assert.Panics(t, func() { ca.Issue("mx.example.com", CertKind(-1)) }, "unknown kind")
	assert.Panics(t, func() { ca.Issue("mx.example.com", CertWildcard+1) }, "unknown kind")
	assert.Panics(t, func() { ca.Issue("localhost", CertWildcard) }, "wildcard without a parent domain")
	assert.Panics(t, func() { ca.Issue("mx.bücher.example", CertGood) }, "a U-label")
}

func TestCAPool(t *testing.T) {
	t.Parallel()
	ca, other := NewCA(), NewCA()
	cert := ca.Certificate()
	assert.True(t, cert.IsCA)
	assert.NoError(t, cert.CheckSignatureFrom(cert), "self-signed")

	// Pool hands out a copy: changing it does not change the CA's.
	ca.Pool().AddCert(other.Certificate())
	leaf := other.Issue("mx.example.com", CertGood).Leaf
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: "mx.example.com", Roots: ca.Pool()})
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, err, &unknown, "one CA's certificate against another's pool")
}

// A Server's CA signs its policy hosts' certificates, and others a test
// issues from it are trusted by RootCAs.
func TestServerCA(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	assert.Same(t, s.CACert(), s.CA().Certificate())
	cert := s.CA().Issue("mx.example.com", CertGood)
	assert.NoError(t, handshake(t, cert, s.RootCAs(), "mx.example.com"))
}

func TestCertKindString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "CertGood", CertGood.String())
	assert.Equal(t, "CertWildcard", CertWildcard.String())
	assert.Equal(t, "CertKind(-1)", CertKind(-1).String())
	assert.Equal(t, "CertKind(6)", CertKind(6).String())
}
