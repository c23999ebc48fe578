package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const (
	enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx1.enforce.example\nmx: *.enforce.example\nmax_age: 86400\n"
	// A TLSA association (DANE-EE, SPKI, SHA-256); its value is never checked here.
	tlsaRecord = "3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d"
)

// testLogger writes the daemon's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// startDaemon runs the daemon in-process with the YAML configuration conf
// plus a TCP listener on a free port, a unix socket, and the test world's DNS.
func startDaemon(t *testing.T, ts *mtaststest.Server, conf string) *instance {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "policyd.sock")
	conf = fmt.Sprintf("host: 127.0.0.1\nport: 0\npath: %s\nnameservers: [%q]\n", sock, ts.DNSAddr()) + conf
	cfg, warnings, err := parseConfig([]byte(conf))
	require.NoError(t, err)
	require.Empty(t, warnings)
	in, err := start(context.Background(), cfg, testLogger(t), ts.Client())
	require.NoError(t, err)
	t.Cleanup(func() { in.shutdown() })
	return in
}

func (in *instance) tcpAddr() string {
	for _, a := range in.addrs {
		if a.Network() == "tcp" {
			return a.String()
		}
	}
	return ""
}

func (in *instance) unixPath() string {
	for _, a := range in.addrs {
		if a.Network() == "unix" {
			return a.String()
		}
	}
	return ""
}

// needPostmap skips the test if postmap is missing, unless
// MTASTS_REQUIRE_POSTFIX=1 says it must be there.
func needPostmap(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("postmap")
	if err != nil {
		for _, p := range []string{"/usr/sbin/postmap", "/usr/local/sbin/postmap"} {
			if _, serr := os.Stat(p); serr == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		if os.Getenv("MTASTS_REQUIRE_POSTFIX") == "1" {
			t.Fatal("postmap not found, and MTASTS_REQUIRE_POSTFIX=1")
		}
		t.Skip("postmap not found (install postfix; MTASTS_REQUIRE_POSTFIX=1 makes this a failure)")
	}
	return path
}

// postmap asks a real Postfix map client: postmap -q KEY TABLE. It returns
// the value, "NOTFOUND", or "TEMP" when Postfix saw a temporary error.
func postmap(t *testing.T, table, key string) string {
	t.Helper()
	bin := needPostmap(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "-q", key, table)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return strings.TrimSpace(stdout.String())
	case errors.As(err, &ee) && strings.Contains(stderr.String(), "temporary error"):
		return "TEMP"
	case errors.As(err, &ee) && ee.ExitCode() == 1 && stderr.Len() == 0:
		return "NOTFOUND"
	}
	t.Fatalf("postmap -q %s %s: %v\n%s", key, table, err, stderr.String())
	return ""
}

func inet(in *instance, zone string) string {
	return "socketmap:inet:" + in.tcpAddr() + ":" + zone
}

const secureEnforce = "secure match=mx1.enforce.example:.enforce.example servername=hostname"

// TestPostmap is the table of situations and replies, through a real
// Postfix map client.
func TestPostmap(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	ts.Publish("testing.example", "1", strings.Replace(enforcePolicy, "enforce\n", "testing\n", 1))
	ts.Publish("none.example", "1", "version: STSv1\nmode: none\nmax_age: 86400\n")
	ts.Publish("broken.example", "1", enforcePolicy)
	ts.SetPolicyFault("broken.example", mtaststest.PolicyServerError)
	ts.Publish("bücher.example", "1", "version: STSv1\nmode: enforce\nmx: mx.xn--bcher-kva.example\nmax_age: 86400\n")
	ts.Publish("order.example", "1", "version: STSv1\nmode: enforce\nmx: z.order.example\nmx: a.order.example\nmx: *.m.order.example\nmx: z.order.example\nmax_age: 86400\n")

	// DANE: signed MX, TLSA for every MX host; for one of two; for none;
	// TLSA without signatures; and failures on the way.
	ts.SetSigned("dane.example", true)
	ts.Publish("dane.example", "1", enforcePolicy)
	ts.SetMX("dane.example", "mx1.dane.example", "mx2.dane.example")
	ts.SetTLSA("_25._tcp.mx1.dane.example", tlsaRecord)
	ts.SetTLSA("_25._tcp.mx2.dane.example", tlsaRecord)
	ts.SetMX("partial.dane.example", "mx1.dane.example", "mx9.dane.example")
	ts.SetMX("notlsa.dane.example", "mx9.dane.example")
	ts.Publish("notlsa.dane.example", "1", enforcePolicy)
	ts.SetMX("unsigned.example", "mx.unsigned.example")
	ts.SetTLSA("_25._tcp.mx.unsigned.example", tlsaRecord)
	ts.Publish("unsigned.example", "1", enforcePolicy)
	ts.SetSigned("tlsafail.example", true)
	ts.SetMX("tlsafail.example", "mx.tlsafail.example")
	ts.SetDNSFault("_25._tcp.mx.tlsafail.example", mtaststest.DNSServFail)
	ts.Publish("tlsafail.example", "1", enforcePolicy)
	ts.SetDNSFault("mxfail.example", mtaststest.DNSServFail)
	ts.SetDNSFault("mxrefused.example", mtaststest.DNSRefused)
	ts.SetDNSFault("mxsilent.example", mtaststest.DNSSilent)
	ts.SetSigned("nullmx.example", true)
	ts.SetMX("nullmx.example", ".")
	ts.Publish("nullmx.example", "1", enforcePolicy)

	// MTA-STS failures without a cached policy: deliver as without one.
	ts.Publish("txtfail.example", "1", enforcePolicy)
	ts.SetDNSFault("_mta-sts.txtfail.example", mtaststest.DNSServFail)
	ts.SetRecord("badrecord.example", "v=STSv1; id=!!;")
	ts.SetTXT("_mta-sts.tworecords.example", []string{"v=STSv1; id=1;"}, []string{"v=STSv1; id=2;"})
	ts.Publish("badpolicy.example", "1", "version: STSv1\nmode: enforce\nmax_age: 86400\n") // enforce without mx
	ts.Publish("expiredcert.example", "1", enforcePolicy)
	ts.SetPolicyFault("expiredcert.example", mtaststest.PolicyCertExpired)

	in := startDaemon(t, ts, `
zones:
  strict:
    strict_testing: true
  nosni:
    require_sni: false
`)
	unix := "socketmap:unix:" + in.unixPath() + ":postfix"
	for _, tc := range []struct{ table, key, want string }{
		{inet(in, "postfix"), "enforce.example", secureEnforce},
		{unix, "enforce.example", secureEnforce},
		{inet(in, "postfix"), "[enforce.example]:25", secureEnforce},
		{inet(in, "postfix"), "[enforce.example]", secureEnforce},
		{inet(in, "postfix"), "enforce.example:25", secureEnforce},
		{inet(in, "postfix"), "enforce.example.", secureEnforce},
		{inet(in, "postfix"), "ENFORCE.Example", secureEnforce},
		{inet(in, "nosni"), "enforce.example", "secure match=mx1.enforce.example:.enforce.example"},
		{inet(in, "postfix"), "bücher.example", "secure match=mx.xn--bcher-kva.example servername=hostname"},
		{inet(in, "postfix"), "xn--bcher-kva.example", "secure match=mx.xn--bcher-kva.example servername=hostname"},
		{inet(in, "postfix"), "order.example", "secure match=z.order.example:a.order.example:.m.order.example servername=hostname"},
		{inet(in, "postfix"), "testing.example", "NOTFOUND"},
		{unix, "testing.example", "NOTFOUND"},
		{inet(in, "strict"), "testing.example", secureEnforce},
		{inet(in, "postfix"), "none.example", "NOTFOUND"},
		{inet(in, "strict"), "none.example", "NOTFOUND"},
		{inet(in, "postfix"), "norecord.example", "NOTFOUND"},
		{inet(in, "postfix"), "broken.example", "NOTFOUND"},
		{inet(in, "postfix"), ".enforce.example", "NOTFOUND"},
		{inet(in, "postfix"), "[192.0.2.1]", "NOTFOUND"},
		{inet(in, "postfix"), "[192.0.2.1]:25", "NOTFOUND"},
		{inet(in, "postfix"), "[ipv6:2001:db8::1]", "NOTFOUND"},
		{inet(in, "postfix"), "192.0.2.1", "NOTFOUND"},
		{inet(in, "postfix"), "dane.example", "dane-only"},
		{unix, "dane.example", "dane-only"},
		{inet(in, "postfix"), "[mx1.dane.example]:25", "dane-only"}, // no MX lookup: the host's own TLSA
		{inet(in, "postfix"), "[mx9.dane.example]", "NOTFOUND"},
		{inet(in, "postfix"), "partial.dane.example", "dane"},
		{inet(in, "postfix"), "notlsa.dane.example", secureEnforce},
		{inet(in, "postfix"), "unsigned.example", secureEnforce},
		{inet(in, "postfix"), "tlsafail.example", "TEMP"},
		{inet(in, "postfix"), "mxfail.example", "TEMP"},
		{inet(in, "postfix"), "mxrefused.example", "TEMP"},
		{inet(in, "postfix"), "mxsilent.example", "TEMP"},
		{inet(in, "postfix"), "nullmx.example", secureEnforce},
		{inet(in, "postfix"), "txtfail.example", "NOTFOUND"},
		{inet(in, "postfix"), "badrecord.example", "NOTFOUND"},
		{inet(in, "postfix"), "tworecords.example", "NOTFOUND"},
		{inet(in, "postfix"), "badpolicy.example", "NOTFOUND"},
		{inet(in, "postfix"), "expiredcert.example", "NOTFOUND"},
	} {
		assert.Equal(t, tc.want, postmap(t, tc.table, tc.key), "%s %s", tc.table, tc.key)
	}
}

// TestCachedPolicyOutlivesBrokenHost: a policy held in the cache (type
// sqlite, served by a directory) stays in force across a restart while the
// policy host is broken and the record announces a new id.
func TestCachedPolicyOutlivesBrokenHost(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	ts.Publish("txtfail.example", "1", "version: STSv1\nmode: enforce\nmx: mx1.txtfail.example\nmax_age: 86400\n")
	db := filepath.Join(t.TempDir(), "cache.db")
	conf := "cache:\n  type: sqlite\n  options:\n    filename: " + db + "\n"

	in := startDaemon(t, ts, conf)
	assert.Equal(t, secureEnforce, postmap(t, inet(in, "postfix"), "enforce.example"))
	assert.Equal(t, "secure match=mx1.txtfail.example servername=hostname", postmap(t, inet(in, "postfix"), "txtfail.example"))
	in.shutdown()
	assert.DirExists(t, db+".d")

	ts.Publish("enforce.example", "2", "version: STSv1\nmode: enforce\nmx: other.example\nmax_age: 86400\n")
	ts.SetPolicyFault("enforce.example", mtaststest.PolicyServerError)
	ts.SetDNSFault("_mta-sts.txtfail.example", mtaststest.DNSServFail)
	in = startDaemon(t, ts, conf)
	assert.Equal(t, secureEnforce, postmap(t, inet(in, "postfix"), "enforce.example"))
	assert.Equal(t, "secure match=mx1.txtfail.example servername=hostname", postmap(t, inet(in, "postfix"), "txtfail.example"),
		"a TXT query that fails leaves the cached policy in force")
	// Without the cache, the same broken host leaves no policy.
	in2 := startDaemon(t, ts, "")
	assert.Equal(t, "NOTFOUND", postmap(t, inet(in2, "postfix"), "enforce.example"))
}

// TestTLSRPTAttributes: a zone with tlsrpt: true adds Postfix 3.10's
// attributes.
func TestTLSRPTAttributes(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	in := startDaemon(t, ts, "zones:\n  report:\n    tlsrpt: true\n")
	got := postmap(t, inet(in, "report"), "enforce.example")
	assert.Equal(t, secureEnforce+" policy_type=sts policy_domain=enforce.example"+
		" mx_host_pattern=mx1.enforce.example mx_host_pattern=*.enforce.example"+
		" { policy_string = version: STSv1 } { policy_string = mode: enforce }"+
		" { policy_string = mx: mx1.enforce.example } { policy_string = mx: *.enforce.example }"+
		" { policy_string = max_age: 86400 }", got)
	assert.Equal(t, secureEnforce, postmap(t, inet(in, "postfix"), "enforce.example"), "other zones unchanged")
}

// rawExchange writes raw bytes on a new connection, closes its sending side,
// and reads until the daemon closes the connection or d passes.
func rawExchange(t *testing.T, addr, send string, d time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, send)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite()) // nothing more comes
	c.SetReadDeadline(time.Now().Add(d))
	got, _ := io.ReadAll(c)
	return string(got)
}

func netstring(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }

// TestProtocol: pipelined requests are answered in order on one connection;
// a malformed or oversized request closes that connection only.
func TestProtocol(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	in := startDaemon(t, ts, "")
	addr := in.tcpAddr()

	pipelined := netstring("postfix enforce.example") + netstring("postfix norecord.example") +
		netstring("postfix [192.0.2.1]") + netstring("postfix enforce.example") + netstring("nokey")
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, pipelined)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	var got []string
	for range 5 {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		s, err := readNetstring(br, nil)
		require.NoError(t, err)
		got = append(got, string(s))
	}
	assert.Equal(t, []string{"OK " + secureEnforce, "NOTFOUND ", "NOTFOUND ", "OK " + secureEnforce, `PERM request is not "name key"`}, got)

	for _, bad := range []string{
		"x:postfix a,",               // not a length
		"5:postfix enforce.example,", // wrong length: no comma where it ends
		"01:a,",                      // leading zero
		"99999:",                     // longer than allowed
		strings.Repeat("9", 30) + ":",
		"23:postfix enforce.example", // closed within the request
	} {
		got := rawExchange(t, addr, netstring("postfix enforce.example")+bad, 30*time.Second)
		assert.Equal(t, netstring("OK "+secureEnforce), got, "the request before %q is answered, then the connection closed", bad)
	}
	assert.Equal(t, uint64(6), in.s.dropped.Load())
	// The daemon still serves.
	assert.Equal(t, netstring("OK "+secureEnforce), rawExchangeOne(t, addr, netstring("postfix enforce.example")))
}

// rawExchangeOne sends one request and reads one reply.
func rawExchangeOne(t *testing.T, addr, send string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, send)
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	s, err := readNetstring(bufio.NewReader(c), nil)
	require.NoError(t, err)
	return netstring(string(s))
}

// TestShutdownFinishesRequests: a request under way when shutdown starts is
// answered before its connection closes.
func TestShutdownFinishesRequests(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("slow.example", "1", enforcePolicy)
	ts.SetPolicyFault("slow.example", mtaststest.PolicyNoResponse)
	in := startDaemon(t, ts, "default_zone:\n  timeout: 1\n")
	c, err := net.Dial("tcp", in.tcpAddr())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, netstring("postfix slow.example"))
	require.NoError(t, err)
	// Wait until the request is being worked on: the fetch has started.
	require.Eventually(t, func() bool { return ts.PolicyFetchesFor("slow.example") > 0 }, 30*time.Second, 10*time.Millisecond)
	assert.True(t, in.shutdown(), "every request finished within shutdown_timeout")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, netstring("NOTFOUND "), string(got), "answered (the fetch timed out: no policy), then closed")
	_, err = net.Dial("tcp", in.tcpAddr())
	assert.Error(t, err, "no longer listening")
}

// syncBuffer is a bytes.Buffer safe for the daemon's log and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// findLogged returns the value after prefix in the log, up to the end of
// its line or a space.
func findLogged(log, prefix string) string {
	i := strings.Index(log, prefix)
	if i < 0 {
		return ""
	}
	v := log[i+len(prefix):]
	if j := strings.IndexAny(v, " \n"); j >= 0 {
		v = v[:j]
	}
	return v
}

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}
