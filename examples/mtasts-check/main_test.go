package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// world is a loopback MTA-STS world with one domain per setup the checker
// must diagnose.
type world struct {
	ts    *mtaststest.Server
	clock *mtaststest.Clock
	cfg   config
}

func enforce(maxAge string, mx ...string) string {
	return policyText("enforce", maxAge, mx...)
}

func policyText(mode, maxAge string, mx ...string) string {
	s := "version: STSv1\nmode: " + mode + "\n"
	for _, m := range mx {
		s += "mx: " + m + "\n"
	}
	return s + "max_age: " + maxAge + "\n"
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ts := mtaststest.NewServer()
	t.Cleanup(ts.Close)
	tlsrpt := func(d string) {
		ts.SetTXT("_smtp._tls."+d, []string{"v=TLSRPTv1; rua=mailto:tlsrpt@" + d})
	}
	mx := func(d string, kind mtaststest.CertKind, hosts ...string) {
		ts.SetMX(d, hosts...)
		for _, h := range hosts {
			ts.StartMX(h, kind, mtaststest.MXSTARTTLS)
		}
	}
	const twoWeeks = "1209600"

	// A healthy domain: one record, an enforced policy naming its MX, a
	// TLSRPT record, a good certificate.
	ts.SetTXT("_mta-sts.good.example", []string{"v=STSv1; id=20260101;"}, []string{"google-site-verification=abc"})
	ts.SetPolicy("good.example", enforce(twoWeeks, "mx1.good.example", "*.backup.good.example"))
	mx("good.example", mtaststest.CertGood, "mx1.good.example", "relay.backup.good.example")
	tlsrpt("good.example")

	// The policy is not found (404).
	ts.Publish("notfound.example", "1", enforce(twoWeeks, "mx.notfound.example"))
	ts.SetPolicyFault("notfound.example", mtaststest.PolicyNotFound)
	mx("notfound.example", mtaststest.CertGood, "mx.notfound.example")
	tlsrpt("notfound.example")

	// The policy host's certificate has expired.
	ts.Publish("expired.example", "1", enforce(twoWeeks, "mx.expired.example"))
	ts.SetPolicyFault("expired.example", mtaststest.PolicyCertExpired)
	mx("expired.example", mtaststest.CertGood, "mx.expired.example")
	tlsrpt("expired.example")

	// The MX host's certificate is for another name.
	ts.Publish("badcert.example", "1", enforce(twoWeeks, "mx.badcert.example"))
	mx("badcert.example", mtaststest.CertWrongName, "mx.badcert.example")
	tlsrpt("badcert.example")

	// The MX record mismatch: the policy lists a host the MX records do not.
	ts.Publish("mismatch.example", "1", enforce(twoWeeks, "mx.mismatch.example"))
	mx("mismatch.example", mtaststest.CertGood, "mail.mismatch.example")
	tlsrpt("mismatch.example")

	// A wildcard on a public suffix.
	ts.Publish("suffix.example", "1", enforce(twoWeeks, "mx.suffix.example", "*.co.uk"))
	mx("suffix.example", mtaststest.CertGood, "mx.suffix.example")
	tlsrpt("suffix.example")

	// Testing mode without a TLSRPT record, and a short max_age.
	ts.Publish("testing.example", "1", policyText("testing", "86400", "mx.testing.example"))
	mx("testing.example", mtaststest.CertGood, "mx.testing.example")

	// Malformed policy lines.
	ts.Publish("malformed.example", "1", "version: STSv1\nmode: enforced\nmx: mx_1.malformed.example\nmax_age: 1209600\n")
	mx("malformed.example", mtaststest.CertGood, "mx.malformed.example")
	tlsrpt("malformed.example")

	// The policy host redirects, which RFC 8461 §3.3 forbids following.
	ts.Publish("redirect.example", "1", enforce(twoWeeks, "mx.redirect.example"))
	ts.SetPolicyFault("redirect.example", mtaststest.PolicyRedirect)
	mx("redirect.example", mtaststest.CertGood, "mx.redirect.example")
	tlsrpt("redirect.example")

	// The MX host does not offer STARTTLS.
	ts.Publish("nostarttls.example", "1", enforce(twoWeeks, "mx.nostarttls.example"))
	ts.SetMX("nostarttls.example", "mx.nostarttls.example")
	ts.StartMX("mx.nostarttls.example", mtaststest.CertGood, mtaststest.MXNoSTARTTLS)
	tlsrpt("nostarttls.example")

	// A malformed record, and two records: either counts as none (RFC 8461 §3.1).
	ts.SetTXT("_mta-sts.badrecord.example", []string{"v=STSv1; id=not-an-id;"})
	ts.SetPolicy("badrecord.example", enforce(twoWeeks, "mx.badrecord.example"))
	mx("badrecord.example", mtaststest.CertGood, "mx.badrecord.example")
	tlsrpt("badrecord.example")
	ts.SetTXT("_mta-sts.tworecords.example", []string{"v=STSv1; id=1;"}, []string{"v=STSv1; id=2;"})
	ts.SetPolicy("tworecords.example", enforce(twoWeeks, "mx.tworecords.example"))
	mx("tworecords.example", mtaststest.CertGood, "mx.tworecords.example")
	tlsrpt("tworecords.example")

	// Testing mode with an MX host the policy does not list, whose
	// certificate has expired: delivered, and reported once, by name.
	ts.Publish("testmismatch.example", "1", policyText("testing", twoWeeks, "mx.testmismatch.example"))
	mx("testmismatch.example", mtaststest.CertGood, "mx.testmismatch.example")
	ts.SetMX("testmismatch.example", "mx.testmismatch.example", "old.testmismatch.example")
	ts.StartMX("old.testmismatch.example", mtaststest.CertExpired, mtaststest.MXSTARTTLS)
	tlsrpt("testmismatch.example")

	// A domain that accepts no mail (RFC 7505) and one without MX records.
	ts.SetMX("nullmx.example", ".")
	ts.SetTXT("nomx.example", []string{"v=spf1 -all"})

	// No MTA-STS at all.
	mx("plain.example", mtaststest.CertGood, "mx.plain.example")

	// DNS fails for the record.
	ts.SetDNSFault("_mta-sts.servfail.example", mtaststest.DNSServFail)
	mx("servfail.example", mtaststest.CertGood, "mx.servfail.example")

	// The record is a CNAME to a provider's.
	ts.SetCNAME("_mta-sts.alias.example", "_mta-sts.provider.example")
	ts.SetTXT("_mta-sts.provider.example", []string{"v=STSv1; id=7;"})
	ts.SetPolicy("alias.example", enforce(twoWeeks, "mx.provider.example"))
	mx("alias.example", mtaststest.CertGood, "mx.provider.example")
	tlsrpt("alias.example")

	clock := mtaststest.NewClock(time.Now())
	return &world{ts: ts, clock: clock, cfg: config{
		Now:   clock.Now,
		Roots: ts.RootCAs(),
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, ts.HTTPSAddr())
		},
		DialMX: ts.DialMX,
	}}
}

// run runs the command against the world.
func (w *world) run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--nameserver", w.ts.DNSAddr(), "--timeout", "10s"}, args...)
	code = run(context.Background(), args, &out, &errOut, w.cfg)
	return out.String(), errOut.String(), code
}

var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	// Certificates are issued at the wall-clock time the test runs.
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "TIME"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( UTC| \+0000 UTC)?`), "TIME"},
	{regexp.MustCompile(`\d+ days? (left|ago)`), "N days $1"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`"days_left": -?\d+`), `"days_left": N`},
}

func normalise(s string) string {
	for _, n := range normalisers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// golden compares got with testdata/name, or writes it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	got = normalise(got)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run the tests with -update to write it")
	assert.Equal(t, string(want), got, "output differs from %s (run with -update to accept)", path)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tests := []struct {
		domain   string
		exit     int
		action   string
		findings []string // codes
		json     bool
	}{
		{"good.example", exitOK, "deliver-enforced", nil, true},
		{"alias.example", exitOK, "deliver-enforced", nil, false},
		{"notfound.example", exitProblems, "deliver-opportunistic", []string{"http-status"}, false},
		{"expired.example", exitProblems, "deliver-opportunistic", []string{"certificate-expired"}, false},
		{"badcert.example", exitProblems, "defer", []string{"mx-certificate"}, false},
		{"redirect.example", exitProblems, "deliver-opportunistic", []string{"http-redirect"}, false},
		{"nostarttls.example", exitProblems, "defer", []string{"mx-starttls"}, false},
		{"mismatch.example", exitProblems, "defer", []string{"mx-not-covered", "pattern-unused"}, true},
		{"suffix.example", exitProblems, "deliver-enforced", []string{"public-suffix-wildcard", "pattern-unused"}, false},
		{"testing.example", exitProblems, "deliver-testing", []string{"max-age-short", "testing-without-tlsrpt"}, false},
		{"malformed.example", exitProblems, "deliver-opportunistic", []string{"policy-syntax"}, false},
		{"badrecord.example", exitProblems, "deliver-opportunistic", []string{"record-syntax"}, false},
		{"tworecords.example", exitProblems, "deliver-opportunistic", []string{"multiple-records"}, false},
		{"testmismatch.example", exitProblems, "deliver-testing", []string{"mx-not-covered", "mx-certificate"}, false},
		{"plain.example", exitOK, "deliver-opportunistic", []string{"no-record"}, false},
		{"nullmx.example", exitOK, "no-mail", []string{"no-record", "null-mx"}, false},
		{"nomx.example", exitOK, "deliver-opportunistic", []string{"no-record", "no-mx"}, false},
		{"servfail.example", exitCannotCheck, "unknown", []string{"dns-failure"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			t.Parallel()
			name := strings.TrimSuffix(tt.domain, ".example")
			text, stderr, code := w.run(t, "--probe", tt.domain)
			assert.Empty(t, stderr)
			assert.Equal(t, tt.exit, code, "exit status; output:\n%s", text)
			assert.NotContains(t, text, "\x1b[", "no colour off a terminal")
			golden(t, name+".txt", text)

			js, _, code := w.run(t, "--probe", "--json", tt.domain)
			assert.Equal(t, tt.exit, code)
			var out output
			require.NoError(t, json.Unmarshal([]byte(js), &out), js)
			require.Len(t, out.Domains, 1)
			d := out.Domains[0]
			assert.Equal(t, 1, out.Schema)
			assert.Equal(t, tt.exit, out.Exit)
			assert.Equal(t, tt.action, d.Verdict.Action)
			var codes []string
			for _, f := range d.Findings {
				codes = append(codes, f.Code)
			}
			assert.ElementsMatch(t, tt.findings, codes, "findings: %+v", d.Findings)
			if tt.json {
				golden(t, name+".json", js)
			}
		})
	}
}

// TestVerdictFromLibrary checks the result types the verdict names against
// what the package's own Lookup and Classify say.
func TestVerdictFromLibrary(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, d := range []string{"notfound.example", "expired.example", "malformed.example"} {
		r := w.ts.Resolver()
		_, err := r.Lookup(context.Background(), d)
		require.Error(t, err, d)
		typ, reason := mtasts.Classify(err)

		js, _, _ := w.run(t, "--json", d)
		var out output
		require.NoError(t, json.Unmarshal([]byte(js), &out))
		assert.Contains(t, out.Domains[0].Verdict.Reports, reportType{ResultType: string(typ), Reason: reason}, d)
	}
}

func TestPolicyProblemsEveryLine(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	js, _, code := w.run(t, "--json", "malformed.example")
	assert.Equal(t, exitProblems, code)
	var out output
	require.NoError(t, json.Unmarshal([]byte(js), &out))
	p := out.Domains[0].Policy
	require.NotNil(t, p)
	require.Len(t, p.Problems, 2, "%+v", p.Problems)
	assert.Equal(t, 2, p.Problems[0].Line)
	assert.Contains(t, p.Problems[0].Error, `line 2 "mode: enforced": mode is not enforce, testing or none`)
	assert.Equal(t, 3, p.Problems[1].Line)
	assert.Contains(t, p.Problems[1].Error, `line 3 "mx: mx_1.malformed.example"`)
}

func TestSeveralDomainsHighestExit(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	_, _, code := w.run(t, "good.example", "plain.example")
	assert.Equal(t, exitOK, code)
	out, _, code := w.run(t, "good.example", "mismatch.example", "plain.example")
	assert.Equal(t, exitProblems, code)
	assert.Equal(t, 3, strings.Count("\n"+out, "\n== "), "one section each:\n%s", out)
	_, _, code = w.run(t, "good.example", "--probe", "servfail.example")
	assert.Equal(t, exitCannotCheck, code)
}

func TestUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	assert.Equal(t, exitCannotCheck, run(context.Background(), nil, &out, &errOut, config{}))
	assert.Contains(t, errOut.String(), "usage: mtasts-check")
	errOut.Reset()
	assert.Equal(t, exitCannotCheck, run(context.Background(), []string{"--purge", "a.example"}, &out, &errOut, config{}))
	assert.Contains(t, errOut.String(), "--purge needs --cache")
	errOut.Reset()
	assert.Equal(t, exitCannotCheck, run(context.Background(), []string{"--bogus"}, &out, &errOut, config{}))
	w := newWorld(t)
	_, _, code := w.run(t, "not a domain")
	assert.Equal(t, exitCannotCheck, code)
}

func TestColourOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cfg := w.cfg
	cfg.Color = true
	var out bytes.Buffer
	run(context.Background(), []string{"--nameserver", w.ts.DNSAddr(), "mismatch.example"}, &out, &bytes.Buffer{}, cfg)
	assert.Contains(t, out.String(), red)
	out.Reset()
	run(context.Background(), []string{"--nameserver", w.ts.DNSAddr(), "--no-color", "mismatch.example"}, &out, &bytes.Buffer{}, cfg)
	assert.NotContains(t, out.String(), "\x1b[")
}

func TestCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	dir := t.TempDir()

	// A sender caches good.example's policy in the directory.
	r := w.ts.Resolver()
	r.Cache, r.Now = mtasts.DirCache(dir), w.clock.Now
	p, err := r.Lookup(ctx, "good.example")
	require.NoError(t, err)
	require.NotNil(t, p)

	// The checker shows it and, as all is well, finds nothing.
	js, _, code := w.run(t, "--json", "--cache", dir, "good.example")
	assert.Equal(t, exitOK, code, js)
	var out output
	require.NoError(t, json.Unmarshal([]byte(js), &out))
	c := out.Domains[0].Cache
	require.NotNil(t, c)
	assert.Equal(t, "20260101", c.ID)
	assert.Equal(t, "enforce", c.Mode)
	assert.False(t, c.Purged)

	// The owner changes the policy but not the id.
	w.ts.SetPolicy("good.example", enforce("1209600", "mx1.good.example", "*.backup.good.example", "mx9.good.example"))
	text, _, code := w.run(t, "--cache", dir, "good.example")
	assert.Equal(t, exitProblems, code)
	assert.Contains(t, text, "id-unchanged")
	golden(t, "cache.txt", strings.ReplaceAll(text, dir, "CACHEDIR"))

	// The checker never writes the cache: a domain it checks is not added.
	_, _, _ = w.run(t, "--cache", dir, "suffix.example")
	_, err = mtasts.DirCache(dir).Get(ctx, "suffix.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)

	// --purge deletes the entry.
	js, _, _ = w.run(t, "--json", "--cache", dir, "--purge", "good.example")
	out = output{}
	require.NoError(t, json.Unmarshal([]byte(js), &out))
	assert.True(t, out.Domains[0].Cache.Purged)
	assert.Equal(t, "20260101", out.Domains[0].Cache.ID, "what was held is shown")
	_, err = mtasts.DirCache(dir).Get(ctx, "good.example")
	assert.ErrorIs(t, err, mtasts.ErrCacheMiss)
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ts.Publish("slow.example", "1", enforce("1209600", "mx.slow.example"))
	w.ts.SetPolicyFault("slow.example", mtaststest.PolicyNoResponse)
	w.ts.SetMX("slow.example", "mx.slow.example")
	var out bytes.Buffer
	args := []string{"--nameserver", w.ts.DNSAddr(), "--timeout", "1s", "--json", "slow.example"}
	code := run(context.Background(), args, &out, &bytes.Buffer{}, w.cfg)
	assert.Equal(t, exitProblems, code)
	var o output
	require.NoError(t, json.Unmarshal(out.Bytes(), &o), out.String())
	d := o.Domains[0]
	assert.NotEmpty(t, d.Fetch.Error)
	assert.Contains(t, d.Verdict.Reports, reportType{ResultType: "sts-policy-fetch-error", Reason: "timeout"})
}

func TestNameServerDown(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: every query fails at once or times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	pc.Close()
	var out bytes.Buffer
	code := run(context.Background(), []string{"--nameserver", addr, "--timeout", "1s", "--json", "example.com"}, &out, &bytes.Buffer{}, config{})
	assert.Equal(t, exitCannotCheck, code, out.String())
	var o output
	require.NoError(t, json.Unmarshal(out.Bytes(), &o))
	assert.Equal(t, "unknown", o.Domains[0].Verdict.Action)
}
