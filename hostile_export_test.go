package mtasts

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
)

// DefaultTransportClone returns a copy of the transport that a Resolver
// without an HTTPClient uses, so that tests can point it at a loopback server
// and a test authority while keeping its limits (header size, compression,
// timeouts).
func DefaultTransportClone() *http.Transport { return defaultTransport().Clone() }

// UseDefaultClient makes r fetch as it does with no HTTPClient, but
// connecting with dial and trusting roots, so that tests can point the
// default fetch path at a loopback server and a test authority.
func UseDefaultClient(r *Resolver, dial func(ctx context.Context, network, addr string) (net.Conn, error), roots *x509.CertPool) {
	r.HTTPClient, r.directDial, r.directRoots = nil, dial, roots
}
