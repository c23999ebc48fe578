package mtaststest

// DNSQueries returns the number of DNS queries received, over UDP and TCP,
// whether answered or not (a query retried over TCP after truncation counts
// twice).
func (s *Server) DNSQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dnsQueries
}

// DNSQueriesFor returns the number of DNS queries received for name, of any
// type. Names compare case-insensitively; a final dot does not matter.
func (s *Server) DNSQueriesFor(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dnsQueriesByName[hostName(name)]
}

// QueryLog returns the DNS queries received, oldest first, each as the name
// in lower case without a final dot, a space and the type:
// "_mta-sts.example.com TXT".
func (s *Server) QueryLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queryLog...)
}

// PolicyFetches returns the number of HTTPS requests received for
// /.well-known/mta-sts.txt, on any host.
func (s *Server) PolicyFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policyFetches
}

// PolicyFetchesFor returns the number of HTTPS requests received for
// /.well-known/mta-sts.txt on mta-sts.<domain>, whatever was answered.
func (s *Server) PolicyFetchesFor(domain string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchesByDomain[hostName(domain)]
}

// Requests returns the number of HTTPS requests received for host, at any path.
func (s *Server) Requests(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[hostName(host)]
}

// ResetCounters sets every counter to zero and empties the query log.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dnsQueries = 0
	s.dnsQueriesByName = map[string]int{}
	s.queryLog = nil
	s.policyFetches = 0
	s.fetchesByDomain = map[string]int{}
	s.requests = map[string]int{}
}
