package mtasts

import (
	"bufio"
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
	"sync"
	"time"
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
	resp, err := r.get(req)
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

// get sends the policy request: through HTTPClient if there is one, or a
// proxy if the environment names one, and otherwise as a single GET on a new
// connection of its own (getDirect).
func (r *Resolver) get(req *http.Request) (*http.Response, error) {
	if r.HTTPClient == nil {
		proxy, err := http.ProxyFromEnvironment(req)
		if r.directDial != nil || err == nil && proxy == nil {
			return getDirect(req, r.directDial, r.directRoots)
		}
	}
	return r.fetchClient().Do(req)
}

// A dialFunc connects to an address, as net.Dialer.DialContext does.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// maxHeaderBytes bounds the status line and headers of a policy response.
const maxHeaderBytes = 64 << 10

// getDirect sends req, a GET for an https URL, on a new TLS connection and
// reads the response with net/http's parser. A fetch is one GET to a host that
// is asked again only when its policy changes or expires, so there is nothing
// to pool; doing without net/http's transport saves the goroutines it starts
// for each connection (dial, handshake, read and write), which were most of
// what a cold Lookup cost beyond its network round trips. The limits are those
// of the default client: TLS 1.2 or later, 64 KiB of headers, no compression
// asked for, no redirect followed. The connection is closed with the body.
// dial and roots, if nil, are a net.Dialer's and the system's.
func getDirect(req *http.Request, dial dialFunc, roots *x509.CertPool) (_ *http.Response, err error) {
	ctx := req.Context()
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: -1}).DialContext
	}
	host := req.URL.Hostname()
	conn, err := dial(ctx, "tcp", net.JoinHostPort(host, "443"))
	if err != nil {
		return nil, err
	}
	// ctx ends any read or write at once, in the handshake, the headers or the
	// body.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if err != nil {
			stop()
			conn.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
		}
	}()
	// RFC 8461 §7.1, §7.2: SNI for the policy host, TLS 1.2 or later, a
	// certificate valid for that name.
	tc := tls.Client(conn, &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: roots})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	// RFC 8461 §3.3: HTTP caching MUST NOT be used; nothing here caches.
	if _, err := io.WriteString(tc, "GET "+req.URL.RequestURI()+" HTTP/1.1\r\nHost: "+host+
		"\r\nUser-Agent: mtasts\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, err
	}
	// The headers get maxHeaderBytes, the body (in chunks, if it is chunked)
	// a little more than MaxPolicySize, so that fetch can tell it is too large.
	lr := &io.LimitedReader{R: tc, N: maxHeaderBytes}
	resp, err := http.ReadResponse(bufio.NewReader(lr), req)
	if err != nil {
		if lr.N <= 0 {
			err = fmt.Errorf("headers longer than %d bytes: %w", maxHeaderBytes, err)
		}
		return nil, err
	}
	lr.N += MaxPolicySize + 16<<10
	state := tc.ConnectionState()
	resp.TLS = &state
	resp.Body = &closeBody{resp.Body, func() { stop(); tc.Close() }}
	return resp, nil
}

// closeBody is a response body that closes its connection too.
type closeBody struct {
	io.ReadCloser
	closeConn func()
}

func (b *closeBody) Close() error {
	err := b.ReadCloser.Close()
	b.closeConn()
	return err
}

// fetchClient is HTTPClient, or the default client, made never to follow a
// redirect and never to send cookies.
func (r *Resolver) fetchClient() *http.Client {
	r.clientOnce.Do(func() {
		c := r.HTTPClient
		if c == nil {
			c = &http.Client{Transport: defaultTransport()}
		}
		cc := *c
		// RFC 8461 §3.3: redirects MUST NOT be followed, whatever the caller's client does.
		cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		cc.Jar = nil
		r.client = &cc
	})
	return r.client
}

// defaultTransport is what a Resolver without an HTTPClient fetches through
// when the environment names a proxy; it is shared, so that such Resolvers
// share its connections.
var defaultTransport = sync.OnceValue(func() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// RFC 8461 §7.2: TLS 1.2 or later. Certificates are verified against
		// the system roots for the policy host name, which is also the SNI.
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		// HTTP/1.1 only: a fetch is one GET on a connection of its own, which
		// HTTP/2 makes dearer (its preface and SETTINGS on both sides, more
		// goroutines) and no faster.
		ForceAttemptHTTP2:      false,
		MaxIdleConns:           100,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		// A policy is a few hundred bytes; compression buys nothing and a
		// decompressor is one more thing a hostile server could exercise.
		DisableCompression: true,
	}
})
