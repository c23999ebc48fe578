package mtaststest

import (
	"io"
	"net/http"
	"strings"
)

// policyHost returns the policy host of domain (RFC 8461 §3.3).
func policyHost(domain string) string { return "mta-sts." + domain }

// policyDomain returns the policy domain whose policy host is host.
func policyDomain(host string) (string, bool) {
	d, ok := strings.CutPrefix(host, "mta-sts.")
	return d, ok && d != ""
}

// RedirectHost returns the host that PolicyRedirect sends clients of domain's
// policy host to: moved.mta-sts.<domain>.
func RedirectHost(domain string) string { return "moved." + policyHost(hostName(domain)) }

// RedirectURL returns the Location sent by domain's policy host under
// PolicyRedirect. While that fault is set, the URL serves a valid policy: the
// domain's own, or a default enforce policy when it has none.
func RedirectURL(domain string) string { return "https://" + RedirectHost(domain) + WellKnownPath }

// redirectDomain returns the domain whose RedirectHost is host.
func redirectDomain(host string) (string, bool) {
	d, ok := strings.CutPrefix(host, "moved.mta-sts.")
	return d, ok && d != ""
}

// defaultPolicy is served by fault responses that need a valid policy when the
// domain has none of its own.
func defaultPolicy(domain string) string {
	return "version: STSv1\nmode: enforce\nmx: mx." + domain + "\nmax_age: 86400\n"
}

// Publish publishes MTA-STS for domain: the record "v=STSv1; id=<id>;" at
// _mta-sts.<domain> and policy served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt. Call it again with a new
// id to publish a new policy.
func (s *Server) Publish(domain, id, policy string) {
	s.SetRecord(domain, "v=STSv1; id="+id+";")
	s.SetPolicy(domain, policy)
}

// Unpublish removes what Publish sets: every TXT record at _mta-sts.<domain>
// and the policy served for domain. Faults and handlers stay.
func (s *Server) Unpublish(domain string) {
	domain = hostName(domain)
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fqdn("_mta-sts." + domain)
	if set := s.names[name]; set != nil {
		set.txt = nil
		s.pruneLocked(name)
	}
	delete(s.policies, domain)
}

// SetPolicy serves body as text/plain at
// https://mta-sts.<domain>/.well-known/mta-sts.txt and gives mta-sts.<domain>
// an A record. It does not check the syntax, so tests can serve broken
// policies. Other paths on the host answer 404.
func (s *Server) SetPolicy(domain, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies[hostName(domain)] = body
}

// Handle serves every request for host with h, in place of a policy set with
// SetPolicy, and gives host an A record. A nil h removes the handler. Faults
// set with SetPolicyFault still apply when host is a policy host. h must
// return once its request's context is done, or Close blocks.
func (s *Server) Handle(host string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.handlers, hostName(host))
		return
	}
	s.handlers[hostName(host)] = h
}

// SetPolicyFault breaks the policy host mta-sts.<domain>; PolicyOK clears the
// fault. Whenever the fault changes, the idle connections of the clients
// handed out are closed, so that no pooled connection skips the handshake
// that shows a new certificate.
func (s *Server) SetPolicyFault(domain string, f PolicyFault) {
	domain = hostName(domain)
	s.mu.Lock()
	old := s.policyFaults[domain]
	if f == PolicyOK {
		delete(s.policyFaults, domain)
	} else {
		s.policyFaults[domain] = f
	}
	s.mu.Unlock()
	if old != f {
		s.closeIdleConnections()
	}
}

// tooLargeSize is the size of a PolicyTooLarge body: 64 KiB and a bit more.
const tooLargeSize = 64<<10 + 4<<10

// serveHTTP serves every host: faults first, then handlers, then policies.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	host := hostName(r.Host)
	wellKnown := r.URL.Path == WellKnownPath

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	s.active++
	defer func() {
		s.mu.Lock()
		s.active--
		if s.active == 0 {
			s.idle.Broadcast()
		}
		s.mu.Unlock()
	}()
	s.requests[host]++
	if wellKnown {
		s.policyFetches++
	}
	var (
		fault  PolicyFault
		policy string
		found  bool
	)
	domain, isPolicyHost := policyDomain(host)
	if isPolicyHost {
		if wellKnown {
			s.fetchesByDomain[domain]++
		}
		fault = s.policyFaults[domain]
		policy, found = s.policies[domain]
	} else if d, ok := redirectDomain(host); ok && s.policyFaults[d] == PolicyRedirect && wellKnown {
		domain = d
		policy, found = s.policies[d]
		if !found {
			policy, found = defaultPolicy(d), true
		}
	}
	h := s.handlers[host]
	s.mu.Unlock()

	if !found {
		policy = defaultPolicy(domain)
	}
	switch fault {
	case PolicyNotFound:
		http.NotFound(w, r)
		return
	case PolicyServerError:
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	case PolicyRedirect:
		http.Redirect(w, r, RedirectURL(domain), http.StatusFound)
		return
	case PolicyWrongMediaType:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, policy)
		return
	case PolicyTooLarge:
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, oversized(policy))
		return
	case PolicyNoResponse:
		select {
		case <-r.Context().Done():
		case <-s.closing:
			// Returning would send an empty 200; abort the response instead.
			panic(http.ErrAbortHandler)
		}
		return
	}
	switch {
	case h != nil:
		h.ServeHTTP(w, r)
	case found && wellKnown:
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, policy)
	default:
		http.NotFound(w, r)
	}
}

// oversized returns policy followed by extension lines ("padding: xxx...",
// RFC 8461 §3.2 allows unknown keys) up to tooLargeSize bytes.
func oversized(policy string) string {
	var b strings.Builder
	b.WriteString(policy)
	if !strings.HasSuffix(policy, "\n") {
		b.WriteString("\n")
	}
	line := "padding: " + strings.Repeat("x", 90) + "\n"
	for b.Len() < tooLargeSize {
		b.WriteString(line)
	}
	return b.String()
}
