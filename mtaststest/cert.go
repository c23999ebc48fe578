package mtaststest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"time"
)

// wrongName is the only name in a PolicyCertWrongName certificate.
const wrongName = "wrong-name.invalid"

// certKey names an issued certificate: the SNI host it answers and the fault
// that shaped it.
type certKey struct {
	host  string
	fault PolicyFault
}

// makeCA makes the Server's certificate authority: an ECDSA P-256 key and a
// self-signed certificate valid from an hour ago for ten years.
func (s *Server) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "mtaststest certificate authority"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	s.ca, s.caKey = ca, key
	s.pool = x509.NewCertPool()
	s.pool.AddCert(ca)
	return nil
}

// getCertificate returns the certificate for the SNI name of hello, issuing
// it on first use. The policy host of a domain with a certificate fault gets a
// broken certificate.
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	host := hostName(hello.ServerName)
	var fault PolicyFault
	if d, ok := policyDomain(host); ok {
		s.mu.Lock()
		if f := s.policyFaults[d]; f.isCert() {
			fault = f
		}
		s.mu.Unlock()
	}
	key := certKey{host, fault}
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if c, ok := s.certs[key]; ok {
		return c, nil
	}
	c, err := s.issue(host, fault)
	if err != nil {
		return nil, err
	}
	s.certs[key] = c
	return c, nil
}

// issue makes a leaf certificate for host (for 127.0.0.1 when the client sent
// no SNI), signed by the Server's authority and valid from an hour ago for a
// year, unless fault breaks it.
func (s *Server) issue(host string, fault PolicyFault) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if host == "" {
		tmpl.Subject.CommonName = "127.0.0.1"
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		tmpl.DNSNames = []string{host}
	}
	parent, signer := s.ca, any(s.caKey)
	switch fault {
	case PolicyCertExpired:
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	case PolicyCertWrongName:
		tmpl.Subject.CommonName = wrongName
		tmpl.DNSNames = []string{wrongName}
	case PolicyCertUntrusted:
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// randomSerial returns a random 128-bit serial number, as RFC 5280 §4.1.2.2
// allows up to 20 octets.
func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
