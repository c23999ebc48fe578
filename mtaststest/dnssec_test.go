package mtaststest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// queryDO sends one query for name and qtype with the DO bit set, as a client
// that wants to know whether the answer was validated.
func queryDO(t *testing.T, s *Server, name string, qtype uint16, do bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, do)
	c := &dns.Client{Timeout: 2 * time.Second, UDPSize: 1232}
	resp, _, err := c.Exchange(m, s.DNSAddr())
	require.NoError(t, err)
	return resp
}

func TestDNSSECAndTLSA(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.SetMX("signed.example", "mx.signed.example")
	s.SetMX("plain.example", "mx.plain.example")
	s.SetSigned("signed.example", true)
	s.SetTLSA("_25._tcp.mx.signed.example", "3 1 1 0123ABCD", "2 0 1 fedcba98")

	r := queryDO(t, s, "signed.example", dns.TypeMX, true)
	assert.True(t, r.AuthenticatedData, "signed MX with DO")
	assert.Len(t, r.Answer, 1)
	assert.False(t, queryDO(t, s, "signed.example", dns.TypeMX, false).AuthenticatedData, "without DO or AD, no AD")
	assert.False(t, queryDO(t, s, "plain.example", dns.TypeMX, true).AuthenticatedData, "unsigned zone")

	r = queryDO(t, s, "_25._tcp.mx.signed.example", dns.TypeTLSA, true)
	assert.True(t, r.AuthenticatedData)
	require.Len(t, r.Answer, 2)
	tlsa := r.Answer[0].(*dns.TLSA)
	assert.Equal(t, [4]any{uint8(3), uint8(1), uint8(1), "0123abcd"}, [4]any{tlsa.Usage, tlsa.Selector, tlsa.MatchingType, tlsa.Certificate})

	// Authenticated denial: no TLSA at a signed name is NXDOMAIN with AD.
	r = queryDO(t, s, "_25._tcp.mx2.signed.example", dns.TypeTLSA, true)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	assert.True(t, r.AuthenticatedData)

	s.SetDNSFault("_25._tcp.mx.signed.example", DNSServFail)
	r = queryDO(t, s, "_25._tcp.mx.signed.example", dns.TypeTLSA, true)
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	assert.False(t, r.AuthenticatedData)

	s.SetSigned("signed.example", false)
	assert.False(t, queryDO(t, s, "signed.example", dns.TypeMX, true).AuthenticatedData, "signing undone")
	s.SetTLSA("_25._tcp.mx.signed.example")
	s.SetDNSFault("_25._tcp.mx.signed.example", DNSOK)
	assert.Empty(t, queryDO(t, s, "_25._tcp.mx.signed.example", dns.TypeTLSA, true).Answer)
}
