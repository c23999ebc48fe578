package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"

	"github.com/seedc2a895ea/mtasts"
)

// A checker checks domains with one Resolver, as one sending MTA would.
type checker struct {
	opts       options
	cfg        config
	nameserver string // host:port asked by the checker's own queries
	dialHTTPS  func(ctx context.Context, network, addr string) (net.Conn, error)
	dialMX     func(ctx context.Context, network, addr string) (net.Conn, error)
	resolver   *mtasts.Resolver // the sender's view: what the verdict comes from
	dirCache   mtasts.DirCache  // --cache, "" if none

	mu     sync.Mutex
	errors map[string][]error // OnError's failures, by domain
}

func newChecker(o options, cfg config) (*checker, error) {
	c := &checker{opts: o, cfg: cfg, errors: map[string][]error{}, dirCache: mtasts.DirCache(o.cacheDir)}
	var nameservers []string
	if o.nameserver != "" {
		ns := o.nameserver
		if _, _, err := net.SplitHostPort(ns); err != nil {
			ns = net.JoinHostPort(strings.Trim(ns, "[]"), "53")
		}
		c.nameserver = ns
		nameservers = []string{ns}
	} else if conf, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil && len(conf.Servers) > 0 {
		c.nameserver = net.JoinHostPort(conf.Servers[0], conf.Port)
	} else {
		c.nameserver = "127.0.0.1:53"
	}
	// Names the checker dials (the policy host, the MX hosts) are resolved by
	// the same name server.
	d := &net.Dialer{Timeout: o.timeout}
	if o.nameserver != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, c.nameserver)
		}}
	}
	c.dialHTTPS, c.dialMX = cmpOr(cfg.Dial, d.DialContext), cmpOr(cfg.DialMX, d.DialContext)
	c.resolver = &mtasts.Resolver{
		Nameservers:  nameservers,
		Now:          cfg.Now,
		DNSTimeout:   o.timeout,
		FetchTimeout: o.timeout,
		OnError: func(domain string, err error) {
			c.mu.Lock()
			c.errors[domain] = append(c.errors[domain], err)
			c.mu.Unlock()
		},
	}
	if cfg.Dial != nil || cfg.Roots != nil {
		c.resolver.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext:     c.dialHTTPS,
			TLSClientConfig: &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12},
		}}
	}
	if o.cacheDir != "" {
		// The sender's cache is applied as the sender would, but not
		// written: a checker does not change what an MTA has learned.
		c.resolver.Cache = readOnlyCache{c.dirCache}
	}
	return c, nil
}

func cmpOr(a, b func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if a != nil {
		return a
	}
	return b
}

// readOnlyCache reads a DirCache and never writes it.
type readOnlyCache struct{ d mtasts.DirCache }

func (c readOnlyCache) Get(ctx context.Context, key string) ([]byte, error) { return c.d.Get(ctx, key) }
func (readOnlyCache) Put(context.Context, string, []byte) error             { return nil }
func (readOnlyCache) Delete(context.Context, string) error                  { return nil }

// domainCheck gathers one domain's report as the steps run.
type domainCheck struct {
	*domainReport
	c         *checker
	parsed    *mtasts.Policy // the policy as fetched by the checker, if it parsed
	policy    *mtasts.Policy // what Lookup returned: the policy a sender applies
	lookupErr error
	cached    *mtasts.Policy // what --cache held before the check
	tlsrpt    *mtasts.TLSRPTRecord
}

func (dc *domainCheck) add(f finding) { dc.Findings = append(dc.Findings, f) }

// addClassified adds a finding for err with its RFC 8460 result type.
func (dc *domainCheck) addClassified(code, severity, msg string, err error) {
	typ, reason := mtasts.Classify(err)
	dc.add(finding{Code: code, Severity: severity, Message: msg, ResultType: string(typ), Reason: reason})
}

// check runs every step for one domain.
func (c *checker) check(ctx context.Context, name string) domainReport {
	dc := &domainCheck{domainReport: &domainReport{Domain: name, Findings: []finding{}}, c: c}
	d, err := idna.Lookup.ToASCII(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), "."))
	if err != nil || d == "" || !strings.Contains(d, ".") || net.ParseIP(d) != nil {
		dc.add(finding{Code: "invalid-domain", Severity: "error", Message: fmt.Sprintf("%q is not a domain name", name)})
		dc.Verdict = verdict{Action: "unknown", Text: "could not check: not a domain name"}
		dc.Exit = exitCannotCheck
		return *dc.domainReport
	}
	dc.Domain = d
	cannot := false
	if c.opts.cacheDir != "" {
		dc.checkCache(ctx)
	}
	if !dc.checkRecord(ctx) {
		cannot = true
	}
	if dc.Record != nil && dc.Record.ID != "" {
		dc.checkFetch(ctx)
	}
	dc.policy, dc.lookupErr = c.resolver.Lookup(ctx, d)
	dc.lookupFindings()
	if !dc.checkMX(ctx) {
		cannot = true
	}
	dc.checkTLSRPT(ctx)
	dc.lint()
	if c.opts.probe {
		dc.probeAll(ctx)
	}
	dc.decide(cannot)
	return *dc.domainReport
}

// checkCache shows what --cache holds for the domain, and purges it with
// --purge.
func (dc *domainCheck) checkCache(ctx context.Context) {
	c := dc.c
	cr := &cacheReport{Dir: c.opts.cacheDir}
	dc.Cache = cr
	// A Resolver of its own, with nothing in memory, reads only the cache.
	r := &mtasts.Resolver{Cache: c.dirCache, Now: c.cfg.Now}
	ce, ok, err := r.Inspect(ctx, dc.Domain)
	switch {
	case err != nil:
		cr.Error = err.Error()
	case ok && ce.Policy != nil:
		p := ce.Policy
		dc.cached = p
		fetched, expires := p.Fetched.UTC(), p.Expires().UTC()
		cr.ID, cr.Mode, cr.Fetched, cr.Expires = p.ID, string(p.Mode), &fetched, &expires
	}
	if c.opts.purge {
		if err := r.Purge(ctx, dc.Domain); err != nil {
			cr.Error = err.Error()
		} else {
			cr.Purged = true
		}
	}
}

// checkRecord queries _mta-sts.<domain> and says which record counts
// (RFC 8461 §3.1). It returns false if DNS did not answer.
func (dc *domainCheck) checkRecord(ctx context.Context) bool {
	rr := &recordReport{Name: "_mta-sts." + dc.Domain}
	dc.Record = rr
	a, err := dc.c.query(ctx, rr.Name, dns.TypeTXT)
	if err != nil {
		rr.Error = err.Error()
		dc.add(finding{Code: "dns-failure", Severity: "error", Message: err.Error(),
			ResultType: string(mtasts.ResultSTSPolicyFetchError), Reason: "dns-failure"})
		return false
	}
	rr.CNAMEChain = a.chain
	var sts []int
	for _, r := range a.rrs {
		t := txtRecord{Text: txtOf(r)}
		// RFC 8461 §3.1: records not beginning "v=STSv1" are discarded.
		t.STS = t.Text == "v=STSv1" || strings.HasPrefix(t.Text, "v=STSv1;") ||
			strings.HasPrefix(t.Text, "v=STSv1 ") || strings.HasPrefix(t.Text, "v=STSv1\t")
		if t.STS {
			sts = append(sts, len(rr.Records))
			if _, err := mtasts.ParseRecord(t.Text); err != nil {
				t.Error = err.Error()
			}
		}
		rr.Records = append(rr.Records, t)
	}
	switch len(sts) {
	case 0:
		if a.none != "" {
			rr.Why = rr.Name + " " + a.none + ": the domain has no MTA-STS policy"
		} else {
			rr.Why = `no record begins "v=STSv1": the domain has no MTA-STS policy (RFC 8461 §3.1)`
		}
		if dc.cached == nil {
			dc.add(finding{Code: "no-record", Severity: "info", Message: "no MTA-STS record at " + rr.Name})
		}
	case 1:
		t := &rr.Records[sts[0]]
		if t.Error != "" {
			rr.Why = "the one STS record is malformed: it counts as no record (RFC 8461 §3.1)"
			break
		}
		t.Counted = true
		rec, _ := mtasts.ParseRecord(t.Text)
		rr.ID = rec.ID
		rr.Why = `the only record beginning "v=STSv1"`
	default:
		rr.Why = strconv.Itoa(len(sts)) + ` records begin "v=STSv1": none counts, as though there were none (RFC 8461 §3.1)`
	}
	return true
}

// checkFetch fetches the policy and parses it, line by line.
func (dc *domainCheck) checkFetch(ctx context.Context) {
	fr, body := dc.c.fetchPolicy(ctx, dc.Domain)
	dc.Fetch = fr
	if body == nil {
		return
	}
	pr := &policyReport{Text: string(body)}
	dc.Policy = pr
	p, err := mtasts.ParsePolicy(body)
	if err == nil {
		dc.parsed = p
		pr.Mode, pr.MaxAge, pr.MX = string(p.Mode), int64(p.MaxAge/time.Second), p.MX
		return
	}
	pr.Problems = policyProblems(body)
	if !strings.Contains(err.Error(), ": line ") {
		pr.Problems = append(pr.Problems, policyProblem{Error: err.Error()})
	}
}

// policyProblems runs the package's parser on each line of a policy, with
// the fields it requires after it, so that every bad line is found and not
// only the first. Each error is the parser's own, renumbered.
func policyProblems(body []byte) []policyProblem {
	const rest = "\nversion: STSv1\nmode: none\nmax_age: 1\n"
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	var out []policyProblem
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if _, err := mtasts.ParsePolicy([]byte(line + rest)); err != nil && strings.Contains(err.Error(), ": line 1 ") {
			out = append(out, policyProblem{Line: i + 1, Error: strings.Replace(err.Error(), ": line 1 ", ": line "+strconv.Itoa(i+1)+" ", 1)})
		}
	}
	return out
}

// lookupFindings reports what the package's Lookup found, with each
// failure's RFC 8460 result type.
func (dc *domainCheck) lookupFindings() {
	dc.c.mu.Lock()
	errs := dc.c.errors[dc.Domain]
	delete(dc.c.errors, dc.Domain)
	dc.c.mu.Unlock()
	if dc.lookupErr != nil && !errors.Is(dc.lookupErr, mtasts.ErrNoRecord) {
		if !slices.ContainsFunc(errs, func(e error) bool { return e.Error() == dc.lookupErr.Error() }) {
			errs = append(errs, dc.lookupErr)
		}
	}
	for _, err := range errs {
		typ, reason := mtasts.Classify(err)
		if typ == "" {
			continue
		}
		msg := err.Error()
		if dc.policy != nil {
			msg += " (the cached policy stays in force, RFC 8461 §3.3)"
		}
		code := reason
		if reason == "dns-failure" {
			if slices.ContainsFunc(dc.Findings, func(f finding) bool { return f.Code == "dns-failure" }) {
				continue // the checker's own query failed too, and says so
			}
			code = "policy-dns-failure"
		}
		dc.add(finding{Code: code, Severity: "error", Message: msg, ResultType: string(typ), Reason: reason})
	}
}

// checkMX looks up the domain's MX records and matches each against the
// policy in force, or the one fetched. It returns false if DNS did not
// answer.
func (dc *domainCheck) checkMX(ctx context.Context) bool {
	a, err := dc.c.query(ctx, dc.Domain, dns.TypeMX)
	if err != nil {
		dc.add(finding{Code: "mx-dns-failure", Severity: "error", Message: err.Error()})
		return false
	}
	var mxs []*dns.MX
	for _, rr := range a.rrs {
		if mx := rr.(*dns.MX); mx.Mx == "." {
			// RFC 7505: a null MX, the domain accepts no mail.
			dc.add(finding{Code: "null-mx", Severity: "info", Message: dc.Domain + " has a null MX: it accepts no mail (RFC 7505)"})
			return true
		} else {
			mxs = append(mxs, mx)
		}
	}
	slices.SortStableFunc(mxs, func(x, y *dns.MX) int { return int(x.Preference) - int(y.Preference) })
	p := dc.patternsPolicy()
	dc.HasPatterns = p != nil
	for _, mx := range mxs {
		host := strings.TrimSuffix(strings.ToLower(mx.Mx), ".")
		m := mxReport{Host: host, Preference: mx.Preference}
		if p != nil {
			for _, pat := range p.MX {
				if (&mtasts.Policy{MX: []string{pat}}).Match(host) {
					m.Pattern = pat
					break
				}
			}
		}
		dc.MX = append(dc.MX, m)
	}
	if len(mxs) == 0 {
		sev := "info"
		if p != nil {
			sev = "warning"
		}
		dc.add(finding{Code: "no-mx", Severity: sev, Message: "no MX records at " + dc.Domain + ": senders try its address records, which no mx pattern can list"})
	}
	return true
}

// patternsPolicy is the policy whose patterns the MX hosts are matched
// against: the one in force, or else the one fetched.
func (dc *domainCheck) patternsPolicy() *mtasts.Policy {
	if dc.policy != nil {
		return dc.policy
	}
	return dc.parsed
}

// checkTLSRPT looks up _smtp._tls.<domain> (RFC 8460 §3).
func (dc *domainCheck) checkTLSRPT(ctx context.Context) {
	tr := &tlsrptReport{Name: "_smtp._tls." + dc.Domain}
	dc.TLSRPT = tr
	rec, err := dc.c.resolver.LookupTLSRPT(ctx, dc.Domain)
	switch {
	case err == nil:
		dc.tlsrpt = rec
		tr.Record, tr.RUA = rec.String(), rec.RUA
	case errors.Is(err, mtasts.ErrNoTLSRPTRecord):
		tr.Error = err.Error()
		if strings.Contains(err.Error(), " records ") {
			dc.add(finding{Code: "tlsrpt-multiple-records", Severity: "warning", Message: err.Error() + ": no reports are sent (RFC 8460 §3)"})
		}
	default:
		tr.Error = err.Error()
		dc.add(finding{Code: "tlsrpt-invalid", Severity: "warning", Message: err.Error() + ": no reports are sent (RFC 8460 §3)"})
	}
}

// lint adds the findings that do not stop a sender but that a careful
// administrator wants to know about.
func (dc *domainCheck) lint() {
	p := dc.patternsPolicy()
	if p == nil {
		return
	}
	if p.Mode != mtasts.ModeNone && p.MaxAge < 7*24*time.Hour {
		dc.add(finding{Code: "max-age-short", Severity: "warning",
			Message: fmt.Sprintf("max_age %d is under a week: a sender forgets the policy soon after the last fetch; RFC 8461 §3.2 recommends weeks or more", int64(p.MaxAge/time.Second))})
	}
	if p.Mode == mtasts.ModeTesting && dc.tlsrpt == nil {
		dc.add(finding{Code: "testing-without-tlsrpt", Severity: "warning",
			Message: "mode testing without a TLSRPT record: the failures testing exists to show are reported to no one (RFC 8461 §5, RFC 8460 §3)"})
	}
	for _, pat := range p.MX {
		if !strings.HasPrefix(pat, "*.") {
			continue
		}
		base := strings.ToLower(pat[2:])
		if suffix, _ := publicsuffix.PublicSuffix(base); suffix == base {
			dc.add(finding{Code: "public-suffix-wildcard", Severity: "error",
				Message: fmt.Sprintf("mx pattern %q covers every host under the public suffix %q: anyone who registers a name there can receive the domain's mail", pat, base)})
		}
	}
	used := map[string]bool{}
	for _, m := range dc.MX {
		if m.Pattern != "" {
			used[m.Pattern] = true
			continue
		}
		if p.Mode == mtasts.ModeNone {
			continue
		}
		err := p.CheckMX(m.Host)
		sev := "error"
		msg := fmt.Sprintf("MX %s matches no mx pattern: ", m.Host)
		if p.Mode == mtasts.ModeEnforce {
			msg += "senders refuse it (RFC 8461 §4.1)"
		} else {
			msg += "senders deliver to it and report a failure (RFC 8461 §5)"
		}
		dc.addClassified("mx-not-covered", sev, msg, err)
	}
	if len(dc.MX) > 0 {
		for _, pat := range p.MX {
			if !used[pat] && !slices.ContainsFunc(dc.MX, func(m mxReport) bool { return (&mtasts.Policy{MX: []string{pat}}).Match(m.Host) }) {
				dc.add(finding{Code: "pattern-unused", Severity: "warning", Message: fmt.Sprintf("mx pattern %q matches no MX record", pat)})
			}
		}
	}
	if dc.cached != nil && dc.parsed != nil && dc.Record != nil && dc.cached.ID == dc.Record.ID &&
		dc.cached.String() != dc.parsed.String() {
		dc.add(finding{Code: "id-unchanged", Severity: "error",
			Message: fmt.Sprintf("the policy changed but its id %q did not: senders that cached it keep the old one until it expires (RFC 8461 §3.1)", dc.Record.ID)})
	}
	for _, cert := range firstCert(dc.Fetch) {
		if cert.DaysLeft >= 0 && cert.DaysLeft < 14 {
			dc.add(finding{Code: "policy-certificate-expiring", Severity: "warning",
				Message: fmt.Sprintf("the policy host's certificate expires in %d days", cert.DaysLeft)})
		}
	}
}

func firstCert(fr *fetchReport) []certInfo {
	if fr == nil || len(fr.Certificates) == 0 {
		return nil
	}
	return fr.Certificates[:1]
}

// decide writes the verdict: what a sender enforcing MTA-STS with this
// package does now, from Lookup's answer and Validate.
func (dc *domainCheck) decide(cannot bool) {
	v := verdict{}
	seen := map[reportType]bool{}
	for _, f := range dc.Findings {
		rt := reportType{ResultType: f.ResultType, Reason: f.Reason}
		if f.ResultType != "" && !seen[rt] {
			seen[rt] = true
			v.Reports = append(v.Reports, rt)
		}
	}
	p := dc.policy
	switch {
	case slices.ContainsFunc(dc.Findings, func(f finding) bool { return f.Code == "null-mx" }):
		v.Action, v.Text = "no-mail", "the domain accepts no mail (a null MX, RFC 7505): senders deliver nothing"
	case cannot:
		v.Action, v.Text = "unknown", "could not check: DNS did not answer; a sender keeps a cached policy in force, or delivers as without one"
	case p == nil || p.Mode == mtasts.ModeNone:
		v.Action = "deliver-opportunistic"
		if p != nil {
			v.Mode = string(p.Mode)
		}
		switch {
		case p != nil:
			v.Text = "mode none: senders deliver as without a policy, STARTTLS when offered, any certificate (RFC 8461 §5)"
		case dc.lookupErr != nil || len(v.Reports) > 0:
			v.Text = "no usable policy: senders deliver as without one, STARTTLS when offered, any certificate, and report the failure"
		default:
			v.Text = "no MTA-STS policy: senders deliver with STARTTLS when offered, any certificate (RFC 7435)"
		}
	case p.Mode == mtasts.ModeTesting:
		v.Action, v.Mode = "deliver-testing", string(p.Mode)
		v.Text = "mode testing: senders deliver as without a policy"
		if len(v.Reports) > 0 {
			v.Text += ", and report the failures below"
		}
	default:
		v.Action, v.Mode = "deliver-enforced", string(p.Mode)
		var ok []string
		for _, m := range dc.MX {
			if p.Validate(m.Host) != nil {
				continue
			}
			if m.Probe != nil && !m.Probe.Verified {
				continue
			}
			ok = append(ok, m.Host)
		}
		switch {
		case len(ok) > 0 && dc.opts().probe:
			v.Text = "mode enforce: senders deliver to " + strings.Join(ok, ", ") + " over verified TLS"
		case len(ok) == 1:
			v.Text = "mode enforce: senders deliver to " + ok[0] + " if its certificate verifies (check with --probe)"
		case len(ok) > 0:
			v.Text = "mode enforce: senders deliver to " + strings.Join(ok, ", ") + " if their certificates verify (check with --probe)"
		default:
			v.Action = "defer"
			v.Text = "mode enforce: senders refuse every MX host; mail waits in their queues and bounces when it expires there (RFC 8461 §5.1)"
		}
	}
	dc.Verdict = v
	switch {
	case cannot:
		dc.Exit = exitCannotCheck
	case slices.ContainsFunc(dc.Findings, func(f finding) bool { return f.Severity != "info" }):
		dc.Exit = exitProblems
	default:
		dc.Exit = exitOK
	}
}

func (dc *domainCheck) opts() options { return dc.c.opts }
