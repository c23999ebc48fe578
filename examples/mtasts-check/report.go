package main

import "time"

// output is the whole report, as --json prints it (schema version 1).
type output struct {
	Schema  int            `json:"schema"`
	Exit    int            `json:"exit"`
	Domains []domainReport `json:"domains"`
}

// domainReport is everything found about one domain.
type domainReport struct {
	Domain   string        `json:"domain"`
	Exit     int           `json:"exit"`
	Record   *recordReport `json:"record,omitempty"`
	Fetch    *fetchReport  `json:"fetch,omitempty"`
	Policy   *policyReport `json:"policy,omitempty"`
	MX       []mxReport    `json:"mx,omitempty"`
	TLSRPT   *tlsrptReport `json:"tlsrpt,omitempty"`
	Cache    *cacheReport  `json:"cache,omitempty"`
	Findings []finding     `json:"findings"`
	Verdict  verdict       `json:"verdict"`

	HasPatterns bool `json:"-"` // MX hosts were matched against a policy
}

// recordReport is the _mta-sts TXT answer (RFC 8461 §3.1).
type recordReport struct {
	Name       string      `json:"name"`
	CNAMEChain []string    `json:"cname_chain,omitempty"`
	Records    []txtRecord `json:"records,omitempty"`
	ID         string      `json:"id,omitempty"`
	Why        string      `json:"why,omitempty"`
	Error      string      `json:"error,omitempty"`
}

type txtRecord struct {
	Text    string `json:"text"`
	STS     bool   `json:"sts"`
	Counted bool   `json:"counted"`
	Error   string `json:"error,omitempty"`
}

// fetchReport is the HTTPS GET of the policy (RFC 8461 §3.3).
type fetchReport struct {
	URL          string     `json:"url"`
	Status       int        `json:"status,omitempty"`
	MediaType    string     `json:"media_type,omitempty"`
	Size         int        `json:"size,omitempty"`
	TLSVersion   string     `json:"tls_version,omitempty"`
	Redirect     string     `json:"redirect,omitempty"`
	Certificates []certInfo `json:"certificates,omitempty"`
	Error        string     `json:"error,omitempty"`
}

type certInfo struct {
	Subject  string    `json:"subject"`
	Names    []string  `json:"names,omitempty"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
}

// policyReport is the policy file as the parser reads it (RFC 8461 §3.2).
type policyReport struct {
	Mode     string          `json:"mode,omitempty"`
	MaxAge   int64           `json:"max_age,omitempty"`
	MX       []string        `json:"mx,omitempty"`
	Text     string          `json:"text"`
	Problems []policyProblem `json:"problems,omitempty"`
}

type policyProblem struct {
	Line  int    `json:"line,omitempty"` // 0: the policy as a whole
	Error string `json:"error"`
}

type mxReport struct {
	Host       string       `json:"host"`
	Preference uint16       `json:"preference"`
	Pattern    string       `json:"pattern,omitempty"` // the first pattern that matches, "" if none does
	Probe      *probeReport `json:"probe,omitempty"`
}

// probeReport is a STARTTLS probe of one MX host (RFC 8461 §4.2).
type probeReport struct {
	Connected   bool      `json:"connected"`
	Banner      string    `json:"banner,omitempty"`
	STARTTLS    bool      `json:"starttls"`
	TLSVersion  string    `json:"tls_version,omitempty"`
	Verified    bool      `json:"verified"`
	Certificate *certInfo `json:"certificate,omitempty"`
	Error       string    `json:"error,omitempty"`
	ResultType  string    `json:"result_type,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// tlsrptReport is the _smtp._tls record (RFC 8460 §3).
type tlsrptReport struct {
	Name   string   `json:"name"`
	Record string   `json:"record,omitempty"`
	RUA    []string `json:"rua,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// cacheReport is what --cache holds for the domain before the check.
type cacheReport struct {
	Dir     string     `json:"dir"`
	ID      string     `json:"id,omitempty"`
	Mode    string     `json:"mode,omitempty"`
	Fetched *time.Time `json:"fetched,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
	Purged  bool       `json:"purged,omitempty"`
	Error   string     `json:"error,omitempty"`
}

// A finding is a problem or a remark. Severity "error" and "warning" make the
// exit status 1; "info" does not.
type finding struct {
	Code       string `json:"code"`
	Severity   string `json:"severity"`
	Message    string `json:"message"`
	ResultType string `json:"result_type,omitempty"` // what the domain's TLSRPT reports show (RFC 8460 §4.3)
	Reason     string `json:"reason,omitempty"`
}

type verdict struct {
	Action  string       `json:"action"`
	Mode    string       `json:"mode,omitempty"`
	Text    string       `json:"text"`
	Reports []reportType `json:"reports,omitempty"`
}

type reportType struct {
	ResultType string `json:"result_type"`
	Reason     string `json:"reason,omitempty"`
}
