package mtasts

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
)

// DefaultClient returns a client on the transport that a Resolver without an
// HTTPClient builds (newPolicyTransport), but connecting with dial and
// trusting roots, so that tests can point the default client at a loopback
// server and a test authority. It takes no proxy from the environment, so
// that it reaches the server whatever the environment says. Set as a
// Resolver's HTTPClient, it fetches as the default client does: fetch makes
// any client follow no redirect and send no cookie.
func DefaultClient(dial func(ctx context.Context, network, addr string) (net.Conn, error), roots *x509.CertPool) *http.Client {
	tr := newPolicyTransport(dial, roots)
	tr.Proxy = nil
	return &http.Client{Transport: tr}
}
