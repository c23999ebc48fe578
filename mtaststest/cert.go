package mtaststest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strconv"
	"strings"
	"time"
)

// wrongName is the only name in a CertWrongName certificate. The .invalid
// top-level domain never resolves (RFC 6761 §6.4).
const wrongName = "wrong-name.invalid"

// A CA is a certificate authority made in memory. A Server issues its policy
// hosts' certificates from one; a test can make its own with NewCA, or take
// the Server's with Server.CA, to issue the STARTTLS certificates of the MX
// hosts it runs for a sender under test, good or broken in a known way.
//
// Nothing trusts a CA but the clients given its Pool. A CA is safe for
// concurrent use by multiple goroutines.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool // holds cert only; never handed out, only clones of it
}

// NewCA makes a certificate authority: an ECDSA P-256 key and a self-signed
// certificate valid from an hour ago for ten years. It panics if it cannot
// make them, as NewServer does.
func NewCA() *CA {
	ca, err := newCA()
	if err != nil {
		panic("mtaststest: making the certificate authority: " + err.Error())
	}
	return ca
}

func newCA() (*CA, error) {
	now := time.Now()
	cert, key, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "mtaststest certificate authority"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool}, nil
}

// Certificate returns the CA's own certificate. The caller must not change it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only the CA's certificate, for the RootCAs
// of a client's tls.Config. Changing the pool does not change the CA.
func (ca *CA) Pool() *x509.CertPool { return ca.pool.Clone() }

// A CertKind is a kind of certificate that CA.Issue makes: good, or broken in
// one way. Each comment names the error that x509 verification for the host
// against the CA's Pool returns (wrapped, in a TLS handshake, in a
// tls.CertificateVerificationError).
type CertKind int

const (
	// CertGood names the host, is signed by the CA, and is valid from an
	// hour ago for a year. It verifies.
	CertGood CertKind = iota

	// CertExpired is CertGood but expired a day ago
	// (x509.CertificateInvalidError with Reason x509.Expired).
	CertExpired

	// CertWrongName is signed by the CA for the name "wrong-name.invalid"
	// only (x509.HostnameError).
	CertWrongName

	// CertUntrusted names the host but is self-signed
	// (x509.UnknownAuthorityError).
	CertUntrusted

	// CertCNOnly is signed by the CA and names the host in its subject common
	// name only, with no subject alternative name: verification ignores the
	// common name (x509.HostnameError).
	CertCNOnly

	// CertWildcard is signed by the CA for "*." and the host's parent domain:
	// "*.example.com" for "mx.example.com". It verifies for the host and its
	// siblings, and fails for a name one label deeper, such as
	// "a.mx.example.com" (x509.HostnameError).
	CertWildcard
)

var certKindNames = [...]string{
	CertGood:      "CertGood",
	CertExpired:   "CertExpired",
	CertWrongName: "CertWrongName",
	CertUntrusted: "CertUntrusted",
	CertCNOnly:    "CertCNOnly",
	CertWildcard:  "CertWildcard",
}

// String returns the name of the constant, such as "CertExpired".
func (k CertKind) String() string {
	if k >= 0 && int(k) < len(certKindNames) {
		return certKindNames[k]
	}
	return "CertKind(" + strconv.Itoa(int(k)) + ")"
}

// Issue makes a certificate of the given kind for host, a DNS name or an IP
// address, with a new ECDSA P-256 key, for the Certificates or GetCertificate
// of a server's tls.Config. Its Leaf is set. A good certificate names host as
// its subject common name and as its one subject alternative name (an IP
// address one when host is an IP address). Each call makes a new key and
// certificate.
//
// Issue panics if kind is not one of the constants, if kind is CertWildcard
// and host has no parent domain, or if host cannot go in a certificate (it is
// not ASCII).
func (ca *CA) Issue(host string, kind CertKind) tls.Certificate {
	c, err := ca.issue(host, kind)
	if err != nil {
		panic("mtaststest: issuing a " + kind.String() + " certificate for " + strconv.Quote(host) + ": " + err.Error())
	}
	return *c
}

func (ca *CA) issue(host string, kind CertKind) (*tls.Certificate, error) {
	if kind < 0 || int(kind) >= len(certKindNames) {
		return nil, errors.New("unknown kind")
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: host},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	parent, signer := ca.cert, ca.key
	switch kind {
	case CertExpired:
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	case CertWrongName:
		tmpl.Subject.CommonName = wrongName
		tmpl.DNSNames, tmpl.IPAddresses = []string{wrongName}, nil
	case CertUntrusted:
		parent, signer = nil, nil
	case CertCNOnly:
		tmpl.DNSNames, tmpl.IPAddresses = nil, nil
	case CertWildcard:
		_, domain, ok := strings.Cut(host, ".")
		if !ok || domain == "" {
			return nil, errors.New("CertWildcard needs a host with a parent domain")
		}
		tmpl.Subject.CommonName = "*." + domain
		tmpl.DNSNames, tmpl.IPAddresses = []string{"*." + domain}, nil
	}
	leaf, key, err := newCert(tmpl, parent, signer)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// newCert makes the certificate tmpl describes, with a new ECDSA P-256 key
// and a random 128-bit serial number (RFC 5280 §4.1.2.2 allows up to 20
// octets), signed with signer, the key of parent, or self-signed if parent is
// nil.
func newCert(tmpl, parent *x509.Certificate, signer *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, nil, err
	}
	if parent == nil {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// certKey names a certificate the Server issued: the SNI host it answers and
// its kind.
type certKey struct {
	host string
	kind CertKind
}

// getCertificate returns the certificate for the SNI name of hello (for
// 127.0.0.1 when the client sent none), issuing it on first use. The policy
// host of a domain with a certificate fault gets a broken certificate.
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	host := hostName(hello.ServerName)
	if host == "" {
		host = "127.0.0.1"
	}
	kind := CertGood
	if d, ok := policyDomain(host); ok {
		s.mu.Lock()
		kind = s.policyFaults[d].certKind()
		s.mu.Unlock()
	}
	key := certKey{host, kind}
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if c, ok := s.certs[key]; ok {
		return c, nil
	}
	c, err := s.ca.issue(host, kind)
	if err != nil {
		return nil, err
	}
	s.certs[key] = c
	return c, nil
}
