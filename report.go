package mtasts

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Reporting (RFC 8460 §4, §5).
var (
	// ErrInvalidReport means a result given to a ReportCollector, a Report, or
	// the addresses given to Report.Mail lack something RFC 8460 requires or
	// are malformed. Retrying does not help; the error says what to fix.
	ErrInvalidReport = errors.New("mtasts: invalid TLSRPT report")

	// ErrReportDelivery means PostReport did not deliver a report: the
	// destination is not an https: URI, the request failed, or the server
	// answered other than 2xx. Retry later with growing delays, for up to 24
	// hours (RFC 8460 §5.4), or deliver to the domain's other destinations.
	ErrReportDelivery = errors.New("mtasts: TLSRPT report delivery failed")

	// ErrCollectorConfig means a ReportCollector lacks a field every report
	// needs, or has an invalid one: OrganizationName and ContactInfo, which
	// RFC 8460 §4.4 requires in the report, or Submitter, the domain that
	// names the report's file (§5.1) and signs its mail (§5.3.1). Add
	// returns it, counting nothing, until the collector is configured.
	ErrCollectorConfig = errors.New("mtasts: ReportCollector not configured")
)

const (
	// reportGzipType is the media type of a gzipped report (RFC 8460 §6.4).
	reportGzipType = "application/tlsrpt+gzip"

	// reportPostTimeout bounds PostReport when the caller gives no client.
	reportPostTimeout = time.Minute
)

// PolicyType is the kind of policy a report's results were obtained under
// (RFC 8460 §4.4, policy-type).
type PolicyType string

// The policy types of RFC 8460 §4.4.
const (
	// PolicyTypeSTS: an MTA-STS policy applied.
	PolicyTypeSTS PolicyType = "sts"
	// PolicyTypeTLSA: a DANE TLSA record set applied. This package produces
	// none; the type is here for reports read back.
	PolicyTypeTLSA PolicyType = "tlsa"
	// PolicyTypeNoPolicyFound: neither an MTA-STS nor a DANE policy could be
	// found, for instance because the policy fetch failed and none was cached.
	PolicyTypeNoPolicyFound PolicyType = "no-policy-found"
)

// Report is an RFC 8460 aggregate report, the JSON document of §4.4. Its
// field names are those of the RFC; optional fields that are empty are left
// out.
type Report struct {
	OrganizationName string          `json:"organization-name"`
	DateRange        ReportDateRange `json:"date-range"`
	ContactInfo      string          `json:"contact-info"` // an email address
	ReportID         string          `json:"report-id"`

	// Policies are the policies the results were obtained under, each with
	// its counts. It is an array even with one policy (RFC 8460 §4.4).
	Policies []ReportPolicyResult `json:"policies"`

	// Submitter is the domain of the sending MTA that made the report, in
	// A-labels: the sender of the file name (RFC 8460 §5.1), and the
	// TLS-Report-Submitter and Subject's Submitter of Mail (§5.3.1). It is
	// the one source of the submitter; it is not part of the JSON document.
	// ReportCollector sets it from its own Submitter; set it on a report
	// decoded from JSON before calling Filename or Mail.
	Submitter string `json:"-"`
}

// ReportDateRange is the time a report covers: a whole UTC day, from 00:00:00
// to 23:59:59 as in the example of RFC 8460 Appendix B. The times are encoded
// in RFC 3339 format.
type ReportDateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// ReportPolicyResult is one element of a report's policies: a policy and the
// sessions held under it.
type ReportPolicyResult struct {
	Policy  ReportPolicy  `json:"policy"`
	Summary ReportSummary `json:"summary"`

	// FailureDetails aggregate the failed sessions; it is an empty array when
	// there were none.
	FailureDetails []FailureDetail `json:"failure-details"`
}

// ReportPolicy describes the policy that applied.
type ReportPolicy struct {
	Type PolicyType `json:"policy-type"`

	// PolicyString is the policy, one line per element without the line
	// ending (RFC 8460 §4.5). For no-policy-found, where there is no policy,
	// it is encoded as an empty array: RFC 8460 §4.4 lists the field without
	// marking it optional, and validators of the report format require it.
	// Left out for other types when nil.
	PolicyString []string `json:"policy-string,omitzero"`

	// Domain is the policy domain, in A-labels.
	Domain string `json:"policy-domain"`

	// MXHost are the policy's mx patterns, in A-labels. Like PolicyString,
	// an empty array for no-policy-found, and left out for other types when
	// nil.
	MXHost []string `json:"mx-host,omitzero"`
}

// MarshalJSON encodes the policy with "policy-string" and "mx-host" empty
// arrays, rather than absent, for no-policy-found (RFC 8460 §4.4).
func (p ReportPolicy) MarshalJSON() ([]byte, error) {
	type plain ReportPolicy // without this method
	if p.Type == PolicyTypeNoPolicyFound {
		if p.PolicyString == nil {
			p.PolicyString = []string{}
		}
		if p.MXHost == nil {
			p.MXHost = []string{}
		}
	}
	return json.Marshal(plain(p))
}

// ReportSummary counts the sessions under a policy (RFC 8460 §4.2).
type ReportSummary struct {
	TotalSuccessfulSessionCount int64 `json:"total-successful-session-count"`
	TotalFailureSessionCount    int64 `json:"total-failure-session-count"`
}

// FailureDetail counts the failed sessions that share a result type, sending
// address, MX host, HELO name, receiving address and reason (RFC 8460 §4.3,
// §4.4).
type FailureDetail struct {
	ResultType          ResultType `json:"result-type"`
	SendingMTAIP        string     `json:"sending-mta-ip"`
	ReceivingMXHostname string     `json:"receiving-mx-hostname"`
	ReceivingMXHelo     string     `json:"receiving-mx-helo,omitempty"` // optional in RFC 8460 §4.4

	// ReceivingIP is left out when unknown, as in the example of RFC 8460
	// Appendix B.
	ReceivingIP string `json:"receiving-ip,omitempty"`

	FailedSessionCount    int64  `json:"failed-session-count"`
	AdditionalInformation string `json:"additional-information,omitempty"` // optional URI
	FailureReasonCode     string `json:"failure-reason-code,omitempty"`
}

// MarshalJSON encodes the report with "policies" an array, even when empty.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report // without this method
	if r.Policies == nil {
		r.Policies = []ReportPolicyResult{}
	}
	return json.Marshal(plain(r))
}

// MarshalJSON encodes the result with "failure-details" an array, even when
// empty.
func (p ReportPolicyResult) MarshalJSON() ([]byte, error) {
	type plain ReportPolicyResult // without this method
	if p.FailureDetails == nil {
		p.FailureDetails = []FailureDetail{}
	}
	return json.Marshal(plain(p))
}

// JSON returns the report as JSON, the media type application/tlsrpt+json.
func (r *Report) JSON() ([]byte, error) {
	return json.Marshal(r)
}

// Gzip returns the report as JSON compressed with gzip, the media type
// application/tlsrpt+gzip that RFC 8460 §5.2 recommends for both transports.
func (r *Report) Gzip() ([]byte, error) {
	data, err := r.JSON()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Filename returns the name RFC 8460 §5.1 gives the gzipped report:
// "<Submitter>!<policy domain>!<start>!<end>!<unique-id>.json.gz", the times
// in seconds since 1970. The unique-id, which §5.1 provides to tell apart
// reports for one domain and time range, is the letters and digits of the
// report id before its "@"; it is left out, with its "!", if there are none.
// Two reports of a ReportCollector for one domain and day, such as one taken
// at midnight and one of results added late, so have different names.
func (r *Report) Filename() string {
	return reportFilename(r.Submitter, r.policyDomain(), r.DateRange, r.ReportID)
}

func reportFilename(submitter, domain string, dr ReportDateRange, reportID string) string {
	name := fmt.Sprintf("%s!%s!%d!%d", submitter, domain, dr.Start.Unix(), dr.End.Unix())
	if id := uniqueID(reportID); id != "" {
		name += "!" + id
	}
	return name + ".json.gz"
}

// uniqueID returns the unique-id of RFC 8460 §5.1, 1*(ALPHA / DIGIT), for a
// report id: the letters and digits of its part before the last "@".
func uniqueID(reportID string) string {
	if i := strings.LastIndexByte(reportID, '@'); i >= 0 {
		reportID = reportID[:i]
	}
	var b strings.Builder
	for i := 0; i < len(reportID); i++ {
		if c := reportID[i]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// policyDomain returns the domain the report is about, that of its first
// policy.
func (r *Report) policyDomain() string {
	if len(r.Policies) == 0 {
		return ""
	}
	return r.Policies[0].Policy.Domain
}

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
// fields must not be changed after the first call to Add, and it must not be
// copied after first use. It keeps its results in memory only.
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

	config    sync.Once // config checks the fields above once
	configErr error
	submitter string // Submitter in A-labels

	mu   sync.Mutex // mu guards days
	days map[dayKey]*dayResults
}

// checkConfig returns an error wrapping ErrCollectorConfig when a field every
// report needs is missing or invalid.
func (c *ReportCollector) checkConfig() error {
	c.config.Do(func() {
		switch {
		case strings.TrimSpace(c.OrganizationName) == "":
			c.configErr = fmt.Errorf("%w: no OrganizationName (organization-name, RFC 8460 §4.4)", ErrCollectorConfig)
		case strings.TrimSpace(c.ContactInfo) == "":
			c.configErr = fmt.Errorf("%w: no ContactInfo (contact-info, RFC 8460 §4.4)", ErrCollectorConfig)
		case c.Submitter == "":
			c.configErr = fmt.Errorf("%w: no Submitter (the sending MTA's domain, RFC 8460 §5.1)", ErrCollectorConfig)
		default:
			d, err := normalizeDomain(c.Submitter)
			if err != nil {
				c.configErr = fmt.Errorf("%w: Submitter: %w", ErrCollectorConfig, err)
			}
			c.submitter = d
		}
	})
	return c.configErr
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

	c.mu.Lock()
	defer c.mu.Unlock()
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
	return nil
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
// counted in two reports.
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
	type taken struct {
		key dayKey
		res *dayResults
	}
	var ts []taken
	c.mu.Lock()
	for k, d := range c.days {
		if done(time.Unix(k.day, 0).UTC()) {
			ts = append(ts, taken{k, d})
			delete(c.days, k)
		}
	}
	c.mu.Unlock()

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
		r.Policies = append(r.Policies, pr)
	}
	slices.SortFunc(r.Policies, func(a, b ReportPolicyResult) int {
		return cmp.Or(
			strings.Compare(string(a.Policy.Type), string(b.Policy.Type)),
			slices.Compare(a.Policy.PolicyString, b.Policy.PolicyString),
		)
	})
	return r
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

// PostReport delivers a report to an https: destination of the policy
// domain's TLSRPT record (RFC 8460 §5.3.2): a POST of the report gzipped, as
// application/tlsrpt+gzip. Only a 2xx answer is a success; a redirect is not
// followed. If client is nil, a client is used that verifies certificates
// against the system roots, requires TLS 1.2, and gives up after a minute;
// RFC 8460 §3 allows a caller's client to ignore certificate errors instead.
// ctx bounds the whole exchange.
//
// Errors wrap ErrReportDelivery and the cause, or ErrInvalidReport when the
// report cannot be encoded.
func PostReport(ctx context.Context, client *http.Client, uri string, r *Report) error {
	u, err := url.Parse(uri)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" {
		return fmt.Errorf("%w: %q is not an https: URI", ErrReportDelivery, uri)
	}
	body, err := r.Gzip()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidReport, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrReportDelivery, uri, err)
	}
	req.Header.Set("Content-Type", reportGzipType)
	resp, err := reportClient(client).Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrReportDelivery, uri, err)
	}
	defer resp.Body.Close()
	// Read a little of the answer so that the connection may be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("%w: %s: %s to %q, not followed", ErrReportDelivery, uri, resp.Status, resp.Header.Get("Location"))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		// RFC 8460 §5.3.2: expect a "successful" response, typically 200 or 201.
		return fmt.Errorf("%w: %s: %s", ErrReportDelivery, uri, resp.Status)
	}
	return nil
}

// reportClient is client, or the default one, made never to follow a
// redirect.
func reportClient(client *http.Client) *http.Client {
	c := client
	if c == nil {
		c = &http.Client{Transport: reportTransport(), Timeout: reportPostTimeout}
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// reportTransport is what PostReport sends through when the caller gives no
// client; it is shared, so that reports to one endpoint share its connections.
var reportTransport = sync.OnceValue(func() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// Certificates are verified against the system roots.
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:      false,
		MaxIdleConns:           100,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
})

// Mail returns the report as a mail message from the address from to the
// addresses to, those of the mailto: destinations of the policy domain's
// TLSRPT record, dated date (time.Now if zero). The message is the one RFC
// 8460 §5.3.1 describes: multipart/report with report-type "tlsrpt", a
// text/plain part for people and the report as an application/tlsrpt+gzip
// attachment named as §5.1 says; the headers TLS-Report-Domain and
// TLS-Report-Submitter; and the Subject "Report Domain: <policy domain>
// Submitter: <submitter> Report-ID: <id>". The submitter is the report's
// Submitter, which must be set; from should be an address of that domain.
// Domain names are written in A-labels.
//
// Lines end in CRLF. Header fields are folded at their white space (RFC 5322
// §2.2.3), the file name is split into parameter continuations (RFC 2231
// §3), and the text is wrapped, so that lines keep within 78 characters (RFC
// 5322 §2.1.1) unless a single word is longer: a domain name or address of
// more than 77 characters, or a Message-ID or Report-ID of more than 77,
// which a collector's report has when its Submitter is longer than 58. Such a
// line is still far within the limit of 998.
//
// The caller must DKIM-sign the message for the submitter's domain, including
// the TLS-Report-* headers, before sending it: RFC 8460 §3 has receivers
// ignore reports without a valid signature. The message carries "TLS-Required:
// No" (RFC 8689): it must be delivered whatever the recipient's MTA-STS policy
// says, and its delivery is not reported (RFC 8460 §3).
//
// Addresses must be plain ASCII addr-specs ("user@example.com"). Errors wrap
// ErrInvalidReport.
func (r *Report) Mail(from string, to []string, date time.Time) ([]byte, error) {
	if r.policyDomain() == "" {
		return nil, fmt.Errorf("%w: no policies, so no policy domain", ErrInvalidReport)
	}
	domain, err := normalizeDomain(r.policyDomain())
	if err != nil {
		return nil, fmt.Errorf("%w: policy domain: %w", ErrInvalidReport, err)
	}
	if r.Submitter == "" {
		return nil, fmt.Errorf("%w: no Submitter", ErrInvalidReport)
	}
	submitter, err := normalizeDomain(r.Submitter)
	if err != nil {
		return nil, fmt.Errorf("%w: Submitter: %w", ErrInvalidReport, err)
	}
	if err := checkAddrSpec(from); err != nil {
		return nil, fmt.Errorf("%w: from: %w", ErrInvalidReport, err)
	}
	if _, err := normalizeDomain(from[strings.LastIndexByte(from, '@')+1:]); err != nil {
		return nil, fmt.Errorf("%w: from: %w", ErrInvalidReport, err)
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrInvalidReport)
	}
	for _, a := range to {
		if err := checkAddrSpec(a); err != nil {
			return nil, fmt.Errorf("%w: to: %w", ErrInvalidReport, err)
		}
	}
	msgID, err := r.messageID(submitter)
	if err != nil {
		return nil, err
	}
	report, err := r.Gzip()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidReport, err)
	}
	if date.IsZero() {
		date = time.Now()
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	text := textproto.MIMEHeader{}
	text.Set("Content-Type", `text/plain; charset="us-ascii"`)
	text.Set("Content-Transfer-Encoding", "7bit")
	w, err := mw.CreatePart(text)
	if err != nil {
		return nil, err
	}
	io.WriteString(w, r.humanText(submitter, domain, msgID))
	att := textproto.MIMEHeader{}
	att.Set("Content-Type", reportGzipType)
	att.Set("Content-Transfer-Encoding", "base64")
	// Folded as in the example of RFC 8460 §5.3.1.
	att.Set("Content-Disposition", "attachment;"+filenameParam(reportFilename(submitter, domain, r.DateRange, r.ReportID)))
	if w, err = mw.CreatePart(att); err != nil {
		return nil, err
	}
	writeBase64(w, report)
	if err := mw.Close(); err != nil {
		return nil, err
	}

	var m bytes.Buffer
	header := func(name string, words ...string) { m.WriteString(foldHeader(name, words)) }
	header("From", from)
	recipients := make([]string, len(to))
	for i, a := range to {
		recipients[i] = a + ","
	}
	recipients[len(to)-1] = to[len(to)-1]
	header("To", recipients...)
	// RFC 8460 §5.3.1: the Subject, whose grammar allows folding between
	// any two of its words.
	header("Subject", "Report", "Domain:", domain, "Submitter:", submitter, "Report-ID:", msgID)
	header("Date", date.Format(time.RFC1123Z))
	header("Message-ID", "<"+randomID()+"@"+submitter+">")
	// RFC 8460 §5.3.1: these two headers MUST be included.
	header("TLS-Report-Domain", domain)
	header("TLS-Report-Submitter", submitter)
	// RFC 8460 §3: reports are delivered despite TLS failures; RFC 8689 §5
	// lets the message say so to the MTAs that relay it.
	header("TLS-Required", "No")
	header("MIME-Version", "1.0")
	header("Content-Type", "multipart/report;", `report-type="tlsrpt";`, `boundary="`+mw.Boundary()+`"`)
	m.WriteString("\r\n")
	m.Write(body.Bytes())
	return m.Bytes(), nil
}

// messageID returns the report id in the form of a msg-id, as the Subject's
// Report-ID wants (RFC 8460 §5.3.1): "<" id-left "@" id-right ">". An id
// without "@" gets "@" and the submitter.
func (r *Report) messageID(submitter string) (string, error) {
	left, right := r.ReportID, submitter
	if i := strings.LastIndexByte(r.ReportID, '@'); i >= 0 {
		left, right = r.ReportID[:i], r.ReportID[i+1:]
	}
	if !isDotAtom(left) || !isDotAtom(right) {
		return "", fmt.Errorf("%w: report-id %q cannot be written as a Message-ID", ErrInvalidReport, r.ReportID)
	}
	return "<" + left + "@" + right + ">", nil
}

// humanText is the text/plain part of a report message: ASCII, wrapped at
// 78 characters.
func (r *Report) humanText(submitter, domain, msgID string) string {
	const layout = "2006-01-02 15:04:05"
	var b strings.Builder
	wrap(&b, fmt.Sprintf("This is an aggregate TLS report (RFC 8460) from %s about the SMTP sessions it held to deliver mail to %s from %s to %s UTC.",
		submitter, domain, r.DateRange.Start.UTC().Format(layout), r.DateRange.End.UTC().Format(layout)))
	b.WriteString("\r\n")
	wrap(&b, "Report-ID: "+msgID)
	for _, p := range r.Policies {
		wrap(&b, fmt.Sprintf("Policy %s: %d successful sessions, %d failed.", p.Policy.Type,
			p.Summary.TotalSuccessfulSessionCount, p.Summary.TotalFailureSessionCount))
	}
	b.WriteString("\r\n")
	wrap(&b, "The report is attached as "+reportGzipType+".")
	return b.String()
}

// maxLine is the length RFC 5322 §2.1.1 says lines SHOULD keep within, not
// counting the CRLF.
const maxLine = 78

// wrap writes the words of text in lines of at most maxLine characters, each
// ending in CRLF; a word longer than that has a line of its own.
func wrap(b *strings.Builder, text string) {
	n := 0
	for _, w := range strings.Fields(text) {
		switch {
		case n == 0:
		case n+1+len(w) > maxLine:
			b.WriteString("\r\n")
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	b.WriteString("\r\n")
}

// foldHeader returns the header field "name: words", folded (RFC 5322
// §2.2.3) before a word that would take its line past maxLine characters. A
// word longer than that has a line of its own.
func foldHeader(name string, words []string) string {
	var b strings.Builder
	b.WriteString(name + ":")
	n := len(name) + 1
	for _, w := range words {
		if n+1+len(w) > maxLine && n > 0 {
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteString(" " + w)
		n += 1 + len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// filenameParam returns the filename parameter of a Content-Disposition,
// with its leading ";" separator omitted and a fold before it: one quoted
// value when it fits a line, else RFC 2231 §3 continuations
// (filename*0="..."; filename*1="..."), each on a line of its own within
// maxLine characters. The name is ASCII without quotes or backslashes.
func filenameParam(name string) string {
	if len(` filename=""`)+len(name) <= maxLine {
		return "\r\n" + ` filename="` + name + `"`
	}
	const chunk = maxLine - len(` filename*00="";`)
	var b strings.Builder
	for i := 0; name != ""; i++ {
		n := min(chunk, len(name))
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, "\r\n filename*%d=\"%s\"", i, name[:n])
		name = name[n:]
	}
	return b.String()
}

// writeBase64 writes data in base64, in lines of 76 characters (RFC 2045
// §6.8) ending in CRLF.
func writeBase64(w io.Writer, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		io.WriteString(w, enc[:76]+"\r\n")
		enc = enc[76:]
	}
	io.WriteString(w, enc+"\r\n")
}

// checkAddrSpec reports why s is not a plain ASCII addr-spec of RFC 5322.
func checkAddrSpec(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%q is not a plain ASCII address", s)
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return fmt.Errorf("%q is not an address", s)
	}
	return nil
}

// isDotAtom reports whether s is dot-atom-text (RFC 5322 §3.2.3).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
