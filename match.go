package mtasts

import (
	"errors"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Match reports whether host matches one of the policy's mx patterns by the
// rules of RFC 8461 §4.1: a pattern is a host name, or "*." and a domain where
// "*" stands for exactly one whole left-most label ("*.example.com" matches
// "mail.example.com" but neither "example.com" nor "a.mail.example.com").
// Comparison ignores ASCII case and a trailing dot; a host given in U-labels
// is converted to A-labels first. A malformed host matches nothing.
//
// Match reports the fact whatever the mode; Validate decides what it means.
func (p *Policy) Match(host string) bool {
	if p == nil {
		return false
	}
	host = strings.TrimSuffix(host, ".")
	if p.matchASCII(host) {
		return true
	}
	// A host in U-labels cannot have matched: convert it and try again.
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			a, err := toASCII(host)
			return err == nil && p.matchASCII(a)
		}
	}
	return false
}

// matchASCII matches host against the patterns without converting it. The
// host is validated only once it matches, which is where it matters: a host
// equal to a pattern, or to a wildcard's suffix after one label, must still be
// a valid name (a Policy built by hand may hold invalid patterns).
func (p *Policy) matchASCII(host string) bool {
	for _, pat := range p.MX {
		if matchPattern(pat, host) {
			return validHostname(host)
		}
	}
	return false
}

// matchPattern matches host against one pattern, ignoring ASCII case.
func matchPattern(pat, host string) bool {
	if len(pat) > 2 && pat[0] == '*' && pat[1] == '.' {
		// The wildcard takes the first label, which must not be empty; the
		// rest must equal the pattern's suffix, dot included.
		dot := strings.IndexByte(host, '.')
		return dot > 0 && equalFoldASCII(host[dot:], pat[1:])
	}
	return equalFoldASCII(host, pat)
}

// equalFoldASCII is strings.EqualFold for ASCII, without its Unicode cost.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// idnaProfile converts host names for lookup: U-labels to A-labels, with the
// validity checks of IDNA2008 (UTS #46 non-transitional) applied.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.VerifyDNSLength(true),
	idna.BidiRule(),
)

// toASCII converts a host name to lower-case A-labels. It refuses invalid
// UTF-8, which the idna package would otherwise encode as U+FFFD.
func toASCII(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", errors.New("not UTF-8")
	}
	a, err := idnaProfile.ToASCII(name)
	if err != nil {
		return "", err
	}
	return strings.ToLower(a), nil
}
