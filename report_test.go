package mtasts_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// The RFC 8460 report format (§4.4, Figure 3), written out from the RFC
// rather than from this package's struct tags, so that a misspelled tag or a
// field of the wrong type fails the tests.

type jsonKind int

const (
	jsonString   jsonKind = iota
	jsonDateTime          // a string in RFC 3339 format (§4.4 date-time)
	jsonInteger           // a JSON number holding a non-negative integer
	jsonIP                // a string holding an IPv4 or IPv6 address (§4.4 ip-address)
	jsonObject
	jsonArray
)

type schemaField struct {
	kind     jsonKind
	required bool
	enum     []string               // allowed values of a string, if any
	fields   map[string]schemaField // of an object
	elem     *schemaField           // of an array
}

func reportSchema() schemaField {
	str := func(req bool) schemaField { return schemaField{kind: jsonString, required: req} }
	stringArray := schemaField{kind: jsonArray, elem: &schemaField{kind: jsonString}}
	count := schemaField{kind: jsonInteger, required: true}
	return schemaField{kind: jsonObject, required: true, fields: map[string]schemaField{
		"organization-name": str(true),
		"date-range": {kind: jsonObject, required: true, fields: map[string]schemaField{
			"start-datetime": {kind: jsonDateTime, required: true},
			"end-datetime":   {kind: jsonDateTime, required: true},
		}},
		"contact-info": str(true),
		"report-id":    str(true),
		"policies": {kind: jsonArray, required: true, elem: &schemaField{kind: jsonObject, fields: map[string]schemaField{
			"policy": {kind: jsonObject, required: true, fields: map[string]schemaField{
				"policy-type": {kind: jsonString, required: true, enum: []string{"tlsa", "sts", "no-policy-found"}},
				// Required, which checkSchema checks: an empty array for
				// "no-policy-found", which has no policy to describe.
				"policy-string": stringArray,
				"policy-domain": str(true),
				"mx-host":       stringArray,
			}},
			"summary": {kind: jsonObject, required: true, fields: map[string]schemaField{
				"total-successful-session-count": count,
				"total-failure-session-count":    count,
			}},
			"failure-details": {kind: jsonArray, required: true, elem: &schemaField{kind: jsonObject, fields: map[string]schemaField{
				// The result types of §4.3, as registered with IANA.
				"result-type": {kind: jsonString, required: true, enum: []string{
					"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
					"certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
					"dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
				}},
				"sending-mta-ip":        {kind: jsonIP, required: true},
				"receiving-mx-hostname": str(true),
				"receiving-mx-helo":     str(false), // "(optional)" in §4.4
				// Not marked optional in §4.4, but left out by the example
				// report of Appendix B.
				"receiving-ip":           {kind: jsonIP},
				"failed-session-count":   count,
				"additional-information": str(false), // "(optional)" in §4.4
				"failure-reason-code":    str(false), // left out by Appendix B
			}}},
		}}},
	}}
}

// checkReportSchema returns the ways the JSON document data departs from the
// RFC 8460 report format: missing required fields, unknown fields, wrong
// types.
func checkReportSchema(data []byte) []string {
	var doc any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	checkSchema(&problems, "report", doc, reportSchema())
	return problems
}

func checkSchema(problems *[]string, path string, v any, s schemaField) {
	fail := func(format string, args ...any) {
		*problems = append(*problems, path+": "+fmt.Sprintf(format, args...))
	}
	switch s.kind {
	case jsonString, jsonDateTime, jsonIP:
		str, ok := v.(string)
		if !ok {
			fail("%v is not a string", v)
			return
		}
		switch {
		case s.kind == jsonDateTime:
			if _, err := time.Parse(time.RFC3339, str); err != nil {
				fail("%q is not an RFC 3339 date-time", str)
			}
		case s.kind == jsonIP:
			if _, err := netip.ParseAddr(str); err != nil {
				fail("%q is not an IP address", str)
			}
		case s.enum != nil && !contains(s.enum, str):
			fail("%q is not one of %q", str, s.enum)
		}
	case jsonInteger:
		n, ok := v.(json.Number)
		if !ok {
			fail("%v is not a number", v)
			return
		}
		if i, err := n.Int64(); err != nil || i < 0 {
			fail("%v is not a non-negative integer", n)
		}
	case jsonArray:
		a, ok := v.([]any)
		if !ok {
			fail("%v is not an array", v)
			return
		}
		for i, e := range a {
			checkSchema(problems, fmt.Sprintf("%s[%d]", path, i), e, *s.elem)
		}
	case jsonObject:
		o, ok := v.(map[string]any)
		if !ok {
			fail("%v is not an object", v)
			return
		}
		for name, f := range s.fields {
			if _, ok := o[name]; !ok && f.required {
				fail("no %q", name)
			}
		}
		for name, e := range o {
			f, ok := s.fields[name]
			if !ok {
				fail("unknown field %q", name)
				continue
			}
			checkSchema(problems, path+"."+name, e, f)
		}
		// RFC 8460 §4.4 does not mark policy-string and mx-host optional;
		// for no-policy-found they are empty arrays.
		if pt, ok := o["policy-type"].(string); ok {
			for _, name := range []string{"policy-string", "mx-host"} {
				if _, ok := o[name]; !ok {
					fail("no %q in the %s policy", name, pt)
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// The checker itself must accept the RFC's own example and refuse reports
// that depart from the format.
func TestReportSchemaCheck(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile(filepath.Join("testdata", "tlsrpt", "rfc8460-appendix-b.json"))
	require.NoError(t, err)
	assert.Empty(t, checkReportSchema(example), "the example report of RFC 8460 Appendix B")

	tests := []struct {
		name       string
		from, to   string
		wantInText string
	}{
		{"misspelled field", `"organization-name"`, `"organisation-name"`, `unknown field "organisation-name"`},
		{"missing field", `"report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",`, ``, `no "report-id"`},
		{"count as a string", `"failed-session-count": 100`, `"failed-session-count": "100"`, "is not a number"},
		{"negative count", `"failed-session-count": 100`, `"failed-session-count": -1`, "non-negative"},
		{"fractional count", `"failed-session-count": 100`, `"failed-session-count": 1.5`, "non-negative integer"},
		{"mx-host as a string", `"mx-host": ["*.mail.company-y.example"]`, `"mx-host": "*.mail.company-y.example"`, "is not an array"},
		{"sts without mx-host", `,
      "mx-host": ["*.mail.company-y.example"]`, ``, `no "mx-host" in the sts policy`},
		{"date without zone", `"2016-04-01T00:00:00Z"`, `"2016-04-01T00:00:00"`, "RFC 3339"},
		{"unknown result type", `"certificate-expired"`, `"certificate-is-old"`, "is not one of"},
		{"unknown policy type", `"policy-type": "sts"`, `"policy-type": "mta-sts"`, "is not one of"},
		{"address not an address", `"198.51.100.62"`, `"mail.company-x.example"`, "is not an IP address"},
		{"report-id a number", `"report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be"`, `"report-id": 5065427`, "is not a string"},
		{"date-range a string", `{
    "start-datetime": "2016-04-01T00:00:00Z",
    "end-datetime": "2016-04-01T23:59:59Z"
  }`, `"2016-04-01"`, "is not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			broken := strings.Replace(string(example), tt.from, tt.to, 1)
			require.NotEqual(t, string(example), broken, "the replacement must apply")
			problems := checkReportSchema([]byte(broken))
			assert.Contains(t, strings.Join(problems, "\n"), tt.wantInText)
		})
	}
}

// A report decoded into Report and encoded again is the same document: the
// struct has every field of the format, and leaves out only what is absent.
func TestReportJSONRoundTrip(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile(filepath.Join("testdata", "tlsrpt", "rfc8460-appendix-b.json"))
	require.NoError(t, err)
	var r mtasts.Report
	require.NoError(t, json.Unmarshal(example, &r))
	assert.Equal(t, "company-y.example", r.Policies[0].Policy.Domain)
	assert.Equal(t, mtasts.ResultCertificateExpired, r.Policies[0].FailureDetails[0].ResultType)
	again, err := r.JSON()
	require.NoError(t, err)
	assert.JSONEq(t, string(example), string(again))
}

func TestReportJSONArraysAreNeverNull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    mtasts.Report
		want string
	}{
		{"no policies", mtasts.Report{}, `"policies":[]`},
		{"no failure details", mtasts.Report{Policies: []mtasts.ReportPolicyResult{{}}}, `"failure-details":[]`},
		{"empty policy string and mx-host for no-policy-found", mtasts.Report{Policies: []mtasts.ReportPolicyResult{{
			Policy: mtasts.ReportPolicy{Type: mtasts.PolicyTypeNoPolicyFound, Domain: "example.com"},
		}}}, `"policy":{"policy-type":"no-policy-found","policy-string":[],"policy-domain":"example.com","mx-host":[]}`},
		{"empty mx-host of an sts policy in mode none", mtasts.Report{Policies: []mtasts.ReportPolicyResult{{
			Policy: mtasts.ReportPolicy{Type: mtasts.PolicyTypeSTS, PolicyString: []string{"version: STSv1", "mode: none", "max_age: 86400"}, Domain: "example.com", MXHost: []string{}},
		}}}, `"mx-host":[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, data := range [][]byte{mustJSON(t, tt.r), mustJSON(t, &tt.r)} {
				assert.Contains(t, string(data), tt.want)
				assert.NotContains(t, string(data), "null")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return data
}

// sessionWorld is a fake MTA-STS world on loopback in which the failures of a day of
// deliveries to example.com really happen, so that Classify sees the errors a
// sender would.
type sessionWorld struct {
	t  *testing.T
	ts *mtaststest.Server
}

const (
	enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 604800\n"
	testingPolicy = "version: STSv1\nmode: testing\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 86400\n"
)

func newSessionWorld(t *testing.T) *sessionWorld {
	ts := mtaststest.NewServer()
	t.Cleanup(ts.Close)
	return &sessionWorld{t: t, ts: ts}
}

// lookup publishes policy for example.com under id, makes its policy host
// fail with fault, and returns what a new Resolver's Lookup returns.
func (w *sessionWorld) lookup(id, policy string, fault mtaststest.PolicyFault) (*mtasts.Policy, error) {
	w.ts.Publish("example.com", id, policy)
	w.ts.SetPolicyFault("example.com", fault)
	return w.ts.Resolver().Lookup(context.Background(), "example.com")
}

// handshake makes the TLS handshake of STARTTLS with mxHost under p, the
// fake world's HTTPS server playing the MX, as a sender would at the time at,
// and returns the certificate failure it has to report: the handshake's error
// under enforce, the TLSCheck's under testing.
func (w *sessionWorld) handshake(p *mtasts.Policy, mxHost string, at time.Time) error {
	w.t.Helper()
	cfg, check := p.TLSConfig(mxHost, &tls.Config{RootCAs: w.ts.RootCAs(), Time: func() time.Time { return at }})
	conn, err := net.DialTimeout("tcp", w.ts.HTTPSAddr(), 10*time.Second)
	require.NoError(w.t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tls.Client(conn, cfg).Handshake(); err != nil {
		return err
	}
	return check.Err()
}

// TestReportMixedDay feeds a day of deliveries to example.com to a
// ReportCollector and compares its report, field for field, with the one
// written by hand from the same deliveries in testdata/tlsrpt/mixed-day.json.
//
// The day, 2024-05-01 UTC, as the sender at 127.0.0.10 (and once ::1) saw it:
//
//	00:05  the policy fetch fails (HTTP 500) and nothing is cached: two
//	       deliveries to mx1.example.com (127.0.0.25) under no policy.
//	06:00  the enforce policy is fetched: five deliveries to mx1.example.com
//	       and one to mx2.backup.example.com succeed.
//	07:00  mx.attacker.example, an MX the policy does not list, is skipped.
//	08:00  mx2.backup.example.com (127.0.0.26, greeting "mx2.backup.example.com")
//	       twice does not offer STARTTLS; the second time its name comes from
//	       DNS as "MX2.backup.example.com.".
//	09:00  from ::1, mx1.example.com presents an expired certificate.
//	18:00  a testing policy replaces the enforce one: one delivery succeeds,
//	       one goes on despite an expired certificate (the MX address seen as
//	       ::ffff:127.0.0.25).
//
// The same day, other.example gets a delivery, and example.com gets one the
// second before the day and one the second after it: none of those is in the
// report.
func TestReportMixedDay(t *testing.T) {
	t.Parallel()
	w := newSessionWorld(t)
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	at := func(hhmm string) time.Time {
		d, err := time.ParseDuration(strings.Replace(hhmm, ":", "h", 1) + "m")
		require.NoError(t, err)
		return day.Add(d)
	}
	expired := time.Now().AddDate(2, 0, 0) // after the MX certificates' expiry

	_, fetchErr := w.lookup("20240501a", enforcePolicy, mtaststest.PolicyServerError)
	require.ErrorIs(t, fetchErr, mtasts.ErrPolicyFetch)
	enforce, err := w.lookup("20240501a", enforcePolicy, mtaststest.PolicyOK)
	require.NoError(t, err)
	require.Equal(t, mtasts.ModeEnforce, enforce.Mode)
	testingP, err := w.lookup("20240501b", testingPolicy, mtaststest.PolicyOK)
	require.NoError(t, err)
	require.Equal(t, mtasts.ModeTesting, testingP.Mode)

	notAllowed := enforce.Validate("mx.attacker.example")
	require.ErrorIs(t, notAllowed, mtasts.ErrMXNotAllowed)
	noSTARTTLS := fmt.Errorf("%w: mx2.backup.example.com answered EHLO without STARTTLS", mtasts.ErrNoSTARTTLS)
	expiredEnforce := w.handshake(enforce, "mx1.example.com", expired)
	require.Error(t, expiredEnforce, "handshake under enforce with an expired certificate")
	expiredTesting := w.handshake(testingP, "mx1.example.com", expired)
	require.Error(t, expiredTesting, "certificate check under testing with an expired certificate")
	require.NoError(t, w.handshake(enforce, "mx1.example.com", time.Now()), "handshake with a valid certificate")

	sender := netip.MustParseAddr("127.0.0.10")
	mx1, mx2 := netip.MustParseAddr("127.0.0.25"), netip.MustParseAddr("127.0.0.26")
	deliveries := []struct {
		n   int
		res mtasts.SessionResult
	}{
		{2, mtasts.SessionResult{Domain: "example.com", Err: fetchErr, MXHost: "mx1.example.com", SendingIP: sender, ReceivingIP: mx1, Time: at("00:05")}},
		{5, mtasts.SessionResult{Policy: enforce, MXHost: "mx1.example.com", SendingIP: sender, ReceivingIP: mx1, Time: at("06:00")}},
		{1, mtasts.SessionResult{Policy: enforce, MXHost: "mx2.backup.example.com", SendingIP: sender, ReceivingIP: mx2, Time: at("06:00")}},
		{1, mtasts.SessionResult{Policy: enforce, Err: notAllowed, MXHost: "mx.attacker.example", SendingIP: sender, Time: at("07:00")}},
		{1, mtasts.SessionResult{Policy: enforce, Err: noSTARTTLS, MXHost: "mx2.backup.example.com", SendingIP: sender, ReceivingIP: mx2, HELO: "mx2.backup.example.com", Time: at("08:00")}},
		{1, mtasts.SessionResult{Policy: enforce, Err: noSTARTTLS, MXHost: "MX2.backup.example.com.", SendingIP: sender, ReceivingIP: mx2, HELO: "mx2.backup.example.com", Time: at("08:30")}},
		{1, mtasts.SessionResult{Policy: enforce, Err: expiredEnforce, MXHost: "mx1.example.com", SendingIP: netip.MustParseAddr("0:0:0:0:0:0:0:1"), ReceivingIP: mx1, Time: at("09:00")}},
		{1, mtasts.SessionResult{Domain: "example.com", Policy: testingP, MXHost: "mx1.example.com", SendingIP: sender, ReceivingIP: mx1, Time: at("18:00")}},
		{1, mtasts.SessionResult{Policy: testingP, Err: expiredTesting, MXHost: "mx1.example.com", SendingIP: sender, ReceivingIP: netip.MustParseAddr("::ffff:127.0.0.25"), Time: at("19:00")}},

		// Not in the report.
		{1, mtasts.SessionResult{Domain: "other.example", MXHost: "mx.other.example", SendingIP: sender, Time: at("12:00")}},
		{1, mtasts.SessionResult{Policy: enforce, MXHost: "mx1.example.com", SendingIP: sender, Time: day.Add(-time.Second)}},
		{1, mtasts.SessionResult{Policy: enforce, Err: noSTARTTLS, MXHost: "mx1.example.com", SendingIP: sender, Time: day.Add(24 * time.Hour)}},
	}
	c := &mtasts.ReportCollector{
		OrganizationName: "Example Sender Inc.",
		ContactInfo:      "tlsrpt-admin@sender.example",
		Submitter:        "mail.sender.example",
		Now:              func() time.Time { return day.Add(24 * time.Hour) },
	}
	for _, d := range deliveries {
		for range d.n {
			require.NoError(t, c.Add(d.res))
		}
	}

	reports := c.TakeFinished()
	var got *mtasts.Report
	var others []string
	for _, r := range reports {
		if r.Policies[0].Policy.Domain == "example.com" && r.DateRange.Start.Equal(day) {
			got = r
			continue
		}
		others = append(others, r.Policies[0].Policy.Domain+" "+r.DateRange.Start.Format(time.DateOnly))
	}
	require.NotNil(t, got, "no report for example.com on %s among %d", day, len(reports))
	assert.Equal(t, []string{"example.com 2024-04-30", "other.example 2024-05-01"}, others, "the other finished reports")

	data, err := got.JSON()
	require.NoError(t, err)
	assert.Empty(t, checkReportSchema(data), "the report departs from the RFC 8460 format")

	want, err := os.ReadFile(filepath.Join("testdata", "tlsrpt", "mixed-day.json"))
	require.NoError(t, err)
	require.Empty(t, checkReportSchema(want), "the hand-written report departs from the RFC 8460 format")

	// The report id has a random part; the rest of it is compared with the
	// hand-written id below.
	var gotDoc, wantDoc map[string]any
	require.NoError(t, json.Unmarshal(data, &gotDoc))
	require.NoError(t, json.Unmarshal(want, &wantDoc))
	idPattern := regexp.MustCompile(`^[A-Z2-7]{16}@mail\.sender\.example$`)
	assert.Regexp(t, idPattern, gotDoc["report-id"])
	assert.Regexp(t, idPattern, wantDoc["report-id"])
	gotDoc["report-id"] = wantDoc["report-id"]
	assert.Equal(t, wantDoc, gotDoc, "the collector's report, and the one written by hand")

	// The day after is not over yet.
	assert.Empty(t, c.TakeFinished(), "reports taken twice, or too early")
	rest := c.TakeAll()
	require.Len(t, rest, 1)
	assert.Equal(t, day.Add(24*time.Hour), rest[0].DateRange.Start)
	assert.Equal(t, int64(1), rest[0].Policies[0].Summary.TotalFailureSessionCount)
	assert.Empty(t, c.TakeAll())
}

func TestReportCollectorAddRefusesIncompleteResults(t *testing.T) {
	t.Parallel()
	p, err := mtasts.ParsePolicy([]byte(enforcePolicy))
	require.NoError(t, err)
	fetched := *p
	fetched.Domain = "example.com"
	sender := netip.MustParseAddr("127.0.0.10")
	failure := errors.Join(mtasts.ErrNoSTARTTLS, errors.New("mx1.example.com offers no STARTTLS"))
	tests := []struct {
		name string
		res  mtasts.SessionResult
	}{
		{"no domain and no policy", mtasts.SessionResult{}},
		{"no domain and a policy without one", mtasts.SessionResult{Policy: p}},
		{"address literal", mtasts.SessionResult{Domain: "[127.0.0.1]"}},
		{"domain not that of the policy", mtasts.SessionResult{Domain: "example.net", Policy: &fetched}},
		{"failure without the sending address", mtasts.SessionResult{Domain: "example.com", Err: failure, MXHost: "mx1.example.com"}},
		{"failure without the MX host", mtasts.SessionResult{Domain: "example.com", Err: failure, SendingIP: sender}},
		{"failure with an MX host that is no name", mtasts.SessionResult{Domain: "example.com", Err: failure, MXHost: "mx..example.com", SendingIP: sender}},
		{"the sender's own cache failure", mtasts.SessionResult{Domain: "example.com", Err: fmt.Errorf("%w: writing example.com: disk full", mtasts.ErrCache), MXHost: "mx1.example.com", SendingIP: sender}},
		{"no record is no failure", mtasts.SessionResult{Domain: "example.com", Err: fmt.Errorf("%w at _mta-sts.example.com", mtasts.ErrNoRecord), MXHost: "mx1.example.com", SendingIP: sender}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCollector(nil)
			assert.ErrorIs(t, c.Add(tt.res), mtasts.ErrInvalidReport)
			assert.Empty(t, c.TakeAll(), "a refused result was counted")
		})
	}

	// The same results, completed, are counted.
	c := newCollector(nil)
	require.NoError(t, c.Add(mtasts.SessionResult{Domain: "EXAMPLE.com.", Policy: &fetched}))
	require.NoError(t, c.Add(mtasts.SessionResult{Policy: &fetched, Err: failure, MXHost: "mx1.example.com", SendingIP: sender}))
	reports := c.TakeAll()
	require.Len(t, reports, 1)
	assert.Equal(t, mtasts.ReportSummary{TotalSuccessfulSessionCount: 1, TotalFailureSessionCount: 1}, reports[0].Policies[0].Summary)
}

// newCollector returns a collector with every field a report needs, and the
// clock now (time.Now if nil).
func newCollector(now func() time.Time) *mtasts.ReportCollector {
	return &mtasts.ReportCollector{
		OrganizationName: "Example Sender Inc.",
		ContactInfo:      "tlsrpt-admin@sender.example",
		Submitter:        "mail.sender.example",
		Now:              now,
	}
}

// A collector without a field RFC 8460 requires of every report refuses to
// count anything, rather than produce reports with empty fields.
func TestReportCollectorRefusesIncompleteConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *mtasts.ReportCollector)
		want   string
	}{
		{"zero value", func(c *mtasts.ReportCollector) { *c = mtasts.ReportCollector{} }, "OrganizationName"},
		{"no organization name", func(c *mtasts.ReportCollector) { c.OrganizationName = "" }, "OrganizationName"},
		{"blank organization name", func(c *mtasts.ReportCollector) { c.OrganizationName = " \t" }, "OrganizationName"},
		{"no contact info", func(c *mtasts.ReportCollector) { c.ContactInfo = "" }, "ContactInfo"},
		{"no submitter", func(c *mtasts.ReportCollector) { c.Submitter = "" }, "Submitter"},
		{"submitter not a domain", func(c *mtasts.ReportCollector) { c.Submitter = "mail..sender.example" }, "Submitter"},
		{"submitter an address literal", func(c *mtasts.ReportCollector) { c.Submitter = "[127.0.0.1]" }, "Submitter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCollector(nil)
			tt.change(c)
			for range 2 {
				err := c.Add(mtasts.SessionResult{Domain: "example.com"})
				require.ErrorIs(t, err, mtasts.ErrCollectorConfig)
				assert.NotErrorIs(t, err, mtasts.ErrInvalidReport)
				assert.Contains(t, err.Error(), tt.want)
			}
			assert.Empty(t, c.TakeAll(), "a result was counted")

			// Completed, the collector counts.
			good := newCollector(nil)
			c.OrganizationName, c.ContactInfo, c.Submitter = good.OrganizationName, good.ContactInfo, good.Submitter
			require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com"}))
			assert.Len(t, c.TakeAll(), 1)
		})
	}
}

// The collector's Submitter is the one submitter of a report: its id, its
// file name, and the headers and Subject of its mail, whatever the From
// address. It is given in A-labels, however the collector was given it.
func TestReportSubmitterHasOneSource(t *testing.T) {
	t.Parallel()
	c := newCollector(nil)
	c.Submitter = "MAIL.Bücher.example."
	const submitter = "mail.xn--bcher-kva.example"
	require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com", Time: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}))
	reports := c.TakeAll()
	require.Len(t, reports, 1)
	r := reports[0]
	assert.Equal(t, submitter, r.Submitter)
	assert.True(t, strings.HasSuffix(r.ReportID, "@"+submitter), r.ReportID)
	assert.True(t, strings.HasPrefix(r.Filename(), submitter+"!example.com!"), r.Filename())
	assert.Empty(t, checkReportSchema(mustJSON(t, r)), "Submitter is not a field of the JSON document")

	msg, err := r.Mail("tlsrpt@reports.sender.example", []string{"tlsrpt@example.com"}, time.Time{})
	require.NoError(t, err)
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	require.NoError(t, err)
	assert.Equal(t, "tlsrpt@reports.sender.example", m.Header.Get("From"))
	assert.Equal(t, submitter, m.Header.Get("TLS-Report-Submitter"))
	assert.Contains(t, m.Header.Get("Subject"), " Submitter: "+submitter+" ")
	assert.Contains(t, m.Header.Get("Subject"), "Report-ID: <"+r.ReportID+">")
	assert.Contains(t, m.Header.Get("Message-ID"), "@"+submitter+">")
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	require.NoError(t, err)
	mr := multipart.NewReader(m.Body, params["boundary"])
	_, err = mr.NextPart()
	require.NoError(t, err)
	att, err := mr.NextPart()
	require.NoError(t, err)
	assert.Equal(t, r.Filename(), att.FileName())

	// A report decoded from JSON has no submitter until it is given one.
	var decoded mtasts.Report
	require.NoError(t, json.Unmarshal(mustJSON(t, r), &decoded))
	assert.Empty(t, decoded.Submitter)
	_, err = decoded.Mail("tlsrpt@reports.sender.example", []string{"tlsrpt@example.com"}, time.Time{})
	assert.ErrorIs(t, err, mtasts.ErrInvalidReport)
	decoded.Submitter = submitter
	_, err = decoded.Mail("tlsrpt@reports.sender.example", []string{"tlsrpt@example.com"}, time.Time{})
	assert.NoError(t, err)
}

// An MX refused before any connection has no sending address of its own: the
// collector's SendingIP is reported for it, as RFC 8460 §4.4 requires a
// sending-mta-ip in every failure detail.
func TestReportCollectorDefaultSendingIP(t *testing.T) {
	t.Parallel()
	p, err := mtasts.ParsePolicy([]byte(enforcePolicy))
	require.NoError(t, err)
	p.Domain = "example.com"
	refused := p.Validate("mx.attacker.example")
	require.ErrorIs(t, refused, mtasts.ErrMXNotAllowed)
	noSTARTTLS := fmt.Errorf("%w: no", mtasts.ErrNoSTARTTLS)
	day := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	c := &mtasts.ReportCollector{
		OrganizationName: "Example Sender Inc.",
		ContactInfo:      "tlsrpt-admin@sender.example",
		Submitter:        "mail.sender.example",
		SendingIP:        netip.MustParseAddr("127.0.0.10"),
	}
	require.NoError(t, c.Add(mtasts.SessionResult{Policy: p, Err: refused, MXHost: "mx.attacker.example", Time: day}))
	// A result's own address wins over the collector's.
	require.NoError(t, c.Add(mtasts.SessionResult{Policy: p, Err: noSTARTTLS, MXHost: "mx1.example.com", SendingIP: netip.MustParseAddr("::1"), Time: day}))
	reports := c.TakeAll()
	require.Len(t, reports, 1)
	data, err := reports[0].JSON()
	require.NoError(t, err)
	assert.Empty(t, checkReportSchema(data))
	details := reports[0].Policies[0].FailureDetails
	require.Len(t, details, 2)
	assert.Equal(t, mtasts.ResultValidationFailure, details[1].ResultType)
	assert.Equal(t, "mx.attacker.example", details[1].ReceivingMXHostname)
	assert.Equal(t, "127.0.0.10", details[1].SendingMTAIP, "the collector's address")
	assert.Empty(t, details[1].ReceivingIP)
	assert.Equal(t, mtasts.ResultSTARTTLSNotSupported, details[0].ResultType)
	assert.Equal(t, "::1", details[0].SendingMTAIP, "the result's own address")

	// Without an address of its own or the collector's, a failure is refused.
	without := &mtasts.ReportCollector{
		OrganizationName: c.OrganizationName,
		ContactInfo:      c.ContactInfo,
		Submitter:        c.Submitter,
	}
	err = without.Add(mtasts.SessionResult{Policy: p, Err: refused, MXHost: "mx.attacker.example", Time: day})
	assert.ErrorIs(t, err, mtasts.ErrInvalidReport)
	assert.Empty(t, without.TakeAll())
}

// Results added after their day's report was taken make a new report, with
// its own id, holding only them.
func TestReportCollectorLateResults(t *testing.T) {
	t.Parallel()
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	c := newCollector(func() time.Time { return day.Add(36 * time.Hour) })
	add := func(n int) {
		for range n {
			require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com", Time: day.Add(time.Hour)}))
		}
	}
	add(3)
	first := c.TakeFinished()
	add(2)
	second := c.TakeFinished()
	require.Len(t, first, 1)
	require.Len(t, second, 1)
	assert.Equal(t, int64(3), first[0].Policies[0].Summary.TotalSuccessfulSessionCount)
	assert.Equal(t, int64(2), second[0].Policies[0].Summary.TotalSuccessfulSessionCount)
	assert.Equal(t, first[0].DateRange, second[0].DateRange)
	assert.NotEqual(t, first[0].ReportID, second[0].ReportID)
	assert.Regexp(t, `^[A-Z2-7]{16}@mail\.sender\.example$`, first[0].ReportID)
	// RFC 8460 §5.1: the unique-id tells apart the files of the two reports.
	assert.NotEqual(t, first[0].Filename(), second[0].Filename())
	for _, r := range append(first, second...) {
		assert.Regexp(t, `^mail\.sender\.example!example\.com!1714521600!1714607999![A-Z2-7]{16}\.json\.gz$`, r.Filename())
	}
}

// A result without a time is counted on the day of the collector's clock.
func TestReportCollectorClock(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 1, 23, 59, 59, 0, time.FixedZone("UTC-5", -5*3600)) // 2024-05-02 04:59:59 UTC
	c := newCollector(func() time.Time { return now })
	require.NoError(t, c.Add(mtasts.SessionResult{Domain: "example.com"}))
	r := c.TakeAll()
	require.Len(t, r, 1)
	assert.Equal(t, "2024-05-02T00:00:00Z", r[0].DateRange.Start.Format(time.RFC3339))
	assert.Equal(t, "2024-05-02T23:59:59Z", r[0].DateRange.End.Format(time.RFC3339))
}

// Many goroutines add results while others take reports: every session is in
// exactly one report.
func TestReportCollectorConcurrent(t *testing.T) {
	t.Parallel()
	const (
		goroutines = 16
		perG       = 300
	)
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	domains := []string{"a.example", "b.example", "c.example"}
	c := newCollector(func() time.Time { return day.Add(72 * time.Hour) })
	fail := fmt.Errorf("%w: no", mtasts.ErrNoSTARTTLS)

	var (
		mu      sync.Mutex
		reports []*mtasts.Report
	)
	keep := func(rs []*mtasts.Report) {
		mu.Lock()
		reports = append(reports, rs...)
		mu.Unlock()
	}
	done := make(chan struct{})
	var takers sync.WaitGroup
	for i := range 2 {
		takers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if i == 0 {
					keep(c.TakeFinished())
				} else {
					keep(c.TakeAll())
				}
			}
		})
	}
	var adders sync.WaitGroup
	for g := range goroutines {
		adders.Go(func() {
			for i := range perG {
				res := mtasts.SessionResult{
					Domain:    domains[i%len(domains)],
					MXHost:    fmt.Sprintf("mx%d.example", g%4),
					SendingIP: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + g%3)}),
					Time:      day.Add(time.Duration(i%3) * 24 * time.Hour).Add(time.Duration(i) * time.Minute),
				}
				if i%5 == 0 {
					res.Err = fail
				}
				assert.NoError(t, c.Add(res))
			}
		})
	}
	adders.Wait()
	close(done)
	takers.Wait()
	keep(c.TakeAll())

	var success, failure, detailed int64
	for _, r := range reports {
		require.Len(t, r.Policies, 1)
		s := r.Policies[0].Summary
		success += s.TotalSuccessfulSessionCount
		failure += s.TotalFailureSessionCount
		for _, d := range r.Policies[0].FailureDetails {
			detailed += d.FailedSessionCount
		}
	}
	assert.Equal(t, int64(goroutines*perG*4/5), success, "successful sessions in all reports")
	assert.Equal(t, int64(goroutines*perG/5), failure, "failed sessions in all reports")
	assert.Equal(t, failure, detailed, "failed sessions in the failure details")
}

func testReport(t *testing.T) *mtasts.Report {
	t.Helper()
	p, err := mtasts.ParsePolicy([]byte(enforcePolicy))
	require.NoError(t, err)
	p.Domain = "example.com"
	c := &mtasts.ReportCollector{
		OrganizationName: "Example Sender Inc.",
		ContactInfo:      "tlsrpt-admin@sender.example",
		Submitter:        "mail.sender.example",
	}
	day := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	require.NoError(t, c.Add(mtasts.SessionResult{Policy: p, Time: day}))
	require.NoError(t, c.Add(mtasts.SessionResult{
		Policy: p, Err: fmt.Errorf("%w: no", mtasts.ErrNoSTARTTLS), MXHost: "mx1.example.com",
		SendingIP: netip.MustParseAddr("127.0.0.10"), ReceivingIP: netip.MustParseAddr("127.0.0.25"), Time: day,
	}))
	r := c.TakeAll()
	require.Len(t, r, 1)
	return r[0]
}

func TestReportGzipAndFilename(t *testing.T) {
	t.Parallel()
	r := testReport(t)
	plain, err := r.JSON()
	require.NoError(t, err)
	gz, err := r.Gzip()
	require.NoError(t, err)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	unzipped, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.Equal(t, plain, unzipped)
	// RFC 8460 §5.1: sender!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz
	id := strings.TrimSuffix(r.ReportID, "@mail.sender.example")
	assert.Regexp(t, `^[A-Z2-7]{16}$`, id)
	assert.Equal(t, "mail.sender.example!example.com!1714521600!1714607999!"+id+".json.gz", r.Filename())

	// The unique-id is the letters and digits of any report id's left side,
	// and left out when there are none.
	for reportID, want := range map[string]string{
		"5065427c-23d3-47ca-b6e0-946ea0e8c4be": "!5065427c23d347cab6e0946ea0e8c4be.json.gz",
		"20240501.a_b@c.example":               "!20240501ab.json.gz",
		"--@mail.sender.example":               "!1714607999.json.gz",
		"":                                     "!1714607999.json.gz",
		"x@y@z":                                "!xy.json.gz",
	} {
		other := *r
		other.ReportID = reportID
		assert.True(t, strings.HasSuffix(other.Filename(), want), "report id %q: %s", reportID, other.Filename())
	}
}

// reportSink serves a TLSRPT https: destination: it checks each request as
// RFC 8460 §5.3.2 wants it and keeps the reports it decodes.
type reportSink struct {
	t      *testing.T
	status int

	mu      sync.Mutex
	reports []map[string]any
}

func (s *reportSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	assert.Equal(s.t, http.MethodPost, r.Method)
	assert.Equal(s.t, "application/tlsrpt+gzip", r.Header.Get("Content-Type"))
	zr, err := gzip.NewReader(r.Body)
	if !assert.NoError(s.t, err, "gunzipping the body") {
		http.Error(w, "not gzip", http.StatusBadRequest)
		return
	}
	var doc map[string]any
	if !assert.NoError(s.t, json.NewDecoder(zr).Decode(&doc), "decoding the body") {
		http.Error(w, "not JSON", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.reports = append(s.reports, doc)
	s.mu.Unlock()
	w.WriteHeader(s.status)
}

func (s *reportSink) received() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports
}

func TestPostReport(t *testing.T) {
	t.Parallel()
	r := testReport(t)
	var want map[string]any
	require.NoError(t, json.Unmarshal(mustJSON(t, r), &want))
	tests := []struct {
		status  int
		wantErr bool
	}{
		{http.StatusOK, false},
		{http.StatusCreated, false},
		{http.StatusAccepted, false},
		{http.StatusNoContent, false},
		{http.StatusBadRequest, true},
		{http.StatusRequestEntityTooLarge, true},
		{http.StatusInternalServerError, true},
		{http.StatusServiceUnavailable, true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			ts := mtaststest.NewServer()
			defer ts.Close()
			sink := &reportSink{t: t, status: tt.status}
			ts.Handle("tlsrpt.example.net", sink)
			err := mtasts.PostReport(context.Background(), ts.Client(), "https://tlsrpt.example.net/v1/report", r)
			if tt.wantErr {
				assert.ErrorIs(t, err, mtasts.ErrReportDelivery)
				assert.Contains(t, err.Error(), fmt.Sprint(tt.status))
			} else {
				assert.NoError(t, err)
			}
			require.Len(t, sink.received(), 1)
			assert.Equal(t, want, sink.received()[0], "the report received")
		})
	}
}

func TestPostReportDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Handle("tlsrpt.example.net", http.RedirectHandler("https://moved.example.net/report", http.StatusTemporaryRedirect))
	moved := &reportSink{t: t, status: http.StatusOK}
	ts.Handle("moved.example.net", moved)
	err := mtasts.PostReport(context.Background(), ts.Client(), "https://tlsrpt.example.net/report", testReport(t))
	assert.ErrorIs(t, err, mtasts.ErrReportDelivery)
	assert.Contains(t, err.Error(), "moved.example.net")
	assert.Equal(t, 1, ts.Requests("tlsrpt.example.net"))
	assert.Zero(t, ts.Requests("moved.example.net"), "the redirect was followed")
}

func TestPostReportHonoursContext(t *testing.T) {
	t.Parallel()
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Handle("tlsrpt.example.net", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := mtasts.PostReport(ctx, ts.Client(), "https://tlsrpt.example.net/report", testReport(t))
	assert.ErrorIs(t, err, mtasts.ErrReportDelivery)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 30*time.Second, "PostReport outlived its context")
}

func TestPostReportRefusesOtherDestinations(t *testing.T) {
	t.Parallel()
	ts := mtaststest.NewServer()
	defer ts.Close()
	sink := &reportSink{t: t, status: http.StatusOK}
	ts.Handle("tlsrpt.example.net", sink)
	for _, uri := range []string{
		"http://tlsrpt.example.net/report",
		"mailto:tlsrpt@example.net",
		"https:///report",
		"https:tlsrpt.example.net",
		"tlsrpt.example.net/report",
		"",
	} {
		err := mtasts.PostReport(context.Background(), ts.Client(), uri, testReport(t))
		assert.ErrorIs(t, err, mtasts.ErrReportDelivery, "PostReport(%q)", uri)
	}
	assert.Empty(t, sink.received())
}

func TestReportMail(t *testing.T) {
	t.Parallel()
	r := testReport(t)
	date := time.Date(2024, 5, 2, 3, 4, 5, 0, time.UTC)
	msg, err := r.Mail("tlsrpt@mail.sender.example", []string{"tlsrpt@example.com", "tls+reports@example.net"}, date)
	require.NoError(t, err)

	// Every line ends in CRLF and is no longer than RFC 5322 §2.1.1 advises.
	for i, line := range strings.SplitAfter(string(msg), "\n") {
		if line == "" {
			continue
		}
		assert.True(t, strings.HasSuffix(line, "\r\n"), "line %d %q does not end in CRLF", i+1, line)
		assert.LessOrEqual(t, len(line), 78+2, "line %d %q", i+1, line)
		assert.NotContains(t, strings.TrimSuffix(line, "\r\n"), "\r", "line %d", i+1)
	}

	m, err := mail.ReadMessage(bytes.NewReader(msg))
	require.NoError(t, err)
	h := m.Header
	assert.Equal(t, "tlsrpt@mail.sender.example", h.Get("From"))
	to, err := h.AddressList("To")
	require.NoError(t, err)
	require.Len(t, to, 2)
	assert.Equal(t, "tlsrpt@example.com", to[0].Address)
	assert.Equal(t, "tls+reports@example.net", to[1].Address)
	gotDate, err := h.Date()
	require.NoError(t, err)
	assert.True(t, date.Equal(gotDate), "Date %v, want %v", gotDate, date)
	assert.Regexp(t, `^<[A-Z2-7]{16}@mail\.sender\.example>$`, h.Get("Message-ID"))
	assert.Equal(t, "1.0", h.Get("MIME-Version"))
	// RFC 8460 §5.3.1: the two headers, and the Subject of its ABNF.
	assert.Equal(t, "example.com", h.Get("TLS-Report-Domain"))
	assert.Equal(t, "mail.sender.example", h.Get("TLS-Report-Submitter"))
	assert.Equal(t, "No", h.Get("TLS-Required"))
	assert.Equal(t, "Report Domain: example.com Submitter: mail.sender.example Report-ID: <"+r.ReportID+">", h.Get("Subject"))
	assert.Regexp(t, `^Report Domain: \S+ Submitter: \S+ Report-ID: <[^@<>\s]+@[^@<>\s]+>$`, h.Get("Subject"))

	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	require.NoError(t, err)
	assert.Equal(t, "multipart/report", mt)
	assert.Equal(t, "tlsrpt", params["report-type"])
	require.NotEmpty(t, params["boundary"])

	mr := multipart.NewReader(m.Body, params["boundary"])
	text, err := mr.NextPart()
	require.NoError(t, err)
	mt, params, err = mime.ParseMediaType(text.Header.Get("Content-Type"))
	require.NoError(t, err)
	assert.Equal(t, "text/plain", mt)
	assert.Equal(t, "us-ascii", params["charset"])
	assert.Equal(t, "7bit", text.Header.Get("Content-Transfer-Encoding"))
	body, err := io.ReadAll(text)
	require.NoError(t, err)
	for _, s := range []string{"mail.sender.example", "example.com", "2024-05-01 00:00:00", "2024-05-01 23:59:59", r.ReportID, "1 successful", "1 failed"} {
		assert.Contains(t, string(body), s, "the text part")
	}
	for _, c := range body {
		assert.Less(t, c, byte(0x80), "the text part is not ASCII")
	}

	att, err := mr.NextPart()
	require.NoError(t, err)
	assert.Equal(t, "application/tlsrpt+gzip", att.Header.Get("Content-Type"))
	assert.Equal(t, "base64", att.Header.Get("Content-Transfer-Encoding"))
	disp, params, err := mime.ParseMediaType(att.Header.Get("Content-Disposition"))
	require.NoError(t, err)
	assert.Equal(t, "attachment", disp)
	assert.Equal(t, r.Filename(), params["filename"])
	assert.Regexp(t, `^mail\.sender\.example!example\.com!1714521600!1714607999![A-Z2-7]{16}\.json\.gz$`, params["filename"])
	assert.Equal(t, params["filename"], att.FileName())
	zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, att))
	require.NoError(t, err)
	data, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.JSONEq(t, string(mustJSON(t, r)), string(data), "the attached report")
	assert.Empty(t, checkReportSchema(data))

	_, err = mr.NextPart()
	assert.ErrorIs(t, err, io.EOF, "a third part")
}

func TestReportMailHeadersFold(t *testing.T) {
	t.Parallel()
	r := testReport(t)
	var to []string
	for i := range 10 {
		to = append(to, fmt.Sprintf("tlsrpt-%d@reports.example.com", i))
	}
	msg, err := r.Mail("tlsrpt@mail.sender.example", to, time.Time{})
	require.NoError(t, err)
	sc := bufio.NewScanner(bytes.NewReader(msg))
	for sc.Scan() {
		assert.LessOrEqual(t, len(sc.Text()), 78, "line %q", sc.Text())
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	require.NoError(t, err)
	got, err := m.Header.AddressList("To")
	require.NoError(t, err)
	assert.Len(t, got, 10)
	_, err = m.Header.Date()
	assert.NoError(t, err, "a zero date is now")
}

// Every line of a report message keeps within 78 characters (RFC 5322
// §2.1.1), with long and internationalized names, and the folded fields,
// split file name and wrapped text read back as they were.
func TestReportMailLineLengths(t *testing.T) {
	t.Parallel()
	submitters := []string{
		"mail.sender.example",
		"mail.bücher.example",
		"outbound-relay-07.mail-cluster.eu-west-1.sender-co.example", // 58 characters, the most that fits
	}
	domains := []string{
		"example.com",
		"bücher-und-zeitschriften.beispiel-verlag.example",
		"bücher-und-zeitschriften.österreichischer-verlag.example",
	}
	var to []string
	for i := range 4 {
		to = append(to, fmt.Sprintf("tlsrpt-reports-%d@tlsrpt-collector.reporting.example.net", i))
	}
	day := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, submitter := range submitters {
		for _, domain := range domains {
			t.Run(submitter+" "+domain, func(t *testing.T) {
				t.Parallel()
				c := newCollector(nil)
				c.Submitter = submitter
				require.NoError(t, c.Add(mtasts.SessionResult{Domain: domain, Time: day}))
				reports := c.TakeAll()
				require.Len(t, reports, 1)
				r := reports[0]
				aDomain := r.Policies[0].Policy.Domain
				msg, err := r.Mail("tlsrpt@"+r.Submitter, to, day.Add(24*time.Hour))
				require.NoError(t, err)

				lines := strings.SplitAfter(string(msg), "\n")
				require.Equal(t, "", lines[len(lines)-1], "the message ends in a line ending")
				for i, line := range lines[:len(lines)-1] {
					require.True(t, strings.HasSuffix(line, "\r\n"), "line %d %q does not end in CRLF", i+1, line)
					line = strings.TrimSuffix(line, "\r\n")
					assert.LessOrEqual(t, len(line), 78, "line %d %q", i+1, line)
					assert.NotContains(t, line, "\r", "line %d", i+1)
					for _, c := range []byte(line) {
						require.Less(t, c, byte(0x80), "line %d %q is not ASCII", i+1, line)
					}
				}

				m, err := mail.ReadMessage(bytes.NewReader(msg))
				require.NoError(t, err)
				assert.Equal(t, "Report Domain: "+aDomain+" Submitter: "+r.Submitter+" Report-ID: <"+r.ReportID+">", m.Header.Get("Subject"))
				assert.Equal(t, aDomain, m.Header.Get("TLS-Report-Domain"))
				assert.Equal(t, r.Submitter, m.Header.Get("TLS-Report-Submitter"))
				got, err := m.Header.AddressList("To")
				require.NoError(t, err)
				assert.Len(t, got, len(to))
				_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
				require.NoError(t, err)
				mr := multipart.NewReader(m.Body, params["boundary"])
				text, err := mr.NextPart()
				require.NoError(t, err)
				body, err := io.ReadAll(text)
				require.NoError(t, err)
				words := strings.Join(strings.Fields(string(body)), " ")
				assert.Contains(t, words, "from "+r.Submitter+" about")
				assert.Contains(t, words, "mail to "+aDomain+" from")
				assert.Contains(t, words, "Report-ID: <"+r.ReportID+">")
				att, err := mr.NextPart()
				require.NoError(t, err)
				assert.Equal(t, r.Filename(), att.FileName())
				assert.True(t, strings.HasPrefix(att.FileName(), r.Submitter+"!"+aDomain+"!"), att.FileName())
			})
		}
	}
}

func TestReportMailRefuses(t *testing.T) {
	t.Parallel()
	good := testReport(t)
	withID := func(id string) *mtasts.Report {
		r := *good
		r.ReportID = id
		return &r
	}
	withSubmitter := func(submitter string) *mtasts.Report {
		r := *good
		r.Submitter = submitter
		return &r
	}
	tests := []struct {
		name string
		r    *mtasts.Report
		from string
		to   []string
	}{
		{"no policies", &mtasts.Report{ReportID: "x@y.example"}, "tlsrpt@mail.sender.example", []string{"a@example.com"}},
		{"from not an address", good, "mail.sender.example", []string{"a@example.com"}},
		{"from with a name", good, "Reports <tlsrpt@mail.sender.example>", []string{"a@example.com"}},
		{"from not ASCII", good, "tlsrpt@mäil.sender.example", []string{"a@example.com"}},
		{"from an address literal", good, "tlsrpt@[127.0.0.1]", []string{"a@example.com"}},
		{"no recipients", good, "tlsrpt@mail.sender.example", nil},
		{"recipient not an address", good, "tlsrpt@mail.sender.example", []string{"a@example.com", "nobody"}},
		{"recipient with a line break", good, "tlsrpt@mail.sender.example", []string{"a@example.com\r\nBcc: b@example.com"}},
		{"no submitter", withSubmitter(""), "tlsrpt@mail.sender.example", []string{"a@example.com"}},
		{"submitter not a domain", withSubmitter("mail..sender.example"), "tlsrpt@mail.sender.example", []string{"a@example.com"}},
		{"report id with a space", withID("a b"), "tlsrpt@mail.sender.example", []string{"a@example.com"}},
		{"report id with an empty right side", withID("ab@"), "tlsrpt@mail.sender.example", []string{"a@example.com"}},
		{"report id with a bracket", withID("a>b"), "tlsrpt@mail.sender.example", []string{"a@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, err := tt.r.Mail(tt.from, tt.to, time.Time{})
			assert.ErrorIs(t, err, mtasts.ErrInvalidReport)
			assert.Nil(t, msg)
		})
	}

	// An id without "@" takes the submitter's domain.
	msg, err := withID("20240501.example.com.1").Mail("tlsrpt@mail.sender.example", []string{"a@example.com"}, time.Time{})
	require.NoError(t, err)
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(m.Header.Get("Subject"), "Report-ID: <20240501.example.com.1@mail.sender.example>"), m.Header.Get("Subject"))
}
