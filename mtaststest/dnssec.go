package mtaststest

import (
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// SetTLSA replaces the TLSA records at name, such as "_25._tcp.mx.example.com"
// (RFC 6698, RFC 7672), each given in presentation form: usage, selector,
// matching type and the association data in hex, as "3 1 1 0123abcd...". With
// no records the name has no TLSA records left. It panics on a record it
// cannot parse: a test that publishes something no client could read should
// fail loudly. The records are only trusted by a client if the name is also
// signed (SetSigned).
func (s *Server) SetTLSA(name string, records ...string) {
	var tlsa []dns.TLSA
	for _, rec := range records {
		f := strings.Fields(rec)
		if len(f) != 4 {
			panic("mtaststest: TLSA record " + strconv.Quote(rec) + ": want usage selector matching-type data")
		}
		var n [3]uint8
		for i := range n {
			v, err := strconv.ParseUint(f[i], 10, 8)
			if err != nil {
				panic("mtaststest: TLSA record " + strconv.Quote(rec) + ": " + err.Error())
			}
			n[i] = uint8(v)
		}
		tlsa = append(tlsa, dns.TLSA{Usage: n[0], Selector: n[1], MatchingType: n[2], Certificate: strings.ToLower(f[3])})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rrsetLocked(fqdn(name))
	set.tlsa = tlsa
	set.cname = ""
	s.pruneLocked(fqdn(name))
}

// SetSigned makes zone, and every name under it, DNSSEC-signed or not: an
// answer for a signed name, positive or negative, has the AD (authenticated
// data) bit set when the query sets AD or DO, as a validating resolver sends
// it for a zone whose signatures verify (RFC 6840 §5.7). Answers for other
// names never have it. Faults still apply: a signed name with DNSServFail
// answers SERVFAIL, as a validating resolver does for a bogus answer.
func (s *Server) SetSigned(zone string, signed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rrsetLocked(fqdn(zone))
	set.signed = signed
	s.pruneLocked(fqdn(zone))
}

// signedLocked reports whether name is at or under a zone made signed with
// SetSigned.
func (s *Server) signedLocked(name string) bool {
	for {
		if set := s.names[name]; set != nil && set.signed {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 || i == len(name)-1 {
			return false
		}
		name = name[i+1:]
	}
}

// tlsaLocked returns the TLSA records at name.
func (s *Server) tlsaLocked(name string, ttl uint32) []dns.RR {
	var rrs []dns.RR
	if set := s.names[name]; set != nil {
		for _, t := range set.tlsa {
			rr := t
			rr.Hdr = header(name, dns.TypeTLSA, ttl)
			rrs = append(rrs, &rr)
		}
	}
	return rrs
}

// setADLocked sets the AD bit of m, the answer to req, when req asks for it
// (AD or DO set) and every name the answer passed through is signed.
func (s *Server) setADLocked(req, m *dns.Msg, names ...string) {
	opt := req.IsEdns0()
	if !req.AuthenticatedData && (opt == nil || !opt.Do()) {
		return
	}
	for _, n := range names {
		if !s.signedLocked(n) {
			return
		}
	}
	m.AuthenticatedData = true
}
