package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
)

// MaxPolicySize is the largest policy body accepted, the limit RFC 8461 §3.3
// suggests.
const MaxPolicySize = 64 << 10

// policyURL is where a domain's policy is published (RFC 8461 §3.3).
func policyURL(domain string) string {
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

// fetch gets and parses the domain's policy. Fetch failures wrap
// ErrPolicyFetch; a policy that does not parse wraps ErrInvalidPolicy.
func (r *Resolver) fetch(ctx context.Context, domain string) (*Policy, error) {
	ctx, cancel := context.WithTimeout(ctx, r.fetchTimeout())
	defer cancel()
	url := policyURL(domain)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicyFetch, err)
	}
	resp, err := r.fetchClient().Do(req)
	if err != nil {
		return nil, fetchError(url, err)
	}
	defer resp.Body.Close()
	// RFC 8461 §7.2: TLS 1.2 or later. The default client refuses less; a
	// caller's client might not.
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		return nil, fmt.Errorf("%w: %w: %s: not TLS 1.2 or later", ErrPolicyFetch, ErrWebPKI, url)
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		// RFC 8461 §3.3: redirects MUST NOT be followed.
		return nil, fmt.Errorf("%w: %w: %s: %s to %q", ErrPolicyFetch, ErrRedirect, url, resp.Status, resp.Header.Get("Location"))
	case resp.StatusCode != http.StatusOK:
		// RFC 8461 §3.3: only 200 is a valid response.
		return nil, fmt.Errorf("%w: %w: %s: %s", ErrPolicyFetch, ErrHTTPStatus, url, resp.Status)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("%w: %w: %s: %q", ErrPolicyFetch, ErrMediaType, url, ct)
	}
	// A body the client did not decode (an encoding it did not ask for) is
	// not the text/plain policy.
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return nil, fmt.Errorf("%w: %w: %s: Content-Encoding %q", ErrPolicyFetch, ErrMediaType, url, ce)
	}
	if resp.ContentLength > MaxPolicySize {
		return nil, fmt.Errorf("%w: %w: %s: Content-Length %d", ErrPolicyFetch, ErrPolicyTooLarge, url, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err == nil && ctx.Err() != nil {
		// A body that ends when the connection does (HTTP/1.0 without a
		// length) can read as complete once the deadline has closed it: what
		// was read may be cut short.
		err = ctx.Err()
	}
	if err != nil {
		return nil, fetchError(url, err)
	}
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("%w: %w: %s: more than %d bytes", ErrPolicyFetch, ErrPolicyTooLarge, url, MaxPolicySize)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return p, nil
}

// fetchError classifies a transport error: certificate failures wrap
// ErrWebPKI, deadlines ErrFetchTimeout, and all wrap ErrPolicyFetch.
func fetchError(url string, err error) error {
	var (
		cve  *tls.CertificateVerificationError
		herr x509.HostnameError
		uerr x509.UnknownAuthorityError
		ierr x509.CertificateInvalidError
		nerr net.Error
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &herr), errors.As(err, &uerr), errors.As(err, &ierr):
		return fmt.Errorf("%w: %w: %s: %w", ErrPolicyFetch, ErrWebPKI, url, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Errorf("%w: %w: %s: %w", ErrPolicyFetch, ErrFetchTimeout, url, err)
	default:
		return fmt.Errorf("%w: %s: %w", ErrPolicyFetch, url, err)
	}
}

// fetchClient is HTTPClient, or the default client (one built by
// newPolicyTransport for this Resolver), made never to follow a redirect and
// never to send cookies.
func (r *Resolver) fetchClient() *http.Client {
	r.clientOnce.Do(func() {
		c := r.HTTPClient
		if c == nil {
			c = &http.Client{Transport: newPolicyTransport(r.dialPolicyHost, nil)}
		}
		cc := *c
		// RFC 8461 §3.3: redirects MUST NOT be followed, whatever the caller's client does.
		cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		cc.Jar = nil
		r.client = &cc
	})
	return r.client
}

// newPolicyTransport returns the transport of the default client, the one a
// Resolver without an HTTPClient fetches through. dial connects to the policy
// host (or to the proxy); roots, if nil, are the system's. A fetch is one GET
// to a host that is asked again only when its policy changes or expires, so
// the transport keeps no connection for another: each fetch has one of its
// own, closed with the response body.
func newPolicyTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error), roots *x509.CertPool) *http.Transport {
	// HTTP/1.1 only: HTTP/2 costs a fetch its preface and SETTINGS on both
	// sides and more goroutines, and buys nothing for one GET.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		DialContext:       dial,
		DisableKeepAlives: true,
		Protocols:         &protocols,
		// RFC 8461 §7.1, §7.2: TLS 1.2 or later, and a certificate valid for
		// the policy host name, which is also the SNI.
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		MaxResponseHeaderBytes: maxHeaderBytes,
		// A policy is a few hundred bytes; compression buys nothing and a
		// decompressor is one more thing a hostile server could exercise.
		DisableCompression: true,
		// No timeouts of its own: FetchTimeout bounds the whole fetch.
	}
}

// maxHeaderBytes bounds the status line and headers of a policy response.
const maxHeaderBytes = 64 << 10
