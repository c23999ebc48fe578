package mtasts

import (
	"context"
	"crypto/x509"
	"net"
)

// UseDefaultClient makes r fetch as it does with no HTTPClient, but
// connecting with dial and trusting roots, so that tests can point the
// default fetch path at a loopback server and a test authority.
func UseDefaultClient(r *Resolver, dial func(ctx context.Context, network, addr string) (net.Conn, error), roots *x509.CertPool) {
	r.HTTPClient, r.directDial, r.directRoots = nil, dial, roots
}
