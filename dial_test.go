package mtasts

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// listen starts a TCP listener on 127.0.0.1 that accepts connections and
// reports each one's remote address.
func listen(t *testing.T) (net.Listener, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c.RemoteAddr().String():
			default:
			}
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln, accepted
}

// The policy host's name is resolved by the Resolver's name servers, not by
// others that disagree.
func TestDialPolicyHostNameservers(t *testing.T) {
	t.Parallel()
	ln, accepted := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	host := "mta-sts.example.com"
	configured := startNS(t, zone(t, true, host+". 300 IN A 127.0.0.1"))
	other := startNS(t, zone(t, true, host+". 300 IN A 127.0.0.2"))
	ctx := context.Background()

	r := &Resolver{Nameservers: []string{configured.addr}}
	conn, err := r.dialPolicyHost(ctx, "tcp", net.JoinHostPort(host, port))
	require.NoError(t, err)
	assert.Equal(t, ln.Addr().String(), conn.RemoteAddr().String())
	assert.Equal(t, conn.LocalAddr().String(), <-accepted)
	conn.Close()
	assert.Zero(t, other.queries.Load(), "queries to the other server")

	// The other's answer leads nowhere: nothing listens on 127.0.0.2.
	r = &Resolver{Nameservers: []string{other.addr}}
	_, err = r.dialPolicyHost(ctx, "tcp", net.JoinHostPort(host, port))
	require.Error(t, err)
	assert.ErrorContains(t, err, host)
	assert.ErrorContains(t, err, "127.0.0.2")
}

// A refusing address is passed over for the next one.
func TestDialPolicyHostFallback(t *testing.T) {
	t.Parallel()
	ln, accepted := listen(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ns := startNS(t, zone(t, true,
		"mta-sts.d.example. 300 IN A 127.0.0.2", // refuses: nothing listens there
		"mta-sts.d.example. 300 IN A 127.0.0.1",
		"mta-sts.none.example. 300 IN A 127.0.0.2",
		"mta-sts.none.example. 300 IN A 127.0.0.3",
	))
	r := &Resolver{Nameservers: []string{ns.addr}}
	ctx := context.Background()
	conn, err := r.dialPolicyHost(ctx, "tcp", net.JoinHostPort("mta-sts.d.example", port))
	require.NoError(t, err)
	assert.Equal(t, ln.Addr().String(), conn.RemoteAddr().String())
	<-accepted
	conn.Close()

	// Every address refuses: the error names the host and each address.
	_, err = r.dialPolicyHost(ctx, "tcp", net.JoinHostPort("mta-sts.none.example", port))
	require.Error(t, err)
	for _, s := range []string{"mta-sts.none.example", "127.0.0.2", "127.0.0.3"} {
		assert.ErrorContains(t, err, s)
	}
	var opErr *net.OpError
	assert.ErrorAs(t, err, &opErr)

	// A name that does not exist.
	_, err = r.dialPolicyHost(ctx, "tcp", net.JoinHostPort("mta-sts.nx.example", port))
	var derr *net.DNSError
	if assert.ErrorAs(t, err, &derr) {
		assert.True(t, derr.IsNotFound)
	}
	assert.ErrorContains(t, err, "mta-sts.nx.example")

	// No IPv6 address.
	_, err = r.dialPolicyHost(ctx, "tcp6", net.JoinHostPort("mta-sts.d.example", port))
	assert.ErrorContains(t, err, "no suitable address")
}

// An address literal, and a Resolver without Nameservers, dial as net.Dialer
// does, without asking the name servers.
func TestDialPolicyHostDirect(t *testing.T) {
	t.Parallel()
	ln, accepted := listen(t)
	ns := startNS(t, silent)
	for _, r := range []*Resolver{{Nameservers: []string{ns.addr}}, {}} {
		conn, err := r.dialPolicyHost(context.Background(), "tcp", ln.Addr().String())
		require.NoError(t, err)
		<-accepted
		conn.Close()
	}
	assert.Zero(t, ns.queries.Load(), "DNS queries")
}

// A dial stops when its context does, name resolution included.
func TestDialPolicyHostCanceled(t *testing.T) {
	t.Parallel()
	ns := startNS(t, dropFirst(zone(t, true, "mta-sts.d.example. 300 IN A 127.0.0.1")))
	r := &Resolver{Nameservers: []string{ns.addr}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.dialPolicyHost(ctx, "tcp", "mta-sts.d.example:443")
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
	var nerr net.Error
	if assert.ErrorAs(t, err, &nerr) {
		assert.True(t, nerr.Timeout(), "a timeout: %v", err)
	}
}

func TestInterleave(t *testing.T) {
	t.Parallel()
	a := netip.MustParseAddr
	got := interleave([]netip.Addr{a("::1"), a("::2"), a("::3"), a("127.0.0.1"), a("127.0.0.2")})
	assert.Equal(t, []netip.Addr{a("::1"), a("127.0.0.1"), a("::2"), a("127.0.0.2"), a("::3")}, got)
	got = interleave([]netip.Addr{a("127.0.0.1"), a("::1"), a("127.0.0.2")})
	assert.Equal(t, []netip.Addr{a("127.0.0.1"), a("::1"), a("127.0.0.2")}, got)
}
