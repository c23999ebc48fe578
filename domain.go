package mtasts

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxDomainLen keeps "_mta-sts." + domain within the 253 characters of a DNS name.
const maxDomainLen = 253 - len("_mta-sts.")

// normalizeDomain returns the policy domain for a recipient domain: lower case,
// A-labels, no trailing dot (RFC 8461 §3.4). It refuses empty and malformed
// names and address literals with an error wrapping ErrInvalidDomain.
//
// A name that is already in that form is returned as it is, without
// allocating: this is on Lookup's hot path.
func normalizeDomain(domain string) (string, error) {
	if isNormalDomain(domain) {
		return domain, nil
	}
	d := strings.TrimSuffix(domain, ".")
	if strings.HasPrefix(d, "[") || isIPAddr(d) {
		return "", fmt.Errorf("%w %q: an address literal has no policy", ErrInvalidDomain, domain)
	}
	a, err := toASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrInvalidDomain, domain, err)
	}
	if !isNormalDomain(a) {
		return "", fmt.Errorf("%w %q: not a host name", ErrInvalidDomain, domain)
	}
	return a, nil
}

// isNormalDomain reports whether d is a valid host name in lower-case ASCII,
// not too long to prefix with "_mta-sts.", whose last label is not all digits
// (which would make it an IPv4 address, not a name). It makes one pass.
func isNormalDomain(d string) bool {
	if d == "" || len(d) > maxDomainLen {
		return false
	}
	start, digits := 0, true // of the current label
	for i := 0; i < len(d); i++ {
		switch c := charClass[d[i]]; c {
		case cLower:
			digits = false
		case cDigit:
		case cHyphen:
			if i == start {
				return false
			}
			digits = false
		case cDot:
			if !validLabelEnd(d, start, i) {
				return false
			}
			start, digits = i+1, true
		default:
			return false
		}
	}
	return validLabelEnd(d, start, len(d)) && !digits
}

func isIPAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
