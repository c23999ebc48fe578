package mtaststest

import (
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// rrset holds the records of one owner name. A name with a CNAME has no other
// records (RFC 1034 §3.6.2): setting one kind clears the other.
type rrset struct {
	txt   [][]string // each record is one or more strings, raw bytes, at most 255 each
	cname string     // target, fully qualified, lower case
	mx    []string   // hosts, fully qualified, lower case, in preference order

	tlsa   []dns.TLSA // without headers; see SetTLSA
	signed bool       // the name and those under it are signed; see SetSigned
}

func (r *rrset) empty() bool {
	return r.txt == nil && r.cname == "" && r.mx == nil && r.tlsa == nil && !r.signed
}

// maxCNAMEHops bounds the CNAME chain followed in one answer; a longer chain
// (or a loop) is answered SERVFAIL, as a recursive resolver does.
const maxCNAMEHops = 8

// ednsSize is the UDP payload size the server advertises in its own OPT record.
const ednsSize = 4096

// fqdn returns name lower case and fully qualified, the form of owner names.
func fqdn(name string) string { return dns.Fqdn(aLabels(name)) }

// SetTTL sets the TTL, in seconds, of every record and of the SOA sent with
// negative answers (whose minimum field is the same value). It applies to
// answers sent from now on.
func (s *Server) SetTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = ttl
}

// SetTXT replaces the TXT records of name. Each record is one or more strings
// of raw bytes; a client joins them with nothing added (RFC 8461 §3.1). A
// string longer than 255 bytes is sent as several strings, which joins to the
// same value. With no records the name has no TXT records left. SetTXT
// removes a CNAME at name.
func (s *Server) SetTXT(name string, records ...[]string) {
	var txt [][]string
	for _, rec := range records {
		var parts []string
		for _, str := range rec {
			for len(str) > 255 {
				parts = append(parts, str[:255])
				str = str[255:]
			}
			parts = append(parts, str)
		}
		if len(parts) == 0 {
			parts = []string{""} // a TXT record holds at least one string
		}
		txt = append(txt, parts)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rrsetLocked(fqdn(name))
	set.txt = txt
	set.cname = ""
	s.pruneLocked(fqdn(name))
}

// SetRecord publishes record, a single string such as "v=STSv1; id=1;", as
// the only TXT record at _mta-sts.<domain>. It does not check the syntax, so
// tests can publish broken records.
func (s *Server) SetRecord(domain, record string) {
	s.SetTXT("_mta-sts."+hostName(domain), []string{record})
}

// SetCNAME makes name an alias of target, replacing every other record of
// name. Answers for name carry the chain followed to its end, as a recursive
// resolver sends them.
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[fqdn(name)] = &rrset{cname: fqdn(target)}
}

// SetMX replaces the MX records of domain with hosts, given in order of
// preference: the first has preference 10, the next 20, and so on. With no
// hosts the domain has no MX records left. SetMX removes a CNAME at domain.
func (s *Server) SetMX(domain string, hosts ...string) {
	var mx []string
	for _, h := range hosts {
		mx = append(mx, fqdn(h))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.rrsetLocked(fqdn(domain))
	set.mx = mx
	set.cname = ""
	s.pruneLocked(fqdn(domain))
}

// Remove deletes every DNS record set with SetTXT, SetRecord, SetCNAME or
// SetMX at name. It does not touch the HTTPS sites (see Unpublish and Handle),
// whose host names keep their A records.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, fqdn(name))
}

// SetDNSFault breaks every answer for name, whatever the query type, and for
// any name whose CNAME chain passes through name. DNSOK clears the fault.
func (s *Server) SetDNSFault(name string, f DNSFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == DNSOK {
		delete(s.dnsFaults, fqdn(name))
		return
	}
	s.dnsFaults[fqdn(name)] = f
}

func (s *Server) rrsetLocked(name string) *rrset {
	set := s.names[name]
	if set == nil {
		set = &rrset{}
		s.names[name] = set
	}
	return set
}

func (s *Server) pruneLocked(name string) {
	if set := s.names[name]; set != nil && set.empty() {
		delete(s.names, name)
	}
}

// startDNS serves UDP and TCP on the same port of 127.0.0.1. The kernel picks
// the UDP port; the same TCP port may already be taken (by another socket's
// ephemeral port), so it tries again with a new UDP port.
func (s *Server) startDNS() error {
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for try := 0; ; try++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 50 {
			return err
		}
	}
	s.dnsAddr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serveDNS)
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: notify}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	// Shutdown fails on a server that has not started yet.
	<-started
	<-started
	return nil
}

// serveDNS answers one query; over UDP, it truncates an answer larger than the
// client's EDNS0 payload size (512 bytes without EDNS0) and sets TC, so that
// the client retries over TCP.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := s.answer(req)
	if m == nil {
		return // DNSSilent
	}
	if w.RemoteAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer builds the reply to req, or returns nil when no reply is to be sent.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	qname := name

	s.mu.Lock()
	defer s.mu.Unlock()
	s.dnsQueries++
	s.dnsQueriesByName[hostName(name)]++
	s.queryLog = append(s.queryLog, hostName(name)+" "+dns.TypeToString[q.Qtype])
	ttl := s.ttl

	for hops := 0; ; hops++ {
		switch s.dnsFaults[name] {
		case DNSSilent:
			return nil
		case DNSServFail:
			m.Answer = nil
			m.Rcode = dns.RcodeServerFailure
			return m
		case DNSRefused:
			m.Answer = nil
			m.Rcode = dns.RcodeRefused
			return m
		}
		set := s.names[name]
		if set == nil || set.cname == "" || q.Qtype == dns.TypeCNAME {
			break
		}
		if hops == maxCNAMEHops {
			m.Answer = nil
			m.Rcode = dns.RcodeServerFailure
			return m
		}
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: header(name, dns.TypeCNAME, ttl), Target: set.cname})
		name = set.cname
	}

	rrs := s.recordsLocked(name, q.Qtype, ttl)
	m.Answer = append(m.Answer, rrs...)
	if len(rrs) == 0 {
		// NODATA when the name exists, NXDOMAIN when it does not; either way
		// the SOA tells the client how long to cache the absence (RFC 2308).
		if !s.existsLocked(name) {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = []dns.RR{soa(name, ttl)}
	}
	s.setADLocked(req, m, qname, name)
	return m
}

// recordsLocked returns the records of type qtype at name, after any CNAME.
func (s *Server) recordsLocked(name string, qtype uint16, ttl uint32) []dns.RR {
	var rrs []dns.RR
	set := s.names[name]
	switch qtype {
	case dns.TypeTXT:
		if set != nil {
			for _, rec := range set.txt {
				rrs = append(rrs, &dns.TXT{Hdr: header(name, dns.TypeTXT, ttl), Txt: escapeTXT(rec)})
			}
		}
	case dns.TypeMX:
		if set != nil {
			for i, host := range set.mx {
				rrs = append(rrs, &dns.MX{Hdr: header(name, dns.TypeMX, ttl), Preference: uint16(10 * (i + 1)), Mx: host})
			}
		}
	case dns.TypeTLSA:
		rrs = s.tlsaLocked(name, ttl)
	case dns.TypeCNAME:
		if set != nil && set.cname != "" {
			rrs = append(rrs, &dns.CNAME{Hdr: header(name, dns.TypeCNAME, ttl), Target: set.cname})
		}
	case dns.TypeA:
		if s.webHostLocked(hostName(name)) {
			rrs = append(rrs, &dns.A{Hdr: header(name, dns.TypeA, ttl), A: net.IPv4(127, 0, 0, 1)})
		}
	}
	return rrs
}

// existsLocked reports whether name owns records or is an empty non-terminal
// above a name that does (RFC 8020: then the answer is NODATA, not NXDOMAIN).
func (s *Server) existsLocked(name string) bool {
	under := func(owner string) bool { return owner == name || strings.HasSuffix(owner, "."+name) }
	for owner := range s.names {
		if under(owner) {
			return true
		}
	}
	for _, host := range s.webHostsLocked() {
		if under(host + ".") {
			return true
		}
	}
	return false
}

// webHostsLocked returns the hosts the HTTPS server serves on purpose: policy
// hosts, hosts given to Handle and redirect targets. Each has an A record
// 127.0.0.1.
func (s *Server) webHostsLocked() []string {
	var hosts []string
	for d := range s.policies {
		hosts = append(hosts, policyHost(d))
	}
	for h := range s.handlers {
		hosts = append(hosts, h)
	}
	for d, f := range s.policyFaults {
		if f == PolicyRedirect {
			hosts = append(hosts, RedirectHost(d))
		}
	}
	sort.Strings(hosts)
	return hosts
}

func (s *Server) webHostLocked(host string) bool {
	if _, ok := s.handlers[host]; ok {
		return true
	}
	if d, ok := policyDomain(host); ok {
		if _, ok := s.policies[d]; ok {
			return true
		}
	}
	if d, ok := redirectDomain(host); ok && s.policyFaults[d] == PolicyRedirect {
		return true
	}
	return false
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// soa returns the SOA sent with a negative answer for name. Its owner is the
// name's last two labels, standing in for the zone apex.
func soa(name string, ttl uint32) dns.RR {
	labels := dns.SplitDomainName(name)
	zone := "."
	if len(labels) >= 2 {
		zone = dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
	} else if len(labels) == 1 {
		zone = dns.Fqdn(labels[0])
	}
	return &dns.SOA{
		Hdr:     header(zone, dns.TypeSOA, ttl),
		Ns:      "ns.mtaststest.invalid.",
		Mbox:    "hostmaster.mtaststest.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
}

// escapeTXT turns raw strings into the presentation form miekg/dns packs, in
// which a backslash starts an escape: each byte outside printable ASCII, each
// backslash and each double quote becomes \DDD.
func escapeTXT(raw []string) []string {
	out := make([]string, len(raw))
	for i, str := range raw {
		var b strings.Builder
		for j := 0; j < len(str); j++ {
			c := str[j]
			if c < ' ' || c > '~' || c == '\\' || c == '"' {
				fmt.Fprintf(&b, "\\%03d", c)
				continue
			}
			b.WriteByte(c)
		}
		out[i] = b.String()
	}
	return out
}
