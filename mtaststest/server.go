// Package mtaststest provides a small fake MTA-STS world on loopback for tests,
// in the spirit of net/http/httptest.
//
// A Server runs a DNS server (UDP and TCP on one port of 127.0.0.1) and an
// HTTPS server (also on 127.0.0.1) whose certificates are issued on demand by
// a certificate authority the Server makes in memory. Tests publish records and
// policies on it, break them on purpose with faults, and count what clients
// asked for. Nothing leaves the loopback interface.
//
// Resolver returns an *mtasts.Resolver wired to the Server; Client returns an
// *http.Client that reaches the HTTPS server whatever host it asks for and
// trusts only the Server's authority; NetResolver returns a *net.Resolver that
// asks the fake DNS, for a sender's own MX lookups.
//
// A CA, made with NewCA or taken from a Server with Server.CA, issues the
// STARTTLS certificates of the MX hosts a sender's test runs itself: good, or
// broken in one way each (expired, for the wrong name, untrusted, ...), as
// the CertKind constants list. Server.StartMX runs such an MX host: an SMTP
// server on loopback with STARTTLS (or without it, or refusing it), that
// keeps the messages it accepts; Server.DialMX is the dialer that takes a
// sender to it by MX name. A Clock is a settable time source for the Now
// fields of the package's types. Domains may be given in U-labels.
//
// A typical test:
//
//	func TestSendRefusesUnlistedMX(t *testing.T) {
//		t.Parallel()
//		ts := mtaststest.NewServer()
//		defer ts.Close()
//		ts.Publish("example.com", "1", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")
//
//		p, err := ts.Resolver().Lookup(context.Background(), "example.com")
//		require.NoError(t, err)
//		require.NotNil(t, p)
//		assert.ErrorIs(t, p.Validate("mx.attacker.example"), mtasts.ErrMXNotAllowed)
//
//		// A new Resolver has nothing cached, so the broken certificate shows.
//		ts.SetPolicyFault("example.com", mtaststest.PolicyCertExpired)
//		_, err = ts.Resolver().Lookup(context.Background(), "example.com")
//		assert.ErrorIs(t, err, mtasts.ErrWebPKI)
//	}
//
// A Server is safe for concurrent use by multiple goroutines, and a test may
// run many Servers at once: the package has no global mutable state.
package mtaststest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"

	"github.com/seedc2a895ea/mtasts"
)

// DefaultTTL is the TTL, in seconds, of every DNS answer until SetTTL changes it.
const DefaultTTL = 300

// WellKnownPath is the path of the policy file on a policy host (RFC 8461 §3.3).
const WellKnownPath = "/.well-known/mta-sts.txt"

// A Server is a fake DNS server and a fake HTTPS server on loopback, with the
// records, policies and faults a test sets on it. Create one with NewServer and
// stop it with Close.
type Server struct {
	dnsAddr   string // host:port, UDP and TCP
	httpsAddr string // host:port

	ca *CA // issues the HTTPS server's certificates

	udp, tcp  *dns.Server
	https     *http.Server
	httpsDone chan struct{} // closed when the HTTPS serve loop has returned
	closing   chan struct{} // closed by Close; requests held by PolicyNoResponse return
	closeOnce sync.Once

	// mu guards every field below, and idle is signalled on it.
	mu           sync.Mutex
	idle         *sync.Cond // signalled when active drops to zero
	active       int        // HTTP requests being served
	closed       bool
	ttl          uint32
	names        map[string]*rrset       // owner name (lower case, fully qualified) -> records
	dnsFaults    map[string]DNSFault     // owner name (as in names) -> fault
	policies     map[string]string       // policy domain (lower case, no final dot) -> policy body
	handlers     map[string]http.Handler // host (lower case, no final dot) -> handler
	policyFaults map[string]PolicyFault  // policy domain -> fault
	transports   []*http.Transport       // of the clients handed out, to close idle connections
	mxs          map[string]*MX          // MX host -> the MX started for it

	dnsQueries       int
	dnsQueriesByName map[string]int // name (lower case, no final dot) -> queries
	queryLog         []string       // "name TYPE"
	policyFetches    int
	fetchesByDomain  map[string]int // policy domain -> requests for WellKnownPath on mta-sts.<domain>
	requests         map[string]int // host -> HTTPS requests, any path

	// certMu guards certs.
	certMu sync.Mutex
	certs  map[certKey]*tls.Certificate
}

// NewServer starts a Server on 127.0.0.1. It panics if it cannot listen or
// make its certificate authority, as httptest.NewServer does.
func NewServer() *Server {
	s := &Server{
		ttl:              DefaultTTL,
		names:            map[string]*rrset{},
		dnsFaults:        map[string]DNSFault{},
		policies:         map[string]string{},
		handlers:         map[string]http.Handler{},
		policyFaults:     map[string]PolicyFault{},
		dnsQueriesByName: map[string]int{},
		fetchesByDomain:  map[string]int{},
		requests:         map[string]int{},
		certs:            map[certKey]*tls.Certificate{},
		closing:          make(chan struct{}),
		httpsDone:        make(chan struct{}),
	}
	s.idle = sync.NewCond(&s.mu)
	s.ca = NewCA()
	if err := s.startDNS(); err != nil {
		panic("mtaststest: starting the DNS server: " + err.Error())
	}
	if err := s.startHTTPS(); err != nil {
		s.udp.Shutdown()
		s.tcp.Shutdown()
		panic("mtaststest: starting the HTTPS server: " + err.Error())
	}
	return s
}

// Close stops both servers. It blocks until the requests being served have
// returned: requests held by PolicyNoResponse return at once, and a handler
// given to Handle must return once its request's context is done. It then
// closes the idle connections of the clients handed out. Close may be called
// more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		// Closing the HTTP server closes every connection, which cancels the
		// contexts of the requests still being served.
		s.https.Close()
		<-s.httpsDone
		s.mu.Lock()
		s.closed = true
		for s.active > 0 {
			s.idle.Wait()
		}
		transports := append([]*http.Transport(nil), s.transports...)
		s.transports = nil
		mxs := s.mxs
		s.mxs = nil
		s.mu.Unlock()
		for _, m := range mxs {
			m.Close()
		}
		// Shutdown waits for the DNS handlers, which never block.
		s.udp.Shutdown()
		s.tcp.Shutdown()
		for _, tr := range transports {
			tr.CloseIdleConnections()
		}
	})
}

// DNSAddr returns the host:port of the DNS server, which answers over UDP and
// TCP on the same port.
func (s *Server) DNSAddr() string { return s.dnsAddr }

// HTTPSAddr returns the host:port of the HTTPS server, which serves every host
// name.
func (s *Server) HTTPSAddr() string { return s.httpsAddr }

// CACert returns the certificate of the Server's certificate authority, which
// signs every certificate the HTTPS server presents except those broken with
// PolicyCertUntrusted.
func (s *Server) CACert() *x509.Certificate { return s.ca.Certificate() }

// RootCAs returns a new pool holding only the Server's certificate authority,
// for callers that build their own tls.Config.
func (s *Server) RootCAs() *x509.CertPool { return s.ca.Pool() }

// CA returns the Server's certificate authority. A test that runs MX hosts
// for a sender can issue their certificates from it, so that RootCAs is the
// one pool the sender needs for both the policy hosts and the MX hosts.
func (s *Server) CA() *CA { return s.ca }

// Client returns a new HTTP client that connects to the HTTPS server whatever
// host a request names, sends that host as SNI, trusts only the Server's
// certificate authority and speaks TLS 1.2 or later. It uses no proxy and
// follows redirects as http.Client does by default (an mtasts.Resolver forbids
// them itself). Each call returns a client with its own connection pool; the
// Server closes the pool's idle connections when a certificate fault changes
// and when it closes.
func (s *Server) Client() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", s.httpsAddr)
		},
		TLSClientConfig: &tls.Config{
			RootCAs:    s.RootCAs(),
			MinVersion: tls.VersionTLS12, // RFC 8461 §7.2
		},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	s.mu.Lock()
	if s.closed {
		// Nothing will close its idle connections later; there are none yet,
		// and any new one fails to dial.
		s.mu.Unlock()
		return &http.Client{Transport: tr}
	}
	s.transports = append(s.transports, tr)
	s.mu.Unlock()
	return &http.Client{Transport: tr}
}

// Resolver returns a new mtasts.Resolver that asks the Server's DNS and
// fetches policies with a new Client. The caller may set its other fields
// (Now, Cache, OnError, timeouts) before its first use.
func (s *Server) Resolver() *mtasts.Resolver {
	return &mtasts.Resolver{
		Nameservers: []string{s.dnsAddr},
		HTTPClient:  s.Client(),
	}
}

// NetResolver returns a *net.Resolver that sends every query to the Server's
// DNS, for the MX lookups of a sender under test. Pass names fully qualified
// ("example.com.") so that no search domain of the host is tried.
func (s *Server) NetResolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.dnsAddr)
		},
	}
}

// closeIdleConnections closes the idle connections of the clients handed out,
// so that the next request makes a new TLS handshake.
func (s *Server) closeIdleConnections() {
	s.mu.Lock()
	transports := append([]*http.Transport(nil), s.transports...)
	s.mu.Unlock()
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
}

// startHTTPS listens on 127.0.0.1:0 and serves TLS with certificates issued
// per SNI name.
func (s *Server) startHTTPS() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.httpsAddr = ln.Addr().String()
	s.https = &http.Server{
		Handler: http.HandlerFunc(s.serveHTTP),
		TLSConfig: &tls.Config{
			GetCertificate: s.getCertificate,
			MinVersion:     tls.VersionTLS12,
			// Without resumption every connection shows the current certificate.
			SessionTicketsDisabled: true,
		},
		ReadHeaderTimeout: 10 * time.Second,
		// Handshakes that fail on purpose (certificate faults) would
		// otherwise be logged to stderr.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(s.httpsDone)
		s.https.ServeTLS(ln, "", "")
	}()
	return nil
}

// hostName returns host in the form used as a key: lower case, without port
// or final dot.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(aLabels(host), ".")
}

// aLabels returns name in lower case, its U-labels (an internationalized
// domain name, "bücher.example") converted to A-labels ("xn--bcher-kva.example"),
// the form in which DNS and TLS carry it. It panics on a name that cannot be
// converted: a test that publishes something no client could ask for should
// fail loudly, not publish nothing.
func aLabels(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(name)
			if err != nil {
				panic("mtaststest: " + strconv.Quote(name) + " is not a valid domain name: " + err.Error())
			}
			return strings.ToLower(a)
		}
	}
	return strings.ToLower(name)
}
