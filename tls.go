package mtasts

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"time"
)

// TLSConfig returns the TLS configuration for STARTTLS to the MX host mxHost
// under the policy p, and a TLSCheck that tells, after the handshake, whether
// the host's certificate was valid for it (RFC 8461 §4.2, §5). Pass the
// configuration as it is to net/smtp's Client.StartTLS, go-smtp's
// NewClientStartTLS or tls.Client. Both SMTP clients run the handshake with
// the EHLO that follows STARTTLS: net/smtp's StartTLS returns its error,
// go-smtp's next command does.
//
// The configuration is a clone of base, which is never modified; a nil base
// counts as a zero tls.Config. What TLSConfig adds depends on p's mode:
//
//   - enforce: the SNI (ServerName) is mxHost, in lower-case A-labels without
//     a trailing dot (RFC 8461 §7.1); the version is TLS 1.2 or later; and the
//     server's certificate must chain to base.RootCAs (the system roots if
//     nil), be within its validity period, and name mxHost in a DNS
//     subject alternative name (RFC 8461 §4.2). If it does not, the handshake
//     fails with a *tls.CertificateVerificationError that Classify maps to
//     certificate-expired, certificate-host-mismatch or
//     certificate-not-trusted: treat the MX as unreachable and try the next
//     one (RFC 8461 §5.1).
//   - testing: the same, except that a certificate that does not verify does
//     not stop the handshake. The TLSCheck records why, for the sender to
//     deliver and report it (RFC 8461 §5, RFC 8460).
//   - none, or p nil: opportunistic TLS (RFC 7435), as though the domain had
//     no policy (RFC 8461 §5): the certificate is not verified, so that an MX
//     host with a self-signed, expired or wrong-name certificate still gets
//     the message encrypted. InsecureSkipVerify is set whatever base says;
//     ServerName is set to mxHost only if base leaves it empty; the version
//     is base's. The TLSCheck records nothing.
//
// Only enforce refuses a certificate. Under testing, none and no policy the
// handshake goes on whatever the certificate, and under testing the TLSCheck
// tells afterwards what to report.
//
// In every mode the configuration sets InsecureSkipVerify, so that crypto/tls
// does not verify and base.InsecureSkipVerify has no effect. Under enforce
// and testing the configuration does its own verification, in
// VerifyConnection, and base.ServerName has no effect. base.VerifyConnection, if set, runs after that verification (under
// enforce, only if it passed) and can still fail the handshake; with no
// policy or none it runs alone, and is where a sender that wants more than
// opportunistic TLS without a policy checks the certificate.
// base.VerifyPeerCertificate, if set, runs with nil verified chains. If
// base.Time is set, certificates are checked at the time it returns. Resumed
// sessions are verified as new ones.
//
// A configuration and its TLSCheck are meant for one connection: call
// TLSConfig for each. A configuration used for several connections stays
// correct, and its TLSCheck then describes the most recent handshake.
func (p *Policy) TLSConfig(mxHost string, base *tls.Config) (*tls.Config, *TLSCheck) {
	host := mxServerName(mxHost)
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	check := &TLSCheck{host: host}
	if p == nil || (p.Mode != ModeEnforce && p.Mode != ModeTesting) {
		if p != nil {
			check.mode = p.Mode
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		// RFC 8461 §5: none is as though there were no policy, and without
		// one a sender encrypts when it can but does not refuse an MX host
		// for its certificate.
		cfg.InsecureSkipVerify = true
		return cfg, check
	}
	check.mode = p.Mode
	enforce := p.Mode == ModeEnforce

	// RFC 8461 §7.1: the SNI is the MX host name.
	cfg.ServerName = host
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	// The verification below replaces crypto/tls's own so that, under testing,
	// a failure can be recorded without ending the handshake. It runs for
	// every handshake, resumed ones included.
	cfg.InsecureSkipVerify = true
	roots, timeFn, next := cfg.RootCAs, cfg.Time, cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		var now time.Time
		if timeFn != nil {
			now = timeFn()
		}
		err := verifyMX(cs.PeerCertificates, host, roots, now)
		check.record(err)
		if err != nil && enforce {
			return err
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return cfg, check
}

// A TLSCheck records what the certificate verification of a configuration
// made by Policy.TLSConfig found. Its methods are safe for concurrent use,
// including while a handshake is under way, and may be called on a nil
// *TLSCheck, which records nothing.
type TLSCheck struct {
	host string // the DNS-ID and SNI: lower-case A-labels, no trailing dot
	mode Mode   // the policy's mode, "" with no policy

	mu   sync.Mutex // mu guards done and err.
	done bool       // a handshake has reached verification
	err  error      // its failure, if any
}

// Host returns the MX host in lower-case A-labels, without a trailing dot:
// under enforce and testing, the name sent as SNI and required in the
// certificate.
func (c *TLSCheck) Host() string {
	if c == nil {
		return ""
	}
	return c.host
}

// Mode returns the mode of the policy the configuration applies, or "" when
// there is no policy. Only under ModeEnforce and ModeTesting is the
// certificate verified; only under ModeEnforce does a failure, a missing
// STARTTLS included, mean skipping the MX host.
func (c *TLSCheck) Mode() Mode {
	if c == nil {
		return ""
	}
	return c.mode
}

// Err returns why the MX host's certificate did not verify in the last
// handshake: a *tls.CertificateVerificationError wrapping the x509 error
// (x509.CertificateInvalidError, x509.HostnameError,
// x509.UnknownAuthorityError, ...), which Classify turns into the RFC 8460
// result type to report. It returns nil if the certificate verified, if no
// handshake has reached verification, or if the configuration verifies
// nothing (no policy, or mode none).
//
// Under enforce, the handshake failed with this same error. Under testing,
// the handshake went on; deliver, and report Err.
func (c *TLSCheck) Err() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Verified reports whether the last handshake presented a certificate valid
// for the MX host. It is false before any handshake, after a failed
// verification, and when the configuration verifies nothing.
func (c *TLSCheck) Verified() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done && c.err == nil
}

func (c *TLSCheck) record(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done, c.err = true, err
}

// errNoCertificate is returned when a server presents no certificate, which a
// TLS server using certificates cannot do.
var errNoCertificate = errors.New("tls: MX host presented no certificate")

// verifyMX checks the certificate chain a server presented for host, as
// crypto/tls does for a client, at now (the current time if zero). Failures
// come as *tls.CertificateVerificationError, as crypto/tls returns them.
func verifyMX(certs []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) error {
	if len(certs) == 0 {
		return errNoCertificate
	}
	opts := x509.VerifyOptions{
		Roots:         roots, // nil: the system roots
		CurrentTime:   now,
		DNSName:       host, // RFC 8461 §4.2: a DNS-ID in the SAN; CN is never used
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// mxServerName returns host as a DNS-ID and SNI: without a trailing dot, in
// lower case, U-labels converted to A-labels. A host that does not convert is
// kept as it is, and will match no certificate.
func mxServerName(host string) string {
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			if a, err := toASCII(host); err == nil {
				return a
			}
			return host
		}
	}
	return strings.ToLower(host)
}
