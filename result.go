package mtasts

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// ResultType is an RFC 8460 result type: what a TLSRPT report says went wrong
// with a policy or a connection.
type ResultType string

// The result types of RFC 8460 §4.3 that concern MTA-STS.
const (
	// Negotiation failures (§4.3.1).
	ResultSTARTTLSNotSupported    ResultType = "starttls-not-supported"
	ResultCertificateHostMismatch ResultType = "certificate-host-mismatch"
	ResultCertificateExpired      ResultType = "certificate-expired"
	ResultCertificateNotTrusted   ResultType = "certificate-not-trusted"
	ResultValidationFailure       ResultType = "validation-failure"

	// Policy failures (§4.3.2.2).
	ResultSTSPolicyFetchError ResultType = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid    ResultType = "sts-policy-invalid"
	ResultSTSWebPKIInvalid    ResultType = "sts-webpki-invalid"
)

// ErrNoSTARTTLS is for a sender to wrap when an MX host does not offer
// STARTTLS, or the STARTTLS command fails, so that Classify reports it as
// starttls-not-supported. Under an enforced policy, skip that MX.
var ErrNoSTARTTLS = errors.New("mtasts: MX host does not offer STARTTLS")

// Classify turns an error from this package, from crypto/tls or from
// crypto/x509 into the RFC 8460 result type to report and a short failure
// reason code (for the report's failure-reason-code). It looks through
// wrapping with errors.Is and errors.As.
//
// An error that is not the receiving domain's failure gives "", "": nil, a
// domain with no record (ErrNoRecord), a malformed domain given to Lookup
// (ErrInvalidDomain), and the sender's own cache problems (ErrCache,
// ErrCacheCorrupt, ErrCacheMiss). Do not report those to the domain.
//
// An MX host that matches no pattern of an enforced policy has no result type
// of its own in RFC 8460; it is reported as validation-failure with reason
// "mx-not-allowed".
func Classify(err error) (ResultType, string) {
	switch {
	case err == nil, errors.Is(err, ErrNoRecord), errors.Is(err, ErrInvalidDomain),
		errors.Is(err, ErrCache), errors.Is(err, ErrCacheCorrupt), errors.Is(err, ErrCacheMiss):
		return "", ""

	// Policy discovery and fetch. The certificate of the policy host is a
	// policy failure, not a negotiation one, so these come first.
	case errors.Is(err, ErrWebPKI):
		_, reason, _ := certResult(err)
		return ResultSTSWebPKIInvalid, reason
	case errors.Is(err, ErrRedirect):
		return ResultSTSPolicyFetchError, "http-redirect"
	case errors.Is(err, ErrHTTPStatus):
		return ResultSTSPolicyFetchError, "http-status"
	case errors.Is(err, ErrMediaType):
		return ResultSTSPolicyFetchError, "media-type"
	case errors.Is(err, ErrPolicyTooLarge):
		return ResultSTSPolicyFetchError, "policy-too-large"
	case errors.Is(err, ErrFetchTimeout):
		return ResultSTSPolicyFetchError, "timeout"
	case errors.Is(err, ErrPolicyFetch):
		return ResultSTSPolicyFetchError, "fetch-failed"
	case errors.Is(err, ErrDNSTemporary):
		return ResultSTSPolicyFetchError, "dns-failure"
	case errors.Is(err, ErrInvalidPolicy):
		return ResultSTSPolicyInvalid, "policy-syntax"
	case errors.Is(err, ErrMultipleRecords):
		return ResultSTSPolicyInvalid, "multiple-records"
	case errors.Is(err, ErrInvalidRecord):
		return ResultSTSPolicyInvalid, "record-syntax"

	// Delivery to an MX host.
	case errors.Is(err, ErrMXNotAllowed):
		return ResultValidationFailure, "mx-not-allowed"
	case errors.Is(err, ErrNoSTARTTLS):
		return ResultSTARTTLSNotSupported, "starttls-not-offered"
	}
	if typ, reason, ok := certResult(err); ok {
		return typ, reason
	}
	return ResultValidationFailure, "tls-failure"
}

// certResult classifies a certificate verification failure, of an MX host or
// of the policy host. ok is false if err is none; the reason is then
// "certificate-invalid", the policy host's default.
func certResult(err error) (_ ResultType, reason string, ok bool) {
	var (
		herr x509.HostnameError
		uerr x509.UnknownAuthorityError
		ierr x509.CertificateInvalidError
		cve  *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &herr):
		return ResultCertificateHostMismatch, "certificate-host-mismatch", true
	case errors.As(err, &ierr) && ierr.Reason == x509.Expired:
		return ResultCertificateExpired, "certificate-expired", true
	case errors.As(err, &uerr):
		return ResultCertificateNotTrusted, "certificate-not-trusted", true
	case errors.As(err, &ierr), errors.As(err, &cve):
		return ResultCertificateNotTrusted, "certificate-invalid", true
	default:
		return "", "certificate-invalid", false
	}
}
