package mtasts

import "net/http"

// DefaultTransportClone returns a copy of the transport that a Resolver
// without an HTTPClient uses, so that tests can point it at a loopback server
// and a test authority while keeping its limits (header size, compression,
// timeouts).
func DefaultTransportClone() *http.Transport { return defaultTransport().Clone() }
