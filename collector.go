package mtasts

import (
	"cmp"
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// SessionResult is the outcome of one attempt to deliver over SMTP to one MX
// host, as far as MTA-STS is concerned: a success, or the failure that Err
// describes. Do not add the sessions that deliver reports: RFC 8460 §3 says
// they SHOULD NOT be in the next report.
type SessionResult struct {
	// Domain is the policy domain: the recipient domain, or the smart host's
	// (RFC 8461 §3.4). If empty, Policy.Domain.
	Domain string

	// Policy is the policy that applied, or nil if none did: the domain has
	// none, or its fetch failed with nothing cached (then Err is that
	// failure). A nil Policy is reported as no-policy-found; a policy in
	// mode none as the sts policy it is.
	Policy *Policy

	// Err is why the session failed, nil for a success. Under a testing
	// policy it is the failure that enforce would have refused to deliver
	// over, even though delivery went on. Classify gives its result type and
	// failure reason code.
	Err error

	// The details of a failed session. MXHost is required when Err is not
	// nil; the others are optional.
	MXHost string // the MX host name tried (receiving-mx-hostname)

	// SendingIP is the address the sender connected from (sending-mta-ip).
	// RFC 8460 §4.4 requires sending-mta-ip in every failure detail, but an
	// MX refused before any connection, as one the policy does not list,
	// has no such address: leave SendingIP zero then, and the collector
	// reports its own SendingIP. A failure with neither is refused.
	SendingIP netip.Addr

	ReceivingIP netip.Addr // the MX address connected to; optional
	HELO        string     // the name the MX gave in its greeting or EHLO reply; optional

	// Time is when the session took place, which decides the report's day.
	// If zero, the collector's clock is used.
	Time time.Time
}

// A ReportCollector aggregates SessionResults into RFC 8460 reports, one per
// policy domain and UTC day. OrganizationName, ContactInfo and Submitter
// must be set: until they are, Add returns ErrCollectorConfig.
//
// A ReportCollector is safe for concurrent use by multiple goroutines. Its
// fields must not be changed after the first call to Add that succeeds, and
// it must not be copied after first use. It keeps its results in memory, and
// in Store if that is set, so that a restarted process goes on counting where
// the last one stopped.
type ReportCollector struct {
	// OrganizationName is the organization-name of the reports: who sends
	// them. Required (RFC 8460 §4.4).
	OrganizationName string

	// ContactInfo is the contact-info of the reports: an email address to
	// write to about them. Required (RFC 8460 §4.4).
	ContactInfo string

	// Submitter is the domain of the sending MTA, in A-labels or U-labels.
	// Required. The reports carry it, in A-labels, as Report.Submitter: it is
	// the sender of their file name (RFC 8460 §5.1), the submitter of their
	// mail (§5.3.1), and the right-hand side of their report ids, which then
	// have the form of a Message-ID as the Subject of §5.3.1 wants.
	Submitter string

	// SendingIP is the sending-mta-ip reported for a failure whose
	// SessionResult has no SendingIP, as for an MX refused before any
	// connection: the address the sender would have connected from (RFC
	// 8460 §4.4 requires the field in every failure detail). If zero, such
	// failures are refused by Add.
	SendingIP netip.Addr

	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time

	// Store, if not nil, keeps the collector's state durable: the counts of
	// the days not yet taken, and the reports a ReportSender has still to
	// deliver. They are stored under the one key "_tlsrpt-collector", which
	// no policy domain can be, so a Resolver's Cache may be shared; one
	// collector per Store. The state is read on first use, and written
	// through on every Add, take and delivery before they return: a crash
	// loses no session that Add counted. Concurrent Adds share one write, so
	// a busy sender pays about one write per write time, not one per
	// session. With a DirCache, each write is a file rewritten and synced.
	// A state that cannot be read or decoded is passed to OnError and
	// replaced; a write that fails is passed to OnError, and the counts stay
	// in memory, to be written with the next change.
	Store Cache

	// OnError, if not nil, is called with each failure to read, decode or
	// write the state in Store. Such failures are not returned by Add: the
	// session is counted all the same.
	OnError func(err error)

	mu        sync.Mutex // mu guards submitter, days, outbox, loaded and gen
	submitter string     // Submitter in A-labels, once the fields are checked
	days      map[dayKey]*dayResults
	outbox    []*delivery // the reports a ReportSender has to deliver
	loaded    bool        // Store has been read
	gen       uint64      // count of the changes to days and outbox

	saveMu   sync.Mutex // saveMu serializes writes to Store, and guards savedGen
	savedGen uint64     // the gen that Store holds
}

// checkConfig returns an error wrapping ErrCollectorConfig when a field every
// report needs is missing or invalid. Once they are found complete, they are
// not checked again: they must not change after the first Add that counts.
func (c *ReportCollector) checkConfig() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.submitter != "" {
		return nil
	}
	switch {
	case strings.TrimSpace(c.OrganizationName) == "":
		return fmt.Errorf("%w: no OrganizationName (organization-name, RFC 8460 §4.4)", ErrCollectorConfig)
	case strings.TrimSpace(c.ContactInfo) == "":
		return fmt.Errorf("%w: no ContactInfo (contact-info, RFC 8460 §4.4)", ErrCollectorConfig)
	case c.Submitter == "":
		return fmt.Errorf("%w: no Submitter (the sending MTA's domain, RFC 8460 §5.1)", ErrCollectorConfig)
	}
	d, err := normalizeDomain(c.Submitter)
	if err != nil {
		return fmt.Errorf("%w: Submitter: %w", ErrCollectorConfig, err)
	}
	c.submitter = d
	return nil
}

type dayKey struct {
	domain string // the policy domain, in A-labels
	day    int64  // the day's start, in seconds since 1970 UTC
}

// dayResults are the results of one domain and day, by policy.
type dayResults struct {
	policies map[string]*policyResults // by policy type and policy text
}

type policyResults struct {
	policy   ReportPolicy
	success  int64
	failure  int64
	failures map[detailKey]int64
}

// detailKey is what RFC 8460 aggregates failure details by.
type detailKey struct {
	resultType  ResultType
	sendingIP   string
	mxHost      string
	helo        string
	receivingIP string
	reason      string
}

// Add counts one session in the report of its policy domain and day. It
// returns an error wrapping ErrCollectorConfig, and counts nothing, when the
// collector lacks OrganizationName, ContactInfo or Submitter. It returns an
// error wrapping ErrInvalidReport, and counts nothing, when the
// result has no valid policy domain, names a domain other than its policy's,
// is a failure without MXHost, or without SendingIP when the collector has
// none either, or carries an error that is the sender's own rather than the
// domain's (Classify gives it no result type, as for a cache failure).
func (c *ReportCollector) Add(res SessionResult) error {
	if err := c.checkConfig(); err != nil {
		return err
	}
	domain, err := res.policyDomain()
	if err != nil {
		return err
	}
	var fail detailKey
	if res.Err != nil {
		sending := res.SendingIP
		if !sending.IsValid() {
			sending = c.SendingIP
		}
		if !sending.IsValid() {
			return fmt.Errorf("%w: failure for %s without the sending address, and no ReportCollector.SendingIP", ErrInvalidReport, domain)
		}
		mx, err := normalizeDomain(res.MXHost)
		if err != nil {
			return fmt.Errorf("%w: failure for %s: MX host: %w", ErrInvalidReport, domain, err)
		}
		fail.resultType, fail.reason = Classify(res.Err)
		if fail.resultType == "" {
			return fmt.Errorf("%w: %s: not a failure of the domain's to report: %w", ErrInvalidReport, domain, res.Err)
		}
		fail.sendingIP = addrString(sending)
		fail.mxHost = mx
		fail.helo = strings.TrimSpace(res.HELO)
		fail.receivingIP = addrString(res.ReceivingIP)
	}
	pkey := string(PolicyTypeNoPolicyFound)
	if res.Policy != nil {
		pkey = string(PolicyTypeSTS) + "\n" + res.Policy.String()
	}
	t := res.Time
	if t.IsZero() {
		t = c.now()
	}
	k := dayKey{domain: domain, day: utcDay(t).Unix()}

	c.load()
	c.mu.Lock()
	c.countLocked(k, pkey, res, fail)
	c.gen++
	c.mu.Unlock()
	c.save()
	return nil
}

// countLocked counts one session under c.mu.
func (c *ReportCollector) countLocked(k dayKey, pkey string, res SessionResult, fail detailKey) {
	domain := k.domain
	if c.days == nil {
		c.days = map[dayKey]*dayResults{}
	}
	d := c.days[k]
	if d == nil {
		d = &dayResults{policies: map[string]*policyResults{}}
		c.days[k] = d
	}
	p := d.policies[pkey]
	if p == nil {
		p = &policyResults{policy: reportPolicy(domain, res.Policy), failures: map[detailKey]int64{}}
		d.policies[pkey] = p
	}
	if res.Err == nil {
		p.success++
	} else {
		p.failure++
		p.failures[fail]++
	}
}

// policyDomain returns the result's policy domain in A-labels.
func (res *SessionResult) policyDomain() (string, error) {
	d := res.Domain
	if d == "" && res.Policy != nil {
		d = res.Policy.Domain
	}
	if d == "" {
		return "", fmt.Errorf("%w: result without a policy domain", ErrInvalidReport)
	}
	domain, err := normalizeDomain(d)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidReport, err)
	}
	if res.Policy != nil && res.Policy.Domain != "" {
		pd, err := normalizeDomain(res.Policy.Domain)
		if err != nil || pd != domain {
			return "", fmt.Errorf("%w: result for %s with the policy of %s", ErrInvalidReport, domain, res.Policy.Domain)
		}
	}
	return domain, nil
}

// reportPolicy describes p, or the absence of a policy, for a report.
func reportPolicy(domain string, p *Policy) ReportPolicy {
	if p == nil {
		return ReportPolicy{Type: PolicyTypeNoPolicyFound, Domain: domain}
	}
	return ReportPolicy{
		Type: PolicyTypeSTS,
		// RFC 8460 §4.5: the policy as an array of strings, one per line,
		// each "mx" in an element of its own.
		PolicyString: strings.Split(strings.TrimSuffix(p.String(), "\n"), "\n"),
		Domain:       domain,
		MXHost:       append([]string{}, p.MX...),
	}
}

// addrString formats an address as RFC 8460 §4.4 wants: IPv4 in dot-decimal,
// IPv6 as RFC 5952 says. It is "" for the zero Addr.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// TakeFinished removes and returns the reports of the UTC days that have
// ended, in order of day and domain. A result added later for one of those
// days starts a new report for it, with its own report id; no session is
// counted in two reports. With Store, the removal is written to it before
// TakeFinished returns: the caller then holds the only copy of the reports.
// A ReportSender keeps the reports it takes in Store until they are
// delivered.
func (c *ReportCollector) TakeFinished() []*Report {
	now := c.now()
	return c.take(func(start time.Time) bool { return !now.Before(start.Add(24 * time.Hour)) })
}

// TakeAll removes and returns every report, including those of days not yet
// over, in order of day and domain: for a sender that stops.
func (c *ReportCollector) TakeAll() []*Report {
	return c.take(func(time.Time) bool { return true })
}

func (c *ReportCollector) take(done func(start time.Time) bool) []*Report {
	if c.checkConfig() != nil {
		return nil // nothing was counted, unless Store holds counts: they wait
	}
	c.load()
	c.mu.Lock()
	reports := c.takeLocked(done)
	if len(reports) > 0 {
		c.gen++
	}
	c.mu.Unlock()
	c.save()
	return reports
}

// takeLocked removes the days that done accepts and returns their reports, in
// order of day and domain. c.mu is held, and the fields are checked.
func (c *ReportCollector) takeLocked(done func(start time.Time) bool) []*Report {
	type taken struct {
		key dayKey
		res *dayResults
	}
	var ts []taken
	for k, d := range c.days {
		if done(time.Unix(k.day, 0).UTC()) {
			ts = append(ts, taken{k, d})
			delete(c.days, k)
		}
	}
	slices.SortFunc(ts, func(a, b taken) int {
		return cmp.Or(cmp.Compare(a.key.day, b.key.day), strings.Compare(a.key.domain, b.key.domain))
	})
	reports := make([]*Report, 0, len(ts))
	for _, t := range ts {
		reports = append(reports, c.report(t.key, t.res))
	}
	return reports
}

// report builds the report of one domain and day. Policies are sorted by
// type and text, failure details by result type, MX host, receiving address,
// sending address, HELO name and reason: the order of adding does not show.
func (c *ReportCollector) report(k dayKey, d *dayResults) *Report {
	start := time.Unix(k.day, 0).UTC()
	r := &Report{
		OrganizationName: c.OrganizationName,
		DateRange:        ReportDateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      c.ContactInfo,
		ReportID:         c.reportID(),
		Submitter:        c.submitter,
	}
	for _, p := range d.policies {
		r.Policies = append(r.Policies, c.policyResult(p))
	}
	slices.SortFunc(r.Policies, func(a, b ReportPolicyResult) int {
		return cmp.Or(
			strings.Compare(string(a.Policy.Type), string(b.Policy.Type)),
			slices.Compare(a.Policy.PolicyString, b.Policy.PolicyString),
		)
	})
	return r
}

// policyResult returns the counts under one policy as a report carries them,
// failure details sorted by result type, MX host, receiving address, sending
// address, HELO name and reason.
func (c *ReportCollector) policyResult(p *policyResults) ReportPolicyResult {
	pr := ReportPolicyResult{
		Policy:         p.policy,
		Summary:        ReportSummary{TotalSuccessfulSessionCount: p.success, TotalFailureSessionCount: p.failure},
		FailureDetails: make([]FailureDetail, 0, len(p.failures)),
	}
	for f, n := range p.failures {
		pr.FailureDetails = append(pr.FailureDetails, FailureDetail{
			ResultType:          f.resultType,
			SendingMTAIP:        f.sendingIP,
			ReceivingMXHostname: f.mxHost,
			ReceivingMXHelo:     f.helo,
			ReceivingIP:         f.receivingIP,
			FailedSessionCount:  n,
			FailureReasonCode:   f.reason,
		})
	}
	slices.SortFunc(pr.FailureDetails, func(a, b FailureDetail) int {
		return cmp.Or(
			strings.Compare(string(a.ResultType), string(b.ResultType)),
			strings.Compare(a.ReceivingMXHostname, b.ReceivingMXHostname),
			strings.Compare(a.ReceivingIP, b.ReceivingIP),
			strings.Compare(a.SendingMTAIP, b.SendingMTAIP),
			strings.Compare(a.ReceivingMXHelo, b.ReceivingMXHelo),
			strings.Compare(a.FailureReasonCode, b.FailureReasonCode),
		)
	})
	return pr
}

// reportID returns a new id for a report: a random part, "@" and the
// Submitter. The random part, also the unique-id of the report's file name,
// is short so that the Report-ID of a long Submitter keeps within a mail
// line (RFC 5322 §2.1.1).
func (c *ReportCollector) reportID() string {
	return randomID() + "@" + c.submitter
}

// randomID returns 16 random characters of base32, 80 bits: with the
// submitter's domain beside them, unique.
func randomID() string {
	return rand.Text()[:16]
}

func (c *ReportCollector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func utcDay(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}
