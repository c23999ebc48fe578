package mtasts

import "errors"

// Errors are grouped by the phase that produces them. Each one that Lookup
// returns or reports wraps one of the phase sentinels below and, where there is
// one, the underlying cause, so that errors.Is and errors.As see both.

// Input.
var (
	// ErrInvalidDomain means the domain given to Lookup is empty, malformed or an
	// address literal. Nothing was sent on the network; deliver as usual (an
	// address literal has no policy, RFC 8461 §3.4).
	ErrInvalidDomain = errors.New("mtasts: invalid domain")
)

// Discovery: the _mta-sts TXT record (RFC 8461 §3.1).
var (
	// ErrNoRecord means the domain publishes no MTA-STS record (NXDOMAIN, or no
	// TXT record beginning "v=STSv1"). Deliver as usual.
	ErrNoRecord = errors.New("mtasts: no MTA-STS record")

	// ErrInvalidRecord means the one STS record is malformed. It counts as no
	// record: deliver as usual, and tell the domain's owner if you can.
	ErrInvalidRecord = errors.New("mtasts: invalid MTA-STS record")

	// ErrMultipleRecords means more than one STS record was published. It counts
	// as no record (RFC 8461 §3.1).
	ErrMultipleRecords = errors.New("mtasts: more than one MTA-STS record")

	// ErrDNSTemporary means the TXT query failed (SERVFAIL, REFUSED, timeout,
	// malformed answer). A cached policy stays in force; without one, deliver as
	// usual and try again later.
	ErrDNSTemporary = errors.New("mtasts: temporary DNS failure")
)

// Fetching the policy over HTTPS (RFC 8461 §3.3). Every fetch failure wraps
// ErrPolicyFetch (RFC 8460 result type sts-policy-fetch-error, or
// sts-webpki-invalid when it also wraps ErrWebPKI) and at most one of the
// more precise sentinels after it.
var (
	// ErrPolicyFetch means the policy could not be fetched. A cached policy stays
	// in force; without one, deliver as though the domain had no policy and
	// report the failure.
	ErrPolicyFetch = errors.New("mtasts: policy fetch failed")

	// ErrWebPKI means the policy host's certificate did not verify for
	// mta-sts.<domain> (RFC 8460 sts-webpki-invalid).
	ErrWebPKI = errors.New("mtasts: policy host certificate invalid")

	// ErrHTTPStatus means the policy host answered with a status other than 200.
	ErrHTTPStatus = errors.New("mtasts: policy host status not 200")

	// ErrRedirect means the policy host answered with a redirect, which RFC 8461
	// §3.3 forbids following.
	ErrRedirect = errors.New("mtasts: policy host redirected")

	// ErrMediaType means the policy was not served as text/plain.
	ErrMediaType = errors.New("mtasts: policy media type not text/plain")

	// ErrPolicyTooLarge means the policy body exceeded MaxPolicySize bytes.
	ErrPolicyTooLarge = errors.New("mtasts: policy too large")

	// ErrFetchTimeout means the fetch did not finish within the Resolver's
	// FetchTimeout or the caller's deadline.
	ErrFetchTimeout = errors.New("mtasts: policy fetch timed out")
)

// The policy file and its use (RFC 8461 §3.2, §4).
var (
	// ErrInvalidPolicy means the policy file does not follow the RFC 8461
	// grammar (RFC 8460 sts-policy-invalid). The error says which line and why.
	ErrInvalidPolicy = errors.New("mtasts: invalid policy")

	// ErrMXNotAllowed means an enforced policy does not list the MX host. Do not
	// deliver to it; try the next MX (RFC 8461 §5).
	ErrMXNotAllowed = errors.New("mtasts: MX host not allowed by policy")
)

// Caching.
var (
	// ErrCacheMiss is returned by a Cache's Get when it holds nothing for the key.
	ErrCacheMiss = errors.New("mtasts: cache miss")

	// ErrCacheCorrupt means a cached entry could not be decoded. Lookup reports
	// it and goes on as though the entry were absent.
	ErrCacheCorrupt = errors.New("mtasts: corrupt cache entry")

	// ErrCache means the Cache failed to read or write. Lookup reports it and
	// goes on with its in-memory cache; fix the store.
	ErrCache = errors.New("mtasts: cache failure")
)
