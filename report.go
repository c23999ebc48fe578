package mtasts

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// reportGzipType is the media type of a gzipped report (RFC 8460 §6.4).
const reportGzipType = "application/tlsrpt+gzip"

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
	ResultType ResultType `json:"result-type"`

	// SendingMTAIP is required (RFC 8460 §4.4). For an MX refused before
	// any connection, a ReportCollector gives its own SendingIP.
	SendingMTAIP string `json:"sending-mta-ip"`

	ReceivingMXHostname string `json:"receiving-mx-hostname"`
	ReceivingMXHelo     string `json:"receiving-mx-helo,omitempty"` // optional in RFC 8460 §4.4

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
