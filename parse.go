package mtasts

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxMaxAge is the largest max_age RFC 8461 §3.2 allows: about one year.
const MaxMaxAge = 31557600 * time.Second

// Record is a parsed _mta-sts TXT record (RFC 8461 §3.1).
type Record struct {
	// ID identifies the current policy: 1 to 32 letters and digits. Ids have no
	// order; a different id means a new policy to fetch.
	ID string

	// Extensions are the record's other fields in published order, the first
	// of a repeated name only. They carry no meaning for this package.
	Extensions []Extension
}

// Extension is a field of a record or policy that RFC 8461 does not define.
type Extension struct {
	Key, Value string
}

// String returns the record in its TXT form, "v=STSv1; id=...;" followed by
// the extensions. ParseRecord(r.String()) returns an equal Record.
func (r *Record) String() string {
	var b strings.Builder
	b.WriteString("v=STSv1; id=")
	b.WriteString(r.ID)
	b.WriteByte(';')
	for _, e := range r.Extensions {
		b.WriteByte(' ')
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(e.Value)
		b.WriteByte(';')
	}
	return b.String()
}

// isSTSRecord reports whether txt is an STS record at all, which RFC 8461 §3.1
// decides by its first field: records that do not begin with "v=STSv1" are
// discarded before counting. Whitespace before the ";" is accepted here, as
// the grammar allows it (erratum 6285); ParseRecord judges the rest.
func isSTSRecord(txt string) bool {
	const v = "v=STSv1"
	if !strings.HasPrefix(txt, v) {
		return false
	}
	rest := txt[len(v):]
	return rest == "" || rest[0] == ';' || isWSP(rest[0])
}

// ParseRecord parses the text of an _mta-sts TXT record, its strings already
// joined, by the grammar of RFC 8461 §3.1. Fields are separated by ";" with
// optional white space around it; the first must be "v=STSv1" and an "id" is
// required. Unknown fields are kept as Extensions. Of a repeated field only the
// first counts (RFC 8461 §3.2): a later "id" or "v" is ignored, as is a later
// extension of the same name, provided it is a syntactically valid field
// (extension name "=" extension value). Errors wrap ErrInvalidRecord.
func ParseRecord(txt string) (*Record, error) {
	if !isSTSRecord(txt) {
		return nil, recordError(txt, `does not begin with "v=STSv1;"`)
	}
	rest := txt[len("v=STSv1"):]
	r := &Record{}
	var exts extensionSet
	for {
		rest = trimWSP(rest)
		if rest == "" {
			break
		}
		if rest[0] != ';' {
			return nil, recordError(txt, fmt.Sprintf("expected ';' before %q", rest))
		}
		rest = trimWSP(rest[1:])
		if rest == "" {
			break // a trailing separator is allowed
		}
		end := fieldEnd(rest)
		field := rest[:end]
		rest = rest[end:]
		eq := strings.IndexByte(field, '=')
		if eq < 0 {
			return nil, recordError(txt, fmt.Sprintf("field %q has no '='", field))
		}
		name, value := field[:eq], field[eq+1:]
		switch {
		case name == "id" && r.ID == "":
			if !validID(value) {
				return nil, recordError(txt, fmt.Sprintf("id %q is not 1 to 32 letters and digits", value))
			}
			r.ID = value
			continue
		case !validExtName(name):
			return nil, recordError(txt, fmt.Sprintf("field name %q is invalid", name))
		case !validRecordExtValue(value):
			return nil, recordError(txt, fmt.Sprintf("field %q has an invalid value %q", name, value))
		}
		// A repeated id or v, or a repeated extension: RFC 8461 §3.2 has all
		// but the first entry of a non-repeated field ignored.
		if name != "id" && name != "v" {
			exts.add(name, value)
		}
	}
	if r.ID == "" {
		return nil, recordError(txt, "no id field")
	}
	r.Extensions = exts.list
	return r, nil
}

// fieldEnd returns the length of the record field at the start of s: up to
// the next ";", space or tab, or the end.
func fieldEnd(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ';' || isWSP(c) {
			return i
		}
	}
	return len(s)
}

func recordError(txt, why string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidRecord, txt, why)
}

// validID reports whether s is 1*32(ALPHA / DIGIT).
func validID(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// validExtName reports whether s is (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."),
// the extension name of both the record and the policy grammars.
func validExtName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validRecordExtValue reports whether s is 1*(%x21-3A / %x3C / %x3E-7E).
func validRecordExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ';' || c == '=' {
			return false
		}
	}
	return true
}

// ParsePolicy parses a policy file by the grammar of RFC 8461 §3.2 (with
// erratum 6253): one "key: value" field per line, lines ending in LF or CRLF
// (the last ending optional), white space allowed after the colon and at the
// end of a line but not before the colon, keys and values case-sensitive,
// fields in any order. version, mode and max_age are required; mx is required
// at least once unless the mode is none. Unknown fields that follow the
// extension grammar are kept in Extensions. A max_age above MaxMaxAge is held
// to MaxMaxAge.
//
// Every mx line counts and must hold a valid pattern. Of the other fields only
// the first of a key counts (RFC 8461 §3.2): a later version, mode, max_age or
// extension of the same key is ignored whatever its value, as long as the line
// is a syntactically valid field (extension name ":" extension value). So a
// later "mode: none" cannot weaken an earlier "mode: enforce", and a later
// "mode: enforced" does not make the whole policy invalid.
//
// Errors wrap ErrInvalidPolicy and name the line and the reason.
func ParsePolicy(text []byte) (*Policy, error) {
	if len(text) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInvalidPolicy)
	}
	s := string(text) // one copy, which the policy's strings share
	p := &Policy{}
	var (
		haveVersion, haveMode, haveAge bool
		mx                             mxChecker
		exts                           extensionSet
	)
	for n := 1; s != ""; n++ {
		line := s
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			line, s = s[:i], s[i+1:]
			if i > 0 && line[i-1] == '\r' {
				line = line[:i-1]
			}
		} else {
			s = ""
		}
		if strings.HasPrefix(line, "mx:") { // most lines of a large policy
			value := trimWSP(line[len("mx:"):])
			if !mx.valid(value) {
				return nil, policyError(n, line, `mx is not a host name or "*." and a domain, in A-labels`)
			}
			if p.MX == nil {
				// Room for this line and every one after it: one allocation.
				p.MX = make([]string, 0, 1+strings.Count(s, "\n"))
			}
			p.MX = append(p.MX, value)
			continue
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			return nil, policyError(n, line, "not a \"key: value\" field")
		}
		key, value := line[:colon], trimWSP(line[colon+1:])
		switch {
		case key == "version" && !haveVersion:
			if value != "STSv1" {
				return nil, policyError(n, line, `version is not "STSv1"`)
			}
			haveVersion = true
		case key == "mode" && !haveMode:
			m := Mode(value)
			if m != ModeEnforce && m != ModeTesting && m != ModeNone {
				return nil, policyError(n, line, "mode is not enforce, testing or none")
			}
			p.Mode, haveMode = m, true
		case key == "max_age" && !haveAge:
			age, ok := parseMaxAge(value)
			if !ok {
				return nil, policyError(n, line, "max_age is not 1 to 10 digits")
			}
			p.MaxAge, haveAge = age, true
		default:
			// An extension, or a repeated version, mode or max_age, which
			// RFC 8461 §3.2 has ignored: either must be a syntactically
			// valid field, and so follow the extension grammar.
			if !validExtName(key) {
				return nil, policyError(n, line, "invalid key")
			}
			if !validPolicyExtValue(value) {
				return nil, policyError(n, line, "invalid value")
			}
			if !isPolicyField(key) {
				exts.add(key, value)
			}
		}
	}
	switch {
	case !haveVersion:
		return nil, fmt.Errorf("%w: no version field", ErrInvalidPolicy)
	case !haveMode:
		return nil, fmt.Errorf("%w: no mode field", ErrInvalidPolicy)
	case !haveAge:
		return nil, fmt.Errorf("%w: no max_age field", ErrInvalidPolicy)
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, fmt.Errorf("%w: no mx field in mode %s", ErrInvalidPolicy, p.Mode)
	}
	if cap(p.MX)-len(p.MX) > 8 {
		// Many other lines followed the first mx; keep no more room than
		// a handful of them would have taken.
		p.MX = slices.Clone(p.MX)
	}
	p.Extensions = exts.list
	return p, nil
}

func policyError(n int, line, why string) error {
	return fmt.Errorf("%w: line %d %q: %s", ErrInvalidPolicy, n, line, why)
}

// isPolicyField reports whether key names one of the fields RFC 8461 §3.2
// defines, other than mx.
func isPolicyField(key string) bool {
	return key == "version" || key == "mode" || key == "max_age"
}

func hasExtension(exts []Extension, key string) bool {
	for _, e := range exts {
		if e.Key == key {
			return true
		}
	}
	return false
}

// extensionSet collects the extensions of a record or policy in order, the
// first of each key only (RFC 8461 §3.2). It searches its list while that is
// short and keeps a set of the keys beyond, so that a file of thousands of
// distinct keys takes linear time, not quadratic.
type extensionSet struct {
	list []Extension
	keys map[string]struct{} // nil while the list is short
}

// maxExtensionSearch is the length of list up to which add searches it.
const maxExtensionSearch = 16

func (s *extensionSet) add(key, value string) {
	if s.keys != nil {
		if _, ok := s.keys[key]; ok {
			return
		}
		s.keys[key] = struct{}{}
	} else {
		for _, e := range s.list {
			if e.Key == key {
				return
			}
		}
		if len(s.list) == maxExtensionSearch {
			s.keys = make(map[string]struct{}, 2*maxExtensionSearch)
			for _, e := range s.list {
				s.keys[e.Key] = struct{}{}
			}
			s.keys[key] = struct{}{}
		}
	}
	s.list = append(s.list, Extension{key, value})
}

// parseMaxAge parses 1*10DIGIT, holding the result to MaxMaxAge.
func parseMaxAge(s string) (time.Duration, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	// Compare in seconds: ten digits of seconds overflow a Duration.
	if n > int64(MaxMaxAge/time.Second) {
		return MaxMaxAge, true
	}
	return time.Duration(n) * time.Second, true
}

// validPolicyExtValue reports whether s, with its surrounding white space
// already removed, is sts-policy-vchar [*(%x20 / sts-policy-vchar)
// sts-policy-vchar]: printable ASCII or UTF-8, inner spaces allowed.
func validPolicyExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}

// validPattern reports whether s is ["*."] Domain in the sense of RFC 5321:
// LDH labels of 1 to 63 characters that begin and end with a letter or digit,
// at most 253 characters in all, no trailing dot. Non-ASCII (U-labels) is not
// allowed: RFC 8461 §3.2 requires A-labels.
func validPattern(s string) bool {
	return validHostname(strings.TrimPrefix(s, "*."))
}

// mxChecker is validPattern for the mx patterns of one policy. Providers
// name many MX hosts in one domain (mx1.mail.example.com, mx2.mail.example.com
// and so on), so it keeps the domain of the last pattern it checked in full,
// the part after its first label: a later pattern in that same domain needs
// only its first label checked. Only the full check rejects a pattern.
type mxChecker struct {
	domain string // with its leading dot; "" at first
}

func (c *mxChecker) valid(pat string) bool {
	host := strings.TrimPrefix(pat, "*.")
	if c.domain != "" && len(host) <= 253 && strings.HasSuffix(host, c.domain) &&
		validLabel(host[:len(host)-len(c.domain)]) {
		return true
	}
	if !validHostname(host) {
		return false
	}
	if dot := strings.IndexByte(host, '.'); dot >= 0 {
		c.domain = host[dot:]
	}
	return true
}

// validLabel reports whether s is a label of a Domain of RFC 5321 in ASCII:
// 1 to 63 letters, digits and hyphens, the first and last not hyphens.
func validLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&(cAlnum|cHyphen) == 0 {
			return false
		}
	}
	return true
}

// validHostname reports whether s is a Domain of RFC 5321 in ASCII, with the
// DNS length limits.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	start := 0 // of the current label
	for i := 0; i < len(s); i++ {
		switch c := charClass[s[i]]; {
		case c&cAlnum != 0:
		case c == cHyphen:
			if i == start {
				return false
			}
		case c == cDot:
			if !validLabelEnd(s, start, i) {
				return false
			}
			start = i + 1
		default:
			return false
		}
	}
	return validLabelEnd(s, start, len(s))
}

// validLabelEnd reports whether the label s[start:end], whose characters are
// known to be LDH and not to begin with a hyphen, is not empty, not too long
// and does not end with a hyphen.
func validLabelEnd(s string, start, end int) bool {
	return end > start && end-start <= 63 && s[end-1] != '-'
}

// Character classes for the host name scanners.
const (
	cLower  = 1 << iota // a-z
	cUpper              // A-Z
	cDigit              // 0-9
	cHyphen             // -
	cDot                // .

	cAlnum = cLower | cUpper | cDigit
)

var charClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = cLower
		t[c-'a'+'A'] = cUpper
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = cDigit
	}
	t['-'], t['.'] = cHyphen, cDot
	return t
}()

func isAlnum(c byte) bool { return charClass[c]&cAlnum != 0 }

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

func trimWSP(s string) string {
	for s != "" && isWSP(s[0]) {
		s = s[1:]
	}
	for s != "" && isWSP(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
