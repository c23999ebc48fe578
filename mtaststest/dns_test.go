package mtaststest

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exchange sends one query for name and qtype to the Server over network
// ("udp" or "tcp"), with an EDNS0 OPT of ednsSize bytes unless it is zero.
func exchange(t *testing.T, s *Server, network, name string, qtype uint16, ednsSize uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if ednsSize != 0 {
		m.SetEdns0(ednsSize, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second, UDPSize: ednsSize}
	resp, _, err := c.Exchange(m, s.DNSAddr())
	return resp, err
}

// query is exchange over UDP with EDNS0, failing the test on a network error.
func query(t *testing.T, s *Server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	resp, err := exchange(t, s, "udp", name, qtype, 1232)
	require.NoError(t, err, "query %s %s", name, dns.TypeToString[qtype])
	return resp
}

// answers renders the answer section as "owner TYPE data" lines, without TTLs.
func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		h := rr.Header()
		data := strings.TrimPrefix(rr.String(), h.String())
		out = append(out, h.Name+" "+dns.TypeToString[h.Rrtype]+" "+data)
	}
	return out
}

func TestDNSAnswers(t *testing.T) {
	t.Parallel()
	s := NewServer()
	t.Cleanup(s.Close) // after the parallel subtests

	s.SetTXT("single.example", []string{"hello"})
	s.SetTXT("multi.example", []string{"v=STSv1; ", "id=abc;"}, []string{"second"})
	s.SetRecord("Example.COM", "v=STSv1; id=20240101;")
	s.SetCNAME("_mta-sts.alias.example", "_mta-sts.middle.example")
	s.SetCNAME("_mta-sts.middle.example", "_mta-sts.example.com")
	s.SetCNAME("dangling.example", "nowhere.example")
	s.SetCNAME("loop1.example", "loop2.example")
	s.SetCNAME("loop2.example", "loop1.example")
	s.SetMX("example.com", "mx1.example.com", "MX2.example.com.")
	s.SetPolicy("example.com", "version: STSv1\nmode: none\nmax_age: 86400\n")
	s.SetTXT("escape.example", []string{`back\slash "quoted"`})

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		answers []string
		soa     bool // a negative answer carries an SOA in the authority section
	}{
		{"single string", "single.example", dns.TypeTXT, dns.RcodeSuccess,
			[]string{`single.example. TXT "hello"`}, false},
		{"several strings and records", "multi.example", dns.TypeTXT, dns.RcodeSuccess,
			[]string{`multi.example. TXT "v=STSv1; " "id=abc;"`, `multi.example. TXT "second"`}, false},
		{"names are case-insensitive", "_MTA-STS.example.com", dns.TypeTXT, dns.RcodeSuccess,
			[]string{`_mta-sts.example.com. TXT "v=STSv1; id=20240101;"`}, false},
		{"escaped bytes", "escape.example", dns.TypeTXT, dns.RcodeSuccess,
			[]string{`escape.example. TXT "back\\slash \"quoted\""`}, false},
		{"CNAME chain followed", "_mta-sts.alias.example", dns.TypeTXT, dns.RcodeSuccess,
			[]string{
				"_mta-sts.alias.example. CNAME _mta-sts.middle.example.",
				"_mta-sts.middle.example. CNAME _mta-sts.example.com.",
				`_mta-sts.example.com. TXT "v=STSv1; id=20240101;"`,
			}, false},
		{"CNAME asked for itself", "_mta-sts.alias.example", dns.TypeCNAME, dns.RcodeSuccess,
			[]string{"_mta-sts.alias.example. CNAME _mta-sts.middle.example."}, false},
		{"CNAME to nothing", "dangling.example", dns.TypeTXT, dns.RcodeNameError,
			[]string{"dangling.example. CNAME nowhere.example."}, true},
		{"CNAME loop", "loop1.example", dns.TypeTXT, dns.RcodeServerFailure, nil, false},
		{"MX in preference order", "example.com", dns.TypeMX, dns.RcodeSuccess,
			[]string{"example.com. MX 10 mx1.example.com.", "example.com. MX 20 mx2.example.com."}, false},
		{"A for a policy host", "mta-sts.example.com", dns.TypeA, dns.RcodeSuccess,
			[]string{"mta-sts.example.com. A 127.0.0.1"}, false},
		{"NODATA for another type", "example.com", dns.TypeTXT, dns.RcodeSuccess, nil, true},
		{"NODATA for AAAA of a policy host", "mta-sts.example.com", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
		{"NODATA for an empty non-terminal", "alias.example", dns.TypeTXT, dns.RcodeSuccess, nil, true},
		{"NXDOMAIN", "_mta-sts.unknown.example", dns.TypeTXT, dns.RcodeNameError, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := query(t, s, tt.qname, tt.qtype)
			assert.Equal(t, dns.RcodeToString[tt.rcode], dns.RcodeToString[resp.Rcode], "rcode of %s", tt.qname)
			assert.Equal(t, tt.answers, answers(resp), "answers to %s", tt.qname)
			assert.True(t, resp.Authoritative, "AA bit")
			assert.False(t, resp.Truncated, "TC bit")
			if tt.soa {
				require.Len(t, resp.Ns, 1, "authority section")
				soa, ok := resp.Ns[0].(*dns.SOA)
				require.True(t, ok, "authority record %v is not an SOA", resp.Ns[0])
				assert.Equal(t, uint32(DefaultTTL), soa.Minttl, "SOA minimum")
			} else {
				assert.Empty(t, resp.Ns, "authority section")
			}
			assert.NotNil(t, resp.IsEdns0(), "EDNS0 query gets an OPT back")
		})
	}
}

func TestDNSTTL(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.SetTXT("ttl.example", []string{"x"})

	resp := query(t, s, "ttl.example", dns.TypeTXT)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, uint32(DefaultTTL), resp.Answer[0].Header().Ttl, "default TTL")

	s.SetTTL(7)
	resp = query(t, s, "ttl.example", dns.TypeTXT)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, uint32(7), resp.Answer[0].Header().Ttl, "TTL after SetTTL(7)")

	resp = query(t, s, "missing.ttl.example", dns.TypeTXT)
	require.Len(t, resp.Ns, 1)
	assert.Equal(t, uint32(7), resp.Ns[0].(*dns.SOA).Minttl, "negative TTL after SetTTL(7)")
}

func TestDNSLongStrings(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	long := strings.Repeat("a", 300)
	s.SetTXT("long.example", []string{long})

	resp := query(t, s, "long.example", dns.TypeTXT)
	require.Len(t, resp.Answer, 1)
	txt := resp.Answer[0].(*dns.TXT).Txt
	assert.Len(t, txt, 2, "a 300-byte string is sent as two strings")
	assert.Equal(t, long, strings.Join(txt, ""), "the strings join to the value set")
}

func TestDNSTruncation(t *testing.T) {
	t.Parallel()
	s := NewServer()
	t.Cleanup(s.Close) // after the parallel subtests
	// Ten records of 200 bytes: about 2.3 KB, more than 512 and 1232 bytes.
	var records [][]string
	for i := 0; i < 10; i++ {
		records = append(records, []string{strings.Repeat(string(rune('a'+i)), 200)})
	}
	s.SetTXT("big.example", records...)

	tests := []struct {
		name      string
		network   string
		edns      uint16
		truncated bool
	}{
		{"UDP without EDNS0", "udp", 0, true},
		{"UDP with EDNS0 1232", "udp", 1232, true},
		{"UDP with EDNS0 4096", "udp", 4096, false},
		{"TCP without EDNS0", "tcp", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := exchange(t, s, tt.network, "big.example", dns.TypeTXT, tt.edns)
			require.NoError(t, err)
			assert.Equal(t, tt.truncated, resp.Truncated, "TC bit")
			if tt.truncated {
				assert.Less(t, len(resp.Answer), 10, "a truncated answer lacks records")
				size := 512
				if tt.edns != 0 {
					size = int(tt.edns)
				}
				packed, err := resp.Pack()
				require.NoError(t, err)
				assert.LessOrEqual(t, len(packed), size, "truncated answer size")
			} else {
				assert.Len(t, resp.Answer, 10, "full answer")
			}
		})
	}
}

func TestDNSFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault DNSFault
		rcode int // for faults that answer
	}{
		{DNSServFail, dns.RcodeServerFailure},
		{DNSRefused, dns.RcodeRefused},
		{DNSSilent, 0},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			s := NewServer()
			defer s.Close()
			s.SetRecord("example.com", "v=STSv1; id=1;")
			s.SetCNAME("_mta-sts.alias.example", "_mta-sts.example.com")
			s.SetDNSFault("_mta-sts.example.com", tt.fault)

			for _, name := range []string{"_mta-sts.example.com", "_mta-sts.alias.example"} {
				for _, network := range []string{"udp", "tcp"} {
					m := new(dns.Msg)
					m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
					c := &dns.Client{Net: network, Timeout: 300 * time.Millisecond}
					resp, _, err := c.Exchange(m, s.DNSAddr())
					if tt.fault == DNSSilent {
						require.Error(t, err, "%s over %s: want no answer", name, network)
						assert.Contains(t, err.Error(), "timeout", "%s over %s", name, network)
						continue
					}
					require.NoError(t, err, "%s over %s", name, network)
					assert.Equal(t, dns.RcodeToString[tt.rcode], dns.RcodeToString[resp.Rcode], "%s over %s", name, network)
					assert.Empty(t, resp.Answer, "%s over %s", name, network)
				}
			}
			// Other names are not affected.
			resp := query(t, s, "_mta-sts.other.example", dns.TypeTXT)
			assert.Equal(t, dns.RcodeNameError, resp.Rcode)

			s.SetDNSFault("_mta-sts.example.com", DNSOK)
			resp = query(t, s, "_mta-sts.alias.example", dns.TypeTXT)
			assert.Equal(t, dns.RcodeSuccess, resp.Rcode, "after clearing the fault")
			assert.Len(t, resp.Answer, 2, "CNAME and TXT after clearing the fault")
		})
	}
}

func TestDNSRemove(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()

	s.SetTXT("name.example", []string{"x"})
	s.SetMX("name.example", "mx.name.example")
	require.Len(t, query(t, s, "name.example", dns.TypeMX).Answer, 1)

	// A CNAME replaces the other records, and a TXT record replaces a CNAME.
	s.SetCNAME("name.example", "target.example")
	s.SetTXT("target.example", []string{"y"})
	assert.Equal(t, []string{"name.example. CNAME target.example.", `target.example. TXT "y"`},
		answers(query(t, s, "name.example", dns.TypeTXT)))
	s.SetTXT("name.example", []string{"z"})
	assert.Equal(t, []string{`name.example. TXT "z"`}, answers(query(t, s, "name.example", dns.TypeTXT)))

	// SetMX with no hosts removes only the MX records.
	s.SetMX("name.example", "mx.name.example")
	s.SetMX("name.example")
	resp := query(t, s, "name.example", dns.TypeMX)
	assert.Equal(t, dns.RcodeSuccess, resp.Rcode, "NODATA: the TXT record remains")
	assert.Empty(t, resp.Answer)

	s.Remove("NAME.example.")
	assert.Equal(t, dns.RcodeNameError, query(t, s, "name.example", dns.TypeTXT).Rcode, "after Remove")

	s.Publish("pub.example", "1", "version: STSv1\nmode: none\nmax_age: 1\n")
	s.Unpublish("pub.example")
	assert.Equal(t, dns.RcodeNameError, query(t, s, "_mta-sts.pub.example", dns.TypeTXT).Rcode, "record after Unpublish")
	assert.Equal(t, dns.RcodeNameError, query(t, s, "mta-sts.pub.example", dns.TypeA).Rcode, "policy host after Unpublish")
}

func TestNetResolver(t *testing.T) {
	t.Parallel()
	s := NewServer()
	defer s.Close()
	s.SetMX("example.com", "mx2.example.com", "mx1.example.com")
	s.Publish("example.com", "7", "version: STSv1\nmode: none\nmax_age: 60\n")

	r := s.NetResolver()
	ctx := t.Context()
	mxs, err := r.LookupMX(ctx, "example.com.")
	require.NoError(t, err)
	require.Len(t, mxs, 2)
	assert.Equal(t, "mx2.example.com.", mxs[0].Host)
	assert.Equal(t, uint16(10), mxs[0].Pref)

	txt, err := r.LookupTXT(ctx, "_mta-sts.example.com.")
	require.NoError(t, err)
	assert.Equal(t, []string{"v=STSv1; id=7;"}, txt)

	addrs, err := r.LookupHost(ctx, "mta-sts.example.com.")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1"}, addrs)
}
