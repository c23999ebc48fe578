package mtaststest

import "strconv"

// A DNSFault breaks the DNS answers for one name; see Server.SetDNSFault.
type DNSFault int

const (
	// DNSOK answers normally. Setting it clears a fault.
	DNSOK DNSFault = iota

	// DNSServFail answers SERVFAIL with no records, as a resolver does when the
	// zone's servers are broken.
	DNSServFail

	// DNSRefused answers REFUSED with no records.
	DNSRefused

	// DNSSilent sends no answer at all, over UDP or TCP: the client times out.
	DNSSilent
)

var dnsFaultNames = [...]string{
	DNSOK:       "DNSOK",
	DNSServFail: "DNSServFail",
	DNSRefused:  "DNSRefused",
	DNSSilent:   "DNSSilent",
}

// String returns the name of the constant, such as "DNSServFail".
func (f DNSFault) String() string {
	if f >= 0 && int(f) < len(dnsFaultNames) {
		return dnsFaultNames[f]
	}
	return "DNSFault(" + strconv.Itoa(int(f)) + ")"
}

// A PolicyFault breaks the HTTPS policy host mta-sts.<domain> of one policy
// domain; see Server.SetPolicyFault. The HTTP faults replace whatever the host
// would serve, at every path; the certificate faults only change the
// certificate presented and leave the content as it is.
type PolicyFault int

const (
	// PolicyOK serves normally. Setting it clears a fault.
	PolicyOK PolicyFault = iota

	// PolicyNotFound answers 404 Not Found.
	PolicyNotFound

	// PolicyServerError answers 500 Internal Server Error.
	PolicyServerError

	// PolicyRedirect answers 302 Found with a Location of RedirectURL(domain),
	// another host that does serve a valid policy (the domain's own, or a
	// default enforce policy). RFC 8461 §3.3 forbids following it; a test can
	// check it was not followed with Requests(RedirectHost(domain)).
	PolicyRedirect

	// PolicyWrongMediaType serves the policy as text/html.
	PolicyWrongMediaType

	// PolicyTooLarge serves, as text/plain, the policy followed by extension
	// lines ("padding: xxx...") that take the body beyond 64 KiB (RFC 8461
	// §3.3 suggests that limit). Without a size limit the body parses as the
	// valid policy.
	PolicyTooLarge

	// PolicyNoResponse never answers: the request is held until its context
	// ends or the Server closes. The TLS handshake succeeds.
	PolicyNoResponse

	// PolicyCertExpired presents a certificate, signed by the Server's
	// authority and for the right name, that expired a day ago
	// (x509.CertificateInvalidError with Reason x509.Expired).
	PolicyCertExpired

	// PolicyCertWrongName presents a certificate, signed by the Server's
	// authority, for the name "wrong-name.invalid" only (x509.HostnameError).
	PolicyCertWrongName

	// PolicyCertUntrusted presents a self-signed certificate for the right
	// name (x509.UnknownAuthorityError).
	PolicyCertUntrusted
)

var policyFaultNames = [...]string{
	PolicyOK:             "PolicyOK",
	PolicyNotFound:       "PolicyNotFound",
	PolicyServerError:    "PolicyServerError",
	PolicyRedirect:       "PolicyRedirect",
	PolicyWrongMediaType: "PolicyWrongMediaType",
	PolicyTooLarge:       "PolicyTooLarge",
	PolicyNoResponse:     "PolicyNoResponse",
	PolicyCertExpired:    "PolicyCertExpired",
	PolicyCertWrongName:  "PolicyCertWrongName",
	PolicyCertUntrusted:  "PolicyCertUntrusted",
}

// String returns the name of the constant, such as "PolicyCertExpired".
func (f PolicyFault) String() string {
	if f >= 0 && int(f) < len(policyFaultNames) {
		return policyFaultNames[f]
	}
	return "PolicyFault(" + strconv.Itoa(int(f)) + ")"
}

// certKind returns the kind of certificate the policy host presents under f:
// CertGood unless f is a certificate fault.
func (f PolicyFault) certKind() CertKind {
	switch f {
	case PolicyCertExpired:
		return CertExpired
	case PolicyCertWrongName:
		return CertWrongName
	case PolicyCertUntrusted:
		return CertUntrusted
	}
	return CertGood
}
