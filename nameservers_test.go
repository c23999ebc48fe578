package mtasts_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// With Nameservers set and no HTTPClient, the policy host's address comes
// from those servers too. The world's DNS gives mta-sts.d.example the address
// its HTTPS server listens on; the system's resolver knows no such name, and
// a second server that disagrees points it at an address where nothing
// listens. The fetch, through the default client's own transport and dial
// (only the port is the test server's, not 443), reaches the world's server.
func TestNameserversResolvePolicyHost(t *testing.T) {
	t.Parallel()
	s := mtaststest.NewServer()
	defer s.Close()
	s.Publish("d.example", "1", fabrikamEnforce)
	_, port, err := net.SplitHostPort(s.HTTPSAddr())
	require.NoError(t, err)

	// The system's resolver does not know the name.
	_, err = net.DefaultResolver.LookupHost(context.Background(), "mta-sts.d.example")
	require.Error(t, err, "the system resolves the test's name")

	for _, tc := range []struct {
		name     string
		servers  func(other string) []string
		policy   bool
		attempts string
	}{
		{"configured", func(string) []string { return []string{s.DNSAddr()} }, true, ""},
		{"the other", func(other string) []string { return []string{other} }, false, "127.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := disagreeingDNS(t, "mta-sts.d.example.", "127.0.0.2", "v=STSv1; id=1;")
			r := &mtasts.Resolver{Nameservers: tc.servers(other)}
			var dialed []string
			dial := mtasts.DialPolicyHost(r)
			r.HTTPClient = mtasts.DefaultClient(func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				dialed = append(dialed, host)
				conn, err := dial(ctx, network, net.JoinHostPort(host, port))
				if err == nil {
					dialed = append(dialed, conn.RemoteAddr().String())
				}
				return conn, err
			}, s.RootCAs())
			p, err := lookup(t, r, "d.example")
			if tc.policy {
				require.NoError(t, err)
				require.NotNil(t, p)
				assert.Equal(t, []string{"mta-sts.d.example", s.HTTPSAddr()}, dialed)
				assert.Equal(t, 1, s.PolicyFetches())
			} else {
				assert.Nil(t, p)
				assert.ErrorIs(t, err, mtasts.ErrPolicyFetch)
				assert.ErrorContains(t, err, tc.attempts)
				assert.Equal(t, []string{"mta-sts.d.example"}, dialed)
			}
		})
	}
}

// disagreeingDNS starts a name server that gives host the address addr and
// _mta-sts.d.example the record, and returns its address.
func disagreeingDNS(t *testing.T, host, addr, record string) string {
	s := newRawDNS(t, func(_ *rawDNS, q *dns.Msg, tcp bool, w io.Writer) {
		name, qtype := q.Question[0].Name, q.Question[0].Qtype
		m := new(dns.Msg)
		m.SetReply(q)
		switch {
		case qtype == dns.TypeA && strings.EqualFold(name, host):
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP(addr)})
		case qtype == dns.TypeTXT && strings.EqualFold(name, "_mta-sts.d.example."):
			m = txtReply(q, name, []string{record})
		}
		send(w, tcp, m)
	})
	s.hostile.Store(true)
	return s.addr
}
