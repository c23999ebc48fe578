package mtasts

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/mail"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"
)

// reportPostTimeout bounds PostReport when the caller gives no client.
const reportPostTimeout = time.Minute

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
