package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/seedc2a895ea/mtasts"
)

// errDNS is a DNS failure other than "no such name" or "no such records":
// the domain could not be checked.
var errDNS = errors.New("DNS query failed")

// dnsAnswer is the answer to one question after following CNAMEs.
type dnsAnswer struct {
	chain []string // the CNAME targets followed, in order
	rrs   []dns.RR // the records of the type asked, at the end of the chain
	none  string   // why there are none: "does not exist" or "no records"
}

// query asks the name server for name's records of type qtype, following
// CNAMEs (at most 8, as the package does). Failures wrap errDNS.
func (c *checker) query(ctx context.Context, name string, qtype uint16) (*dnsAnswer, error) {
	a := &dnsAnswer{}
	qname := dns.Fqdn(strings.ToLower(name))
	seen := map[string]bool{}
	for range 9 {
		if seen[qname] {
			return nil, fmt.Errorf("%w: CNAME loop at %s", errDNS, qname)
		}
		seen[qname] = true
		m := new(dns.Msg)
		m.SetQuestion(qname, qtype)
		m.SetEdns0(1232, false)
		resp, err := c.exchange(ctx, m)
		if err != nil {
			return nil, err
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
		case dns.RcodeNameError:
			a.none = "does not exist"
			return a, nil
		default:
			return nil, fmt.Errorf("%w: %s %s: %s", errDNS, strings.TrimSuffix(qname, "."), dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode])
		}
		// Follow the chain within the answer.
		owner, moved := qname, false
		for again := true; again; {
			again = false
			for _, rr := range resp.Answer {
				if cn, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, owner) {
					owner = strings.ToLower(cn.Target)
					a.chain = append(a.chain, strings.TrimSuffix(owner, "."))
					again, moved = true, true
					if len(a.chain) > 8 {
						return nil, fmt.Errorf("%w: CNAME chain too long at %s", errDNS, name)
					}
					break
				}
			}
		}
		for _, rr := range resp.Answer {
			if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, owner) {
				a.rrs = append(a.rrs, rr)
			}
		}
		if len(a.rrs) > 0 || !moved {
			if len(a.rrs) == 0 {
				a.none = "no records"
			}
			return a, nil
		}
		qname = owner // the chain leaves the answer: ask for its end
	}
	return nil, fmt.Errorf("%w: CNAME chain too long at %s", errDNS, name)
}

// exchange sends m over UDP, and over TCP when the answer is truncated.
func (c *checker) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	cl := &dns.Client{Net: "udp", Timeout: c.opts.timeout, UDPSize: 1232}
	resp, _, err := cl.ExchangeContext(ctx, m, c.nameserver)
	if err == nil && resp.Truncated {
		cl.Net = "tcp"
		resp, _, err = cl.ExchangeContext(ctx, m, c.nameserver)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: asking %s: %w", errDNS, c.nameserver, err)
	}
	return resp, nil
}

// txtOf returns a TXT record's strings joined with nothing between them
// (RFC 8461 §3.1, RFC 8460 §3).
func txtOf(rr dns.RR) string { return strings.Join(rr.(*dns.TXT).Txt, "") }

// fetchPolicy GETs the policy as the package does (no redirects, TLS 1.2 or
// later, text/plain, at most MaxPolicySize bytes), keeping what it saw on the
// way for the report: status, headers and the certificate chain, even one
// that did not verify. It returns the body when the fetch succeeded.
func (c *checker) fetchPolicy(ctx context.Context, domain string) (*fetchReport, []byte) {
	host := "mta-sts." + domain
	fr := &fetchReport{URL: "https://" + host + "/.well-known/mta-sts.txt"}
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	var chain []*x509.Certificate
	now := c.cfg.Now()
	tr := &http.Transport{
		DialContext: c.dialHTTPS,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, // RFC 8461 §7.2
			ServerName: host,
			// The verification below is crypto/tls's own, done here so that
			// the chain is kept when it fails.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				chain = cs.PeerCertificates
				return verifyChain(cs.PeerCertificates, host, c.cfg.Roots, now)
			},
		},
		DisableCompression: true,
		DisableKeepAlives:  true,
	}
	if c.cfg.Dial == nil {
		tr.Proxy = http.ProxyFromEnvironment // as the package's default client
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// RFC 8461 §3.3: redirects MUST NOT be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fr.URL, nil)
	if err != nil {
		fr.Error = err.Error()
		return fr, nil
	}
	resp, err := client.Do(req)
	for _, cert := range chain {
		fr.Certificates = append(fr.Certificates, describeCert(cert, now))
	}
	if err != nil {
		fr.Error = err.Error()
		return fr, nil
	}
	defer resp.Body.Close()
	fr.Status = resp.StatusCode
	if resp.TLS != nil {
		fr.TLSVersion = tls.VersionName(resp.TLS.Version)
	}
	ct := resp.Header.Get("Content-Type")
	fr.MediaType, _, _ = mime.ParseMediaType(ct)
	if fr.MediaType == "" {
		fr.MediaType = ct
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, mtasts.MaxPolicySize+1))
	fr.Size = len(body)
	switch {
	case err != nil:
		fr.Error = err.Error()
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		fr.Redirect = resp.Header.Get("Location")
		fr.Error = fmt.Sprintf("redirect to %q refused (RFC 8461 §3.3)", fr.Redirect)
	case resp.StatusCode != http.StatusOK:
		fr.Error = "status " + resp.Status + ", not 200 (RFC 8461 §3.3)"
	case fr.MediaType != "text/plain":
		fr.Error = fmt.Sprintf("media type %q, not text/plain (RFC 8461 §3.2)", ct)
	case len(body) > mtasts.MaxPolicySize:
		fr.Error = fmt.Sprintf("more than %d bytes", mtasts.MaxPolicySize)
	default:
		return fr, body
	}
	return fr, nil
}

// verifyChain checks certs for host against roots (the system's if nil) at
// now, as a TLS client does.
func verifyChain(certs []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("no certificate presented")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		CurrentTime:   now,
		DNSName:       host,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(opts)
	return err
}

func describeCert(c *x509.Certificate, now time.Time) certInfo {
	names := c.DNSNames
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return certInfo{
		Subject:  c.Subject.String(),
		Names:    names,
		Issuer:   c.Issuer.String(),
		NotAfter: c.NotAfter.UTC(),
		DaysLeft: daysLeft(c.NotAfter, now),
	}
}

// daysLeft is the whole days from now to t, negative once t has passed.
func daysLeft(t, now time.Time) int {
	d := t.Sub(now)
	days := int(d / (24 * time.Hour))
	if d < 0 && d%(24*time.Hour) != 0 {
		days--
	}
	return days
}
