package mtasts

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 §5).
type Mode string

// The modes a policy may have.
const (
	// ModeEnforce: deliver only to MX hosts that match the policy, over
	// STARTTLS with a certificate valid for the MX host.
	ModeEnforce Mode = "enforce"
	// ModeTesting: deliver as usual, and report what would have failed (TLSRPT).
	ModeTesting Mode = "testing"
	// ModeNone: as though the domain had no policy.
	ModeNone Mode = "none"
)

// Policy is an MTA-STS policy (RFC 8461 §3.2).
//
// A Policy returned by a Resolver is shared by every caller that asks for the
// same domain; treat it as read-only.
type Policy struct {
	Mode   Mode
	MaxAge time.Duration // how long the policy may be cached, at most MaxMaxAge
	MX     []string      // patterns in published order: host names or "*." and a domain

	// Extensions are the policy's other fields, in order, the first of a
	// repeated key only.
	Extensions []Extension

	// Set by Resolver.Lookup; zero for a Policy from ParsePolicy.
	Domain  string    // the policy domain, in A-labels
	ID      string    // the id of the TXT record the policy was fetched under
	Fetched time.Time // when it was fetched
}

// String returns the policy as a policy file: version, mode, one mx line per
// pattern, max_age and the extensions, each line ending in LF. ParsePolicy of
// the result returns an equal Mode, MaxAge, MX and Extensions. Its lines are
// what RFC 8460 reports call the policy-string.
func (p *Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\nmode: ")
	b.WriteString(string(p.Mode))
	b.WriteByte('\n')
	for _, mx := range p.MX {
		b.WriteString("mx: ")
		b.WriteString(mx)
		b.WriteByte('\n')
	}
	b.WriteString("max_age: ")
	b.WriteString(strconv.FormatInt(int64(p.MaxAge/time.Second), 10))
	b.WriteByte('\n')
	for _, e := range p.Extensions {
		b.WriteString(e.Key)
		b.WriteString(": ")
		b.WriteString(e.Value)
		b.WriteByte('\n')
	}
	return b.String()
}

// Expires reports when a policy fetched by a Resolver stops applying: its
// fetch time plus max_age.
func (p *Policy) Expires() time.Time { return p.Fetched.Add(p.MaxAge) }

// Validate is the delivery gate of RFC 8461 §4.1 and §5: call it for each MX
// host before connecting. It returns nil when p is nil, when the mode is
// testing or none (testing never blocks delivery; use Match to learn what to
// report), or when mxHost matches one of the policy's patterns. Otherwise, for
// an enforced policy, it returns an error wrapping ErrMXNotAllowed: treat that
// MX as unreachable and try the next one.
//
// Validate checks the name only; the certificate of the MX must also be valid
// for mxHost (RFC 8461 §4.2).
func (p *Policy) Validate(mxHost string) error {
	if p == nil || p.Mode != ModeEnforce {
		return nil
	}
	return p.CheckMX(mxHost)
}

// CheckMX is Validate whatever the mode, for reporting: it returns an
// *MXError (wrapping ErrMXNotAllowed) when p is a testing or enforce policy
// that mxHost does not match, and nil otherwise. Under testing, deliver anyway
// and report the error (Classify gives validation-failure).
//
// A session is reported once (RFC 8460 §4.2 counts sessions), with its first
// failure in the order of validation: the MX host's name (RFC 8461 §4.1)
// before STARTTLS and its certificate (§4.2). Under testing, an MX host that
// the policy does not list and whose certificate does not verify is reported
// with this error, not the certificate's.
func (p *Policy) CheckMX(mxHost string) error {
	if p == nil || p.Mode == ModeNone || p.Match(mxHost) {
		return nil
	}
	return &MXError{Host: mxHost, Domain: p.Domain, Patterns: p.MX}
}

// MXError is the error Validate returns for an MX host that an enforced policy
// does not allow. It wraps ErrMXNotAllowed.
type MXError struct {
	Host     string   // the MX host as given to Validate
	Domain   string   // the policy domain, if known
	Patterns []string // the policy's mx patterns
}

func (e *MXError) Error() string {
	policy := "the policy"
	if e.Domain != "" {
		policy = e.Domain + "'s policy"
	}
	return fmt.Sprintf("%v: %s matches no mx pattern of %s %q", ErrMXNotAllowed, e.Host, policy, e.Patterns)
}

func (e *MXError) Unwrap() error { return ErrMXNotAllowed }
