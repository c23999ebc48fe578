package mtasts_test

// Hostile servers: policy hosts and name servers that misbehave on purpose,
// each on loopback. Every Lookup must end in bounded time and memory with the
// right error, and a cached policy must stay in force through each of them
// (RFC 8461 §3.3, §10.2) while the failure reaches OnError.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// hostileBound is the generous upper bound on any one Lookup against a hostile
// server; the Resolver's own limits end them far sooner.
const hostileBound = 15 * time.Second

// rawPolicyHost is a TLS listener on loopback that reads one HTTP request per
// connection and answers it with hand-written bytes: a valid policy until
// hostile is set, then whatever serve writes. It counts the bytes of HTTP it
// managed to write (after TLS decryption, so before TLS overhead).
type rawPolicyHost struct {
	ln      net.Listener
	pool    *x509.CertPool
	serve   func(c *rawConn, req *http.Request)
	closing chan struct{}

	hostile  atomic.Bool
	written  atomic.Int64
	requests atomic.Int32
	gzipAsk  atomic.Bool // a request asked for gzip

	mu         sync.Mutex // mu guards conns and transports.
	conns      map[net.Conn]bool
	transports []*http.Transport
	wg         sync.WaitGroup
}

// rawConn is one accepted connection, after the TLS handshake.
type rawConn struct {
	*tls.Conn
	tcp  *net.TCPConn
	host *rawPolicyHost
}

func (c *rawConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.host.written.Add(int64(n))
	return n, err
}

// reset closes the connection with a TCP RST instead of a FIN.
func (c *rawConn) reset() {
	c.tcp.SetLinger(0)
	c.tcp.Close()
}

// sleep waits d, or less if the host is closing; it reports whether it
// waited all of d.
func (c *rawConn) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-c.host.closing:
		return false
	}
}

// hold blocks until the client closes the connection (or the host closes).
func (c *rawConn) hold() {
	io.Copy(io.Discard, c)
}

func newRawPolicyHost(t testing.TB, serve func(c *rawConn, req *http.Request)) *rawPolicyHost {
	t.Helper()
	ca := mtaststest.NewCA()
	cert := ca.Issue("mta-sts.d.example", mtaststest.CertGood)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &rawPolicyHost{ln: ln, pool: ca.Pool(), serve: serve, closing: make(chan struct{}), conns: map[net.Conn]bool{}}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns[c] = true
			h.mu.Unlock()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer func() {
					c.Close()
					h.mu.Lock()
					delete(h.conns, c)
					h.mu.Unlock()
				}()
				h.handle(c.(*net.TCPConn), cfg)
			}()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *rawPolicyHost) handle(tcp *net.TCPConn, cfg *tls.Config) {
	// Small socket buffers, here and in dial, keep what the kernel holds in
	// flight small, so that written shows how much the client read.
	tcp.SetWriteBuffer(256 << 10)
	tcp.SetDeadline(time.Now().Add(30 * time.Second)) // every connection ends
	c := &rawConn{Conn: tls.Server(tcp, cfg), tcp: tcp, host: h}
	req, err := http.ReadRequest(bufio.NewReader(c.Conn))
	if err != nil {
		return
	}
	h.requests.Add(1)
	if strings.Contains(req.Header.Get("Accept-Encoding"), "gzip") {
		h.gzipAsk.Store(true)
	}
	if !h.hostile.Load() {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			len(fabrikamEnforce), fabrikamEnforce)
		return
	}
	h.serve(c, req)
}

func (h *rawPolicyHost) close() {
	close(h.closing)
	h.ln.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, tr := range h.transports {
		tr.CloseIdleConnections()
	}
}

func (h *rawPolicyHost) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", h.ln.Addr().String())
	if err == nil {
		c.(*net.TCPConn).SetReadBuffer(256 << 10)
	}
	return c, err
}

func (h *rawPolicyHost) track(tr *http.Transport) *http.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.transports = append(h.transports, tr)
	return &http.Client{Transport: tr}
}

// defaultClient is the client a Resolver uses when HTTPClient is nil, with its
// limits, but dialling the host and trusting its authority.
func (h *rawPolicyHost) defaultClient() *http.Client {
	return mtasts.DefaultClient(h.dial, h.pool)
}

// callerClient is a caller's plain client: net/http's defaults (compression
// asked for, 10 MB of headers), dialling the host and trusting its authority.
func (h *rawPolicyHost) callerClient() *http.Client {
	return h.track(&http.Transport{DialContext: h.dial, TLSClientConfig: &tls.Config{RootCAs: h.pool}})
}

const textHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"

// stream writes pattern to c again and again, up to total bytes, until a
// write fails. chunked frames each write as an HTTP/1.1 chunk.
func stream(c *rawConn, pattern []byte, total int64, chunked bool) {
	var frame []byte
	if chunked {
		frame = fmt.Appendf(nil, "%x\r\n%s\r\n", len(pattern), pattern)
	} else {
		frame = pattern
	}
	for sent := int64(0); sent < total; sent += int64(len(pattern)) {
		if _, err := c.Write(frame); err != nil {
			return
		}
	}
}

// padding is 4 KiB of extension lines, valid policy syntax, so that only the
// size limit refuses a body made of it.
var padding = []byte(strings.Repeat("padding: "+strings.Repeat("x", 54)+"\n", 64))

// gzipBomb returns members gzip members of 1 MiB of zeros each, one after
// another: a valid gzip stream (net/http reads every member) that inflates
// to members MiB from about a thousandth of that.
func gzipBomb(t testing.TB, members int) []byte {
	t.Helper()
	var one bytes.Buffer
	zw, err := gzip.NewWriterLevel(&one, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return bytes.Repeat(one.Bytes(), members)
}

// outcome is what a Lookup should give: a policy (want nil) or an error
// wrapping every sentinel of want.
type outcome struct {
	want []error
}

func fails(errs ...error) outcome { return outcome{want: errs} }

var succeeds = outcome{}

type httpCase struct {
	name   string
	serve  func(c *rawConn, req *http.Request)
	dflt   outcome // with the default client's limits
	caller outcome // with a caller's plain client
	// maxWritten bounds the bytes the host may manage to write, when the
	// case streams more than the client should read; zero for no bound.
	maxWritten int64
	// slow marks a case that waits for FetchTimeout: it is skipped under
	// -short, and run with the default client only, since the deadline is
	// the fetch's own whatever the client.
	slow bool
	// fetchTimeout, if not zero, replaces the one second of FetchTimeout,
	// for a case that must meet another limit first.
	fetchTimeout time.Duration
}

func hostileHTTPCases(t testing.TB) []httpCase {
	smallBomb := gzipBomb(t, 48) // 48 MiB inflated
	require.Less(t, len(smallBomb), mtasts.MaxPolicySize, "the bomb must fit the size limit compressed")
	timeout := fails(mtasts.ErrPolicyFetch, mtasts.ErrFetchTimeout)
	tooLarge := fails(mtasts.ErrPolicyFetch, mtasts.ErrPolicyTooLarge)
	const gb = 1 << 30
	return []httpCase{
		{name: "slowloris body", slow: true, serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Content-Length: %d\r\n\r\n", len(fabrikamEnforce))
			for i := 0; i < len(fabrikamEnforce) && c.sleep(time.Second); i++ {
				if _, err := c.Write([]byte{fabrikamEnforce[i]}); err != nil {
					return
				}
			}
		}, dflt: timeout, caller: timeout},
		{name: "slowloris headers", slow: true, serve: func(c *rawConn, _ *http.Request) {
			head := textHead + "X-Drip: " + strings.Repeat("x", 60) + "\r\n"
			for i := 0; i < len(head) && c.sleep(time.Second); i++ {
				if _, err := c.Write([]byte{head[i]}); err != nil {
					return
				}
			}
		}, dflt: timeout, caller: timeout},
		{name: "chunked body never closed", slow: true, serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(fabrikamEnforce), fabrikamEnforce)
			c.hold()
		}, dflt: timeout, caller: timeout},
		{name: "chunked body without end", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, textHead+"Transfer-Encoding: chunked\r\n\r\n")
			stream(c, padding, gb, true)
		}, dflt: tooLarge, caller: tooLarge, maxWritten: 4 << 20},
		{name: "1 GB with Content-Length", serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Content-Length: %d\r\n\r\n", gb)
			stream(c, padding, gb, false)
		}, dflt: tooLarge, caller: tooLarge, maxWritten: 4 << 20},
		{name: "1 GB chunked", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, textHead+"Transfer-Encoding: chunked\r\n\r\n")
			stream(c, padding, gb, true)
		}, dflt: tooLarge, caller: tooLarge, maxWritten: 4 << 20},
		{name: "1 GB HTTP/1.0 without length", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+fabrikamEnforce)
			stream(c, padding, gb, false)
		}, dflt: tooLarge, caller: tooLarge, maxWritten: 4 << 20},
		// Unasked-for gzip: the default client neither asks for compression
		// nor inflates, so the body is refused for its encoding unread; a
		// caller's client that asks inflates it and the size limit stops it.
		{name: "gzip bomb", serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(smallBomb))
			c.Write(smallBomb)
		}, dflt: fails(mtasts.ErrMediaType), caller: tooLarge},
		{name: "100 KB of headers", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, textHead)
			for i := range 100 {
				fmt.Fprintf(c, "X-Pad-%03d: %s\r\n", i, strings.Repeat("x", 1000))
			}
			fmt.Fprintf(c, "Content-Length: %d\r\n\r\n%s", len(fabrikamEnforce), fabrikamEnforce)
		}, dflt: fails(mtasts.ErrPolicyFetch), caller: succeeds},
		{name: "endless headers", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, textHead)
			stream(c, []byte("X-Pad: "+strings.Repeat("x", 1000)+"\r\n"), gb, false)
		}, dflt: fails(mtasts.ErrPolicyFetch), caller: fails(mtasts.ErrPolicyFetch), maxWritten: 16 << 20,
			fetchTimeout: 10 * time.Second}, // net/http's 10 MB of headers must come first
		// An informational response before the policy, which a server may send
		// and net/http reads past.
		{name: "103 Early Hints first", serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"+
				textHead+"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(fabrikamEnforce), fabrikamEnforce)
		}, dflt: succeeds, caller: succeeds},
		{name: "HTTP/1.0 without length, closed", serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+fabrikamEnforce)
		}, dflt: succeeds, caller: succeeds},
		{name: "HTTP/1.0 without length, never closed", slow: true, serve: func(c *rawConn, _ *http.Request) {
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+fabrikamEnforce)
			c.hold()
		}, dflt: timeout, caller: timeout},
		{name: "reset mid-body", serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Content-Length: %d\r\n\r\n%s", len(fabrikamEnforce), fabrikamEnforce[:20])
			c.sleep(50 * time.Millisecond)
			c.reset()
		}, dflt: fails(mtasts.ErrPolicyFetch), caller: fails(mtasts.ErrPolicyFetch)},
		{name: "reset mid-chunk", serve: func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s", len(fabrikamEnforce), fabrikamEnforce[:20])
			c.sleep(50 * time.Millisecond)
			c.reset()
		}, dflt: fails(mtasts.ErrPolicyFetch), caller: fails(mtasts.ErrPolicyFetch)},
	}
}

// checkOutcome checks what a Lookup returned against o, and that it failed
// for the reason o names rather than another: only a timeout case may time
// out, only a size case may be too large.
func checkOutcome(t *testing.T, o outcome, p *mtasts.Policy, err error) {
	t.Helper()
	if o.want == nil {
		assert.NoError(t, err)
		assert.NotNil(t, p)
		return
	}
	assert.Nil(t, p)
	for _, want := range o.want {
		assert.ErrorIs(t, err, want)
	}
	for _, other := range []error{mtasts.ErrFetchTimeout, mtasts.ErrPolicyTooLarge, mtasts.ErrWebPKI, mtasts.ErrDNSTemporary} {
		if !errors.Is(o.want[len(o.want)-1], other) {
			assert.NotErrorIs(t, err, other)
		}
	}
}

func TestHostilePolicyHosts(t *testing.T) {
	t.Parallel()
	for _, tc := range hostileHTTPCases(t) {
		clients := []string{"default client", "caller's client"}
		if tc.slow {
			clients = clients[:1]
		}
		for _, client := range clients {
			for _, warm := range []bool{false, true} {
				name := tc.name + "/" + client + "/cold"
				if warm {
					name = tc.name + "/" + client + "/warm"
				}
				t.Run(name, func(t *testing.T) {
					if tc.slow && testing.Short() {
						t.Skip("waits for FetchTimeout")
					}
					t.Parallel()
					h := newRawPolicyHost(t, tc.serve)
					w := newWorld(t)
					w.r.FetchTimeout = time.Second
					if tc.fetchTimeout > 0 {
						w.r.FetchTimeout = tc.fetchTimeout
					}
					o := tc.dflt
					w.r.HTTPClient = h.defaultClient()
					if client != "default client" {
						o = tc.caller
						w.r.HTTPClient = h.callerClient()
					}
					w.SetRecord("d.example", "v=STSv1; id=1;")
					var cached *mtasts.Policy
					if warm {
						cached = mustPolicy(t, w.r, "d.example")
						w.SetRecord("d.example", "v=STSv1; id=2;")
						w.clock.Advance(10 * time.Minute) // past the TXT TTL, within max_age
					}
					h.hostile.Store(true)

					start := time.Now()
					p, err := lookup(t, w.r, "d.example")
					assert.Less(t, time.Since(start), hostileBound, "Lookup took too long")
					fails := w.fails.list()
					switch {
					case !warm:
						checkOutcome(t, o, p, err)
					case o.want == nil:
						// A new id and a policy that could be fetched after all.
						require.NoError(t, err)
						require.NotNil(t, p)
						assert.Equal(t, "2", p.ID)
					default:
						// RFC 8461 §10.2: the cached policy stays in force.
						require.NoError(t, err)
						assert.Same(t, cached, p, "the cached policy")
					}
					if o.want == nil {
						assert.Empty(t, fails)
					} else if assert.Len(t, fails, 1, "failures reported") {
						checkOutcome(t, o, nil, fails[0])
					}
					t.Logf("host wrote %d bytes", h.written.Load())
					if tc.maxWritten > 0 {
						assert.Less(t, h.written.Load(), tc.maxWritten, "bytes the host wrote")
					}
					assert.LessOrEqual(t, int(h.requests.Load()), 2, "requests")
					if client == "default client" {
						assert.False(t, h.gzipAsk.Load(), "the default client asked for gzip")
					}
				})
			}
		}
	}
}

// The same over HTTP/2 (the fake world's host negotiates it): a 1 GB body
// stops at the size limit, and the server's writes are held to the client's
// flow-control window.
func TestHostilePolicyHostHTTP2(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.SetRecord("d.example", "v=STSv1; id=1;")
	var written atomic.Int64
	var proto atomic.Value
	w.Handle("mta-sts.d.example", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
		rw.Header().Set("Content-Type", "text/plain")
		for sent := 0; sent < 1<<30 && r.Context().Err() == nil; sent += len(padding) {
			n, err := rw.Write(padding)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	p, err := lookup(t, w.r, "d.example")
	assert.Nil(t, p)
	checkOutcome(t, fails(mtasts.ErrPolicyFetch, mtasts.ErrPolicyTooLarge), p, err)
	assert.Equal(t, "HTTP/2.0", proto.Load())
	assert.Less(t, written.Load(), int64(16<<20), "bytes the handler wrote")
}

// heapGrowth runs f and returns how many bytes were allocated meanwhile, in
// the whole process: it is meant for tests that do not run in parallel.
func heapGrowth(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A 1 GiB gzip bomb to a client that inflates, and a 1 GB body to the default
// client: what Lookup allocates stays near the 64 KiB limit. Not parallel, so
// that the process's allocation count is Lookup's.
func TestHostileMemory(t *testing.T) {
	bomb := gzipBomb(t, 1024) // 1 GiB inflated, about 1 MB on the wire
	for _, tc := range []struct {
		name  string
		serve func(c *rawConn, req *http.Request)
		dflt  bool
	}{
		{"gzip bomb", func(c *rawConn, _ *http.Request) {
			fmt.Fprintf(c, textHead+"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n", len(bomb))
			c.Write(bomb)
		}, false},
		{"1 GB", func(c *rawConn, _ *http.Request) {
			io.WriteString(c, textHead+"Transfer-Encoding: chunked\r\n\r\n")
			stream(c, padding, 1<<30, true)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRawPolicyHost(t, tc.serve)
			h.hostile.Store(true)
			w := newWorld(t)
			w.SetRecord("d.example", "v=STSv1; id=1;")
			w.r.HTTPClient = h.callerClient()
			if tc.dflt {
				w.r.HTTPClient = h.defaultClient()
			}
			var p *mtasts.Policy
			var err error
			grew := heapGrowth(func() { p, err = lookup(t, w.r, "d.example") })
			checkOutcome(t, fails(mtasts.ErrPolicyFetch, mtasts.ErrPolicyTooLarge), p, err)
			t.Logf("allocated %d KiB; the host wrote %d KiB", grew>>10, h.written.Load()>>10)
			assert.Less(t, grew, uint64(32<<20), "bytes allocated by Lookup")
		})
	}
}

// rawDNS is a name server on loopback, UDP and TCP on one port, whose answers
// a test writes by hand: a good answer (the record "v=STSv1; id=1;") until
// hostile is set, then whatever answer sends.
type rawDNS struct {
	addr    string
	pc      net.PacketConn
	ln      net.Listener
	answer  func(s *rawDNS, q *dns.Msg, tcp bool, w io.Writer)
	closing chan struct{}
	hostile atomic.Bool
	queries atomic.Int32
	wg      sync.WaitGroup
	mu      sync.Mutex // mu guards conns.
	conns   map[net.Conn]bool
}

func newRawDNS(t testing.TB, answer func(s *rawDNS, q *dns.Msg, tcp bool, w io.Writer)) *rawDNS {
	t.Helper()
	s := &rawDNS{answer: answer, closing: make(chan struct{}), conns: map[net.Conn]bool{}}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			s.pc, s.ln, s.addr = pc, ln, pc.LocalAddr().String()
			break
		}
		pc.Close()
		require.Less(t, try, 50, "no port free for both UDP and TCP")
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	t.Cleanup(s.close)
	return s
}

type udpWriter struct {
	pc   net.PacketConn
	addr net.Addr
}

func (w udpWriter) Write(b []byte) (int, error) { return w.pc.WriteTo(b, w.addr) }

func (s *rawDNS) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, addr, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
			continue
		}
		s.queries.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.reply(q, false, udpWriter{s.pc, addr})
		}()
	}
}

func (s *rawDNS) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			for {
				var size uint16
				if binary.Read(c, binary.BigEndian, &size) != nil {
					return
				}
				b := make([]byte, size)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				q := new(dns.Msg)
				if q.Unpack(b) != nil || len(q.Question) != 1 {
					return
				}
				s.queries.Add(1)
				s.reply(q, true, c)
			}
		}()
	}
}

func (s *rawDNS) reply(q *dns.Msg, tcp bool, w io.Writer) {
	if s.hostile.Load() {
		s.answer(s, q, tcp, w)
		return
	}
	send(w, tcp, txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=1;"}))
}

func (s *rawDNS) close() {
	close(s.closing)
	s.pc.Close()
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// sleep waits d, or less if the server is closing.
func (s *rawDNS) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-s.closing:
	}
}

// send writes a message: as one datagram over UDP, with its length first
// over TCP (RFC 1035 §4.2.2).
func send(w io.Writer, tcp bool, m any) {
	var b []byte
	switch m := m.(type) {
	case *dns.Msg:
		var err error
		if b, err = m.Pack(); err != nil {
			panic(err)
		}
	case []byte:
		b = m
	}
	if tcp {
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	w.Write(b)
}

// txtReply answers q with one TXT record of the given strings per record, at
// owner.
func txtReply(q *dns.Msg, owner string, records ...[]string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	for _, txt := range records {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: txt})
	}
	return m
}

// truncated answers q with no records and TC set, so that the client asks
// again over TCP.
func truncated(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Truncated = true
	return m
}

func cname(owner, target string) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: target}
}

type dnsCase struct {
	name   string
	answer func(s *rawDNS, q *dns.Msg, tcp bool, w io.Writer)
	cold   outcome // what Lookup returns with nothing cached
	policy bool    // and whether that is a policy (cold.want nil) or nothing
	report error   // what OnError must see, cold or warm; nil for nothing
	// maxQueries bounds the queries of one Lookup; zero means 2 (UDP, TCP).
	maxQueries int
	slow       bool // takes seconds; skipped under -short, and run cold only
}

func hostileDNSCases() []dnsCase {
	temporary := fails(mtasts.ErrDNSTemporary)
	garbage := make([]byte, 300)
	for i := range garbage {
		garbage[i] = byte(mrand.IntN(256))
	}
	// About 64 KB of TXT records, over TCP only, the one STS record last.
	var big [][]string
	for i := range 230 {
		big = append(big, []string{fmt.Sprintf("filler %03d %s", i, strings.Repeat("z", 240))})
	}
	big = append(big, []string{"v=STSv1; id=1;"})
	var many [][]string
	for i := range 500 {
		many = append(many, []string{fmt.Sprintf("v=STSv1; id=%d;", i)})
	}
	var manyOneSTS [][]string
	for i := range 499 {
		manyOneSTS = append(manyOneSTS, []string{fmt.Sprintf("v=spf1 ip4:192.0.2.%d -all", i%256)})
	}
	manyOneSTS = append(manyOneSTS, []string{"v=STSv1; id=1;"})
	var hop atomic.Int32 // names for the endless CNAME chain

	return []dnsCase{
		{name: "garbage", answer: func(_ *rawDNS, _ *dns.Msg, tcp bool, w io.Writer) {
			send(w, tcp, garbage)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "garbage with the query's id", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			b := append(binary.BigEndian.AppendUint16(nil, q.Id), 0x81, 0x80, 0, 1, 0xff, 0xff, 0, 0, 0, 0)
			send(w, tcp, append(b, garbage...))
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "short header", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			send(w, tcp, binary.BigEndian.AppendUint16(nil, q.Id))
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "query echoed back", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			send(w, tcp, q)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "CNAME loop in one answer", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			m := txtReply(q, "")
			m.Answer = []dns.RR{cname(q.Question[0].Name, "a.loop.example."), cname("a.loop.example.", q.Question[0].Name)}
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "CNAME loop across queries", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			next := "a.loop.example."
			if q.Question[0].Name == next {
				next = "_mta-sts.d.example."
			}
			m := txtReply(q, "")
			m.Answer = []dns.RR{cname(q.Question[0].Name, next)}
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary, maxQueries: 3},
		{name: "endless CNAME chain", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			m := txtReply(q, "")
			m.Answer = []dns.RR{cname(q.Question[0].Name, fmt.Sprintf("h%d.chain.example.", hop.Add(1)))}
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary, maxQueries: 10},
		{name: "500 STS records", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			if !tcp {
				send(w, tcp, truncated(q))
				return
			}
			send(w, tcp, txtReply(q, q.Question[0].Name, many...))
		}, cold: succeeds, report: mtasts.ErrMultipleRecords},
		{name: "500 TXT records, one STS", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			if !tcp {
				send(w, tcp, truncated(q))
				return
			}
			send(w, tcp, txtReply(q, q.Question[0].Name, manyOneSTS...))
		}, cold: succeeds, policy: true},
		{name: "64 KB over TCP", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			if !tcp {
				send(w, tcp, truncated(q))
				return
			}
			m := txtReply(q, q.Question[0].Name, big...)
			if b, _ := m.Pack(); len(b) < 63<<10 || len(b) > dns.MaxMsgSize {
				panic(fmt.Sprintf("answer of %d bytes, want about 64 KB", len(b)))
			}
			send(w, tcp, m)
		}, cold: succeeds, policy: true},
		{name: "TCP answer cut short", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			if !tcp {
				send(w, tcp, truncated(q))
				return
			}
			w.Write([]byte{0xff, 0xff}) // 65535 bytes announced, 12 sent
			w.Write(append(binary.BigEndian.AppendUint16(nil, q.Id), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0))
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "answer for another name", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			m := txtReply(q, "_mta-sts.attacker.example.", []string{"v=STSv1; id=evil;"})
			m.Question[0].Name = "_mta-sts.attacker.example."
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "records for another name", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			send(w, tcp, txtReply(q, "_mta-sts.attacker.example.", []string{"v=STSv1; id=evil;"}))
		}, cold: succeeds}, // NODATA: no policy, nothing to report
		{name: "wrong message id", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			m := txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=evil;"})
			m.Id++
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "wrong message id, then the right one", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			m := txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=evil;"})
			m.Id++
			send(w, tcp, m)
			send(w, tcp, txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=1;"}))
		}, cold: succeeds, policy: true},
		{name: "wrong message id over TCP", answer: func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			if !tcp {
				send(w, tcp, truncated(q))
				return
			}
			m := txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=evil;"})
			m.Id++
			send(w, tcp, m)
		}, cold: temporary, report: mtasts.ErrDNSTemporary},
		{name: "no answer", answer: func(*rawDNS, *dns.Msg, bool, io.Writer) {},
			cold: temporary, report: mtasts.ErrDNSTemporary},
		// DNSTimeout is the limit, not a client library's own default.
		{name: "answer after 2.5 s", slow: true, answer: func(s *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
			s.sleep(2500 * time.Millisecond)
			send(w, tcp, txtReply(q, q.Question[0].Name, []string{"v=STSv1; id=1;"}))
		}, cold: succeeds, policy: true},
	}
}

func TestHostileNameServers(t *testing.T) {
	t.Parallel()
	for _, tc := range hostileDNSCases() {
		for _, warm := range []bool{false, true} {
			if warm && tc.slow {
				continue
			}
			name := tc.name + "/cold"
			if warm {
				name = tc.name + "/warm"
			}
			t.Run(name, func(t *testing.T) {
				if tc.slow && testing.Short() {
					t.Skip("waits seconds for an answer")
				}
				t.Parallel()
				s := newRawDNS(t, tc.answer)
				w := newWorld(t)
				w.r.Nameservers = []string{s.addr}
				w.r.DNSTimeout = 900 * time.Millisecond // under the first resend, and room for 64 KB over TCP on a loaded machine
				if tc.slow {
					w.r.DNSTimeout = 10 * time.Second
				}
				w.SetPolicy("d.example", fabrikamEnforce)
				var cached *mtasts.Policy
				if warm {
					cached = mustPolicy(t, w.r, "d.example")
					w.clock.Advance(10 * time.Minute) // past the TXT TTL, within max_age
				}
				s.hostile.Store(true)
				before := s.queries.Load()

				start := time.Now()
				p, err := lookup(t, w.r, "d.example")
				assert.Less(t, time.Since(start), hostileBound, "Lookup took too long")
				switch {
				case warm:
					require.NoError(t, err)
					assert.Same(t, cached, p, "the cached policy")
				case tc.policy:
					checkOutcome(t, tc.cold, p, err)
				default:
					assert.Nil(t, p)
					if tc.cold.want == nil {
						assert.NoError(t, err)
					} else {
						checkOutcome(t, tc.cold, p, err)
					}
				}
				fails := w.fails.list()
				if tc.report == nil {
					assert.Empty(t, fails)
				} else if assert.Len(t, fails, 1, "failures reported") {
					assert.ErrorIs(t, fails[0], tc.report)
				}
				maxQueries := tc.maxQueries
				if maxQueries == 0 {
					maxQueries = 2
				}
				assert.LessOrEqual(t, int(s.queries.Load()-before), maxQueries, "queries")
				if !warm && !tc.policy {
					assert.Zero(t, w.PolicyFetches(), "fetches without a record")
				}
			})
		}
	}
}
