package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
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
// STARTTLS in its EHLO reply, so that Classify reports it as
// starttls-not-supported (RFC 8460 §4.3.1). When the host offers STARTTLS but
// answers the command with an error reply, such as 454 (RFC 3207 §4), wrap
// the reply with STARTTLSRefused instead. Under an enforced policy, skip that
// MX host.
var ErrNoSTARTTLS = errors.New("mtasts: MX host does not offer STARTTLS")

// STARTTLSRefused returns the error to report when an MX host answers the
// STARTTLS command with an error reply, such as "454 4.7.0 TLS not
// available" (RFC 3207 §4): reply is that reply's error, a *textproto.Error
// from net/smtp's Client.StartTLS or the SMTP client's own type. The result
// wraps ErrNoSTARTTLS and reply, and Classify gives it
// starttls-not-supported with reason "starttls-refused". STARTTLSRefused(nil)
// is nil.
//
// Only the sender can tell such a reply from a failed handshake, which its
// SMTP client also returns from StartTLS: after a reply the session goes on
// in plain text, after a failed handshake it is over. Under an enforced
// policy skip the MX host either way; otherwise deliver in plain text after
// a refusal.
func STARTTLSRefused(reply error) error {
	if reply == nil {
		return nil
	}
	return &starttlsRefusedError{reply: reply}
}

type starttlsRefusedError struct{ reply error }

func (e *starttlsRefusedError) Error() string {
	return "mtasts: MX host refused STARTTLS: " + e.reply.Error()
}

func (e *starttlsRefusedError) Unwrap() []error { return []error{ErrNoSTARTTLS, e.reply} }

// policyReasons are the failures of policy discovery and fetch, other than
// the policy host's certificate, in the order Classify tries them: the first
// error that an error wraps gives its result type and reason code.
var policyReasons = []struct {
	err    error
	typ    ResultType
	reason string
}{
	{ErrRedirect, ResultSTSPolicyFetchError, "http-redirect"},
	{ErrHTTPStatus, ResultSTSPolicyFetchError, "http-status"},
	{ErrMediaType, ResultSTSPolicyFetchError, "media-type"},
	{ErrPolicyTooLarge, ResultSTSPolicyFetchError, "policy-too-large"},
	{ErrFetchTimeout, ResultSTSPolicyFetchError, "timeout"},
	{ErrPolicyFetch, ResultSTSPolicyFetchError, "fetch-failed"},
	{ErrDNSTemporary, ResultSTSPolicyFetchError, "dns-failure"},
	{ErrInvalidPolicy, ResultSTSPolicyInvalid, "policy-syntax"},
	{ErrMultipleRecords, ResultSTSPolicyInvalid, "multiple-records"},
	{ErrInvalidRecord, ResultSTSPolicyInvalid, "record-syntax"},
}

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
// An error this package does not know gives "", "" too: a connection
// refused or timed out, an SMTP reply such as a 4xx to MAIL, the end of the
// sender's own context (context.Canceled, context.DeadlineExceeded). Those
// are not TLS failures of the domain's, and ReportCollector.Add refuses
// them. The TLS failures it knows besides certificates (a TLS alert, a
// record that is not TLS, an error of crypto/tls's, whose text begins with
// "tls: ") give validation-failure with reason "tls-failure". An MX host that
// does not offer STARTTLS is the sender's to tell: wrap ErrNoSTARTTLS, or use
// STARTTLSRefused for an error reply to the command.
//
// An MX host that matches no pattern of an enforced policy has no result type
// of its own in RFC 8460; it is reported as validation-failure with reason
// "mx-not-allowed".
func Classify(err error) (ResultType, string) {
	if sf := (*sharedFailure)(nil); errors.As(err, &sf) {
		return sf.result, sf.reason
	}
	switch {
	case err == nil, errors.Is(err, ErrNoRecord), errors.Is(err, ErrInvalidDomain),
		errors.Is(err, ErrCache), errors.Is(err, ErrCacheCorrupt), errors.Is(err, ErrCacheMiss):
		return "", ""

	// Policy discovery and fetch. The certificate of the policy host is a
	// policy failure, not a negotiation one, so these come first.
	case errors.Is(err, ErrWebPKI):
		_, reason, _ := certResult(err)
		return ResultSTSWebPKIInvalid, reason
	}
	for _, pr := range policyReasons {
		if errors.Is(err, pr.err) {
			return pr.typ, pr.reason
		}
	}
	switch {
	// Delivery to an MX host.
	case errors.Is(err, ErrMXNotAllowed):
		return ResultValidationFailure, "mx-not-allowed"
	case errors.As(err, new(*starttlsRefusedError)):
		return ResultSTARTTLSNotSupported, "starttls-refused"
	case errors.Is(err, ErrNoSTARTTLS):
		return ResultSTARTTLSNotSupported, "starttls-not-offered"
	}
	if typ, reason, ok := certResult(err); ok {
		return typ, reason
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The sender's own deadline or cancellation, whatever it interrupted.
		return "", ""
	}
	if isTLSError(err) {
		return ResultValidationFailure, "tls-failure"
	}
	return "", ""
}

// isTLSError reports whether err is a failure of the TLS protocol as
// crypto/tls returns it: an alert received or sent (a *net.OpError whose Op
// is "remote error" or "local error"), a tls.AlertError, a
// tls.RecordHeaderError (the peer does not speak TLS), or an error whose text
// begins with "tls: ", as every one of crypto/tls's own does.
func isTLSError(err error) bool {
	var (
		op  *net.OpError
		rhe tls.RecordHeaderError
		ae  tls.AlertError
	)
	if errors.As(err, &op) && (op.Op == "remote error" || op.Op == "local error") {
		return true
	}
	if errors.As(err, &rhe) || errors.As(err, &ae) {
		return true
	}
	return hasTLSText(err)
}

// hasTLSText reports whether err, or an error it wraps, has a text beginning
// with "tls: ".
func hasTLSText(err error) bool {
	for err != nil {
		if strings.HasPrefix(err.Error(), "tls: ") {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if hasTLSText(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
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
