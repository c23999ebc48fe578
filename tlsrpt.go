package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// Discovery of where to send reports: the _smtp._tls TXT record (RFC 8460 §3).
var (
	// ErrNoTLSRPTRecord means the domain publishes no TLSRPT record, or more
	// than one (RFC 8460 §3: then it "does not implement TLSRPT"). Send it no
	// reports.
	ErrNoTLSRPTRecord = errors.New("mtasts: no TLSRPT record")

	// ErrInvalidTLSRPTRecord means the one TLSRPT record does not follow the
	// grammar of RFC 8460 §3. It counts as no record: send no reports. The
	// error says why.
	ErrInvalidTLSRPTRecord = errors.New("mtasts: invalid TLSRPT record")
)

// TLSRPTRecord is a parsed _smtp._tls TXT record (RFC 8460 §3): where a policy
// domain wants its aggregate TLS reports sent.
type TLSRPTRecord struct {
	// RUA are the URIs of every rua field, in published order and as
	// published (percent-encoding kept). RFC 8460 defines the mailto: and
	// https: schemes; a URI of another scheme is valid syntax and is kept, but
	// Mailto and HTTPS leave it out. A sender may report to any one or to
	// all of them (RFC 8460 §3).
	RUA []string

	// Extensions are the record's other fields in published order, the first
	// of a repeated name only.
	Extensions []Extension
}

// String returns the record in its TXT form: "v=TLSRPTv1; rua=" and the URIs
// separated by commas, followed by the extensions.
// ParseTLSRPTRecord(r.String()) returns an equal record.
func (r *TLSRPTRecord) String() string {
	var b strings.Builder
	b.WriteString("v=TLSRPTv1; rua=")
	b.WriteString(strings.Join(r.RUA, ","))
	for _, e := range r.Extensions {
		b.WriteString("; ")
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(e.Value)
	}
	return b.String()
}

// HTTPS returns the https: URIs of RUA, in order, as published: the
// destinations for PostReport.
func (r *TLSRPTRecord) HTTPS() []string {
	var uris []string
	for _, u := range r.RUA {
		if hasScheme(u, "https") {
			uris = append(uris, u)
		}
	}
	return uris
}

// Mailto returns the mail addresses of the mailto: URIs of RUA, in order,
// percent-decoded: the recipients of Report.Mail. A mailto: URI may name more
// than one address (RFC 6068); header fields after "?" are ignored.
func (r *TLSRPTRecord) Mailto() []string {
	var addrs []string
	for _, u := range r.RUA {
		if hasScheme(u, "mailto") {
			a, _ := mailtoAddresses(u) // checked by ParseTLSRPTRecord
			addrs = append(addrs, a...)
		}
	}
	return addrs
}

// isTLSRPTRecord reports whether txt is a TLSRPT record at all, which RFC 8460
// §3 decides by its beginning: records that do not begin with "v=TLSRPTv1;"
// are discarded before counting, so a bare "v=TLSRPTv1" beside a valid record
// leaves that record the only one. White space before the ";" is accepted
// here, as the grammar's field-delim allows it; ParseTLSRPTRecord judges the
// rest.
func isTLSRPTRecord(txt string) bool {
	const v = "v=TLSRPTv1"
	if !strings.HasPrefix(txt, v) {
		return false
	}
	rest := trimWSPLeft(txt[len(v):])
	return rest != "" && rest[0] == ';'
}

// ParseTLSRPTRecord parses the text of an _smtp._tls TXT record, its strings
// already joined, by the grammar of RFC 8460 §3:
//
//	tlsrpt-record     = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//	field-delim       = *WSP ";" *WSP
//	tlsrpt-field      = tlsrpt-rua / tlsrpt-extension
//	tlsrpt-version    = %s"v=TLSRPTv1"
//	tlsrpt-rua        = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//	tlsrpt-extension  = tlsrpt-ext-name "=" tlsrpt-ext-value
//
// Names and values are case-sensitive, and no white space is allowed around
// "=" or at the end of the record other than after a final ";". At least one
// rua field is required; several are allowed and their URIs are joined in
// order. Each URI must be an RFC 3986 URI with "," and "!" percent-encoded;
// mailto: URIs must name valid addresses and https: URIs a host. Unknown
// fields are kept as Extensions. Errors wrap ErrInvalidTLSRPTRecord.
func ParseTLSRPTRecord(txt string) (*TLSRPTRecord, error) {
	if !isTLSRPTRecord(txt) {
		return nil, tlsrptError(txt, `does not begin with "v=TLSRPTv1;"`)
	}
	rest := txt[len("v=TLSRPTv1"):]
	r := &TLSRPTRecord{}
	haveRUA := false
	for rest != "" {
		// field-delim, then a field unless the delimiter ended the record.
		rest = trimWSPLeft(rest)
		if rest == "" || rest[0] != ';' {
			return nil, tlsrptError(txt, "expected ';' between fields, with no white space at the end")
		}
		rest = trimWSPLeft(rest[1:])
		if rest == "" {
			break
		}
		name, value, ok := strings.Cut(rest, "=")
		if !ok || strings.ContainsAny(name, "; \t") {
			return nil, tlsrptError(txt, fmt.Sprintf("field %q is not name=value", fieldText(rest)))
		}
		rest = value
		if name == "rua" {
			var uris []string
			var err error
			uris, rest, err = parseRUA(rest)
			if err != nil {
				return nil, tlsrptError(txt, err.Error())
			}
			r.RUA = append(r.RUA, uris...)
			haveRUA = true
			continue
		}
		end := strings.IndexAny(rest, "; \t")
		if end < 0 {
			end = len(rest)
		}
		value, rest = rest[:end], rest[end:]
		switch {
		case !validExtName(name):
			return nil, tlsrptError(txt, fmt.Sprintf("field name %q is invalid", name))
		case !validRecordExtValue(value):
			return nil, tlsrptError(txt, fmt.Sprintf("field %q has an invalid value %q", name, value))
		}
		if !hasExtension(r.Extensions, name) {
			r.Extensions = append(r.Extensions, Extension{name, value})
		}
	}
	if !haveRUA {
		return nil, tlsrptError(txt, "no rua field")
	}
	return r, nil
}

// parseRUA parses tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri) at the start of s
// and returns the URIs and what follows them.
func parseRUA(s string) (uris []string, rest string, err error) {
	for {
		end := strings.IndexAny(s, ",; \t")
		if end < 0 {
			end = len(s)
		}
		uri := s[:end]
		if err := checkReportURI(uri); err != nil {
			return nil, "", err
		}
		uris = append(uris, uri)
		s = s[end:]
		// A comma, perhaps with white space around it, means another URI.
		after := trimWSPLeft(s)
		if after == "" || after[0] != ',' {
			return uris, s, nil
		}
		s = trimWSPLeft(after[1:])
	}
}

// checkReportURI reports why uri is not a tlsrpt-uri: an RFC 3986 URI in
// which "," and "!" are percent-encoded (RFC 8460 §3). It also checks what
// RFC 8460 needs of the two schemes it defines.
func checkReportURI(uri string) error {
	if uri == "" {
		return errors.New("empty rua URI")
	}
	colon := strings.IndexByte(uri, ':')
	if colon <= 0 || !validScheme(uri[:colon]) {
		return fmt.Errorf("rua URI %q has no scheme", uri)
	}
	for i := colon + 1; i < len(uri); i++ {
		c := uri[i]
		switch {
		case c == '%':
			if i+2 >= len(uri) || !isHex(uri[i+1]) || !isHex(uri[i+2]) {
				return fmt.Errorf("rua URI %q has a malformed percent-encoding", uri)
			}
			i += 2
		case c == '!':
			// RFC 8460 §3: "!" and "," MUST be encoded (a "," ends the URI).
			return fmt.Errorf("rua URI %q has an unencoded '!'", uri)
		case !isURIChar(c):
			return fmt.Errorf("rua URI %q has a character not allowed in a URI: %q", uri, c)
		}
	}
	u, err := url.Parse(uri)
	if err != nil {
		return fmt.Errorf("rua URI %q: %w", uri, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		if u.Host == "" || u.Opaque != "" {
			return fmt.Errorf("rua URI %q has no host", uri)
		}
	case "mailto":
		if _, err := mailtoAddresses(uri); err != nil {
			return fmt.Errorf("rua URI %q: %w", uri, err)
		}
	}
	return nil
}

// mailtoAddresses returns the addresses of a mailto: URI (RFC 6068 §2): the
// part before any "?", percent-decoded, split at commas.
func mailtoAddresses(uri string) ([]string, error) {
	to := uri[len("mailto:"):]
	to, _, _ = strings.Cut(to, "?")
	to, err := url.PathUnescape(to)
	if err != nil {
		return nil, err
	}
	if to == "" {
		return nil, errors.New("no address")
	}
	var addrs []string
	for _, s := range strings.Split(to, ",") {
		a, err := mail.ParseAddress(s)
		if err != nil || a.Name != "" || a.Address != s {
			return nil, fmt.Errorf("%q is not an address", s)
		}
		addrs = append(addrs, a.Address)
	}
	return addrs, nil
}

// hasScheme reports whether uri begins with scheme and ":", in any case
// (RFC 3986 §3.1: schemes are case-insensitive).
func hasScheme(uri, scheme string) bool {
	return len(uri) > len(scheme) && uri[len(scheme)] == ':' && strings.EqualFold(uri[:len(scheme)], scheme)
}

// validScheme reports whether s is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// isURIChar reports whether c may appear unencoded in an RFC 3986 URI after
// its scheme: unreserved, sub-delims or gen-delims. The caller handles "%"
// and the characters RFC 8460 wants encoded.
func isURIChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~"+"!$&'()*+,;="+":/?#[]@", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func trimWSPLeft(s string) string {
	for s != "" && isWSP(s[0]) {
		s = s[1:]
	}
	return s
}

// fieldText returns the field at the start of s, for error messages.
func fieldText(s string) string {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		return s[:i]
	}
	return s
}

func tlsrptError(txt, why string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidTLSRPTRecord, txt, why)
}

// LookupTLSRPT returns the TLSRPT record of a policy domain: the one TXT
// record at _smtp._tls.<domain> that begins with "v=TLSRPTv1;" (RFC 8460 §3),
// its strings joined, asked of the Resolver's name servers and following
// CNAMEs. The domain may have a trailing dot, upper case, or U-labels.
//
// Errors wrap ErrNoTLSRPTRecord (no such record, or more than one),
// ErrInvalidTLSRPTRecord (the one record is malformed), ErrDNSTemporary (ask
// again later) or ErrInvalidDomain. In every case send the domain no report
// now.
//
// Unlike Lookup, LookupTLSRPT caches nothing: reports are sent about once a
// day, and each should go where the record says at the time.
func (r *Resolver) LookupTLSRPT(ctx context.Context, domain string) (*TLSRPTRecord, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	name := "_smtp._tls." + d
	if len(name) > 253 {
		return nil, fmt.Errorf("%w %q: too long to prefix with _smtp._tls", ErrInvalidDomain, domain)
	}
	txts, _, err := r.lookupTXT(ctx, name)
	switch {
	case errors.Is(err, ErrNoRecord):
		return nil, fmt.Errorf("%w at %s", ErrNoTLSRPTRecord, name)
	case err != nil:
		return nil, err
	}
	var recs []string
	for _, t := range txts {
		if isTLSRPTRecord(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return nil, fmt.Errorf("%w at %s", ErrNoTLSRPTRecord, name)
	case 1:
		rec, err := ParseTLSRPTRecord(recs[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return rec, nil
	default:
		// RFC 8460 §3: "If the number of resulting records is not one, senders
		// MUST assume the recipient domain does not implement TLSRPT."
		return nil, fmt.Errorf("%w at %s: %d records %q", ErrNoTLSRPTRecord, name, len(recs), recs)
	}
}
