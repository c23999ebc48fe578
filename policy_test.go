package mtasts

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	mx := []string{"mail.example.com", "*.example.net"}
	policy := func(m Mode) *Policy {
		return &Policy{Mode: m, MaxAge: 86400 * time.Second, MX: mx, Domain: "example.com"}
	}
	var nilPolicy *Policy

	for _, tc := range []struct {
		name    string
		p       *Policy
		host    string
		blocked bool
	}{
		{"nil policy", nilPolicy, "mx.attacker.example", false},
		{"none, listed host", policy(ModeNone), "mail.example.com", false},
		{"none, unlisted host", policy(ModeNone), "mx.attacker.example", false},
		{"none, no mx", &Policy{Mode: ModeNone}, "mx.attacker.example", false},
		{"testing, listed host", policy(ModeTesting), "mail.example.com", false},
		{"testing, unlisted host", policy(ModeTesting), "mx.attacker.example", false},
		{"testing, malformed host", policy(ModeTesting), "", false},
		{"enforce, exact host", policy(ModeEnforce), "mail.example.com", false},
		{"enforce, exact host in upper case with trailing dot", policy(ModeEnforce), "MAIL.EXAMPLE.COM.", false},
		{"enforce, wildcard host", policy(ModeEnforce), "mx1.example.net", false},
		{"enforce, unlisted host", policy(ModeEnforce), "mx.attacker.example", true},
		{"enforce, parent of wildcard", policy(ModeEnforce), "example.net", true},
		{"enforce, two labels under wildcard", policy(ModeEnforce), "a.b.example.net", true},
		{"enforce, suffix lookalike", policy(ModeEnforce), "mail.example.com.attacker.example", true},
		{"enforce, empty host", policy(ModeEnforce), "", true},
		{"enforce, address literal", policy(ModeEnforce), "[192.0.2.1]", true},
		{"enforce, no mx", &Policy{Mode: ModeEnforce}, "mail.example.com", true},
		{"unknown mode is not enforced", &Policy{Mode: "strict", MX: mx}, "mx.attacker.example", false},
		{"mode compared exactly", &Policy{Mode: "Enforce", MX: mx}, "mx.attacker.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.p.Validate(tc.host)
			if !tc.blocked {
				assert.NoError(t, err, "Validate(%q) = %v, want nil", tc.host, err)
				return
			}
			require.Error(t, err, "Validate(%q) = nil, want an error", tc.host)
			assert.ErrorIs(t, err, ErrMXNotAllowed, "Validate(%q) = %v, want an error wrapping ErrMXNotAllowed", tc.host, err)
			var mxErr *MXError
			require.True(t, errors.As(err, &mxErr), "Validate(%q) = %T, want *MXError", tc.host, err)
			assert.Equal(t, tc.host, mxErr.Host, "MXError.Host")
			assert.Equal(t, tc.p.Domain, mxErr.Domain, "MXError.Domain")
			assert.Equal(t, tc.p.MX, mxErr.Patterns, "MXError.Patterns")
			assert.Contains(t, err.Error(), ErrMXNotAllowed.Error(), "Validate(%q) error text", tc.host)
			assert.Contains(t, err.Error(), tc.host, "Validate(%q) error text", tc.host)
		})
	}
}

// TestValidateAgreesWithMatch checks that an enforced policy blocks exactly
// the hosts Match refuses, and that testing and none block none of them.
func TestValidateAgreesWithMatch(t *testing.T) {
	t.Parallel()
	hosts := []string{
		"mail.example.com", "MAIL.example.com.", "mx.example.net", "example.net", "a.b.example.net",
		"bücher.example", "xn--bcher-kva.example", "mx.attacker.example", "", ".", "*.example.net",
	}
	for _, m := range []Mode{ModeEnforce, ModeTesting, ModeNone} {
		p := &Policy{Mode: m, MX: []string{"mail.example.com", "*.example.net", "xn--bcher-kva.example"}}
		for _, host := range hosts {
			err := p.Validate(host)
			wantBlocked := m == ModeEnforce && !p.Match(host)
			assert.Equal(t, wantBlocked, err != nil, "mode %s: Validate(%q) = %v, Match = %v", m, host, err, p.Match(host))
		}
	}
}

// TestMXErrorMessage checks that the message names what an operator needs:
// the host, the policy domain when known, and the patterns.
func TestMXErrorMessage(t *testing.T) {
	t.Parallel()
	e := &MXError{Host: "mx.attacker.example", Domain: "fabrikam.example", Patterns: []string{"mail.example.com", "*.example.net"}}
	for _, want := range []string{"mx.attacker.example", "fabrikam.example", `"mail.example.com"`, `"*.example.net"`} {
		assert.Contains(t, e.Error(), want, "%#v.Error()", e)
	}
	e.Domain = ""
	assert.NotContains(t, e.Error(), "fabrikam.example", "%#v.Error()", e)
	assert.True(t, errors.Is(e, ErrMXNotAllowed), "errors.Is(%v, ErrMXNotAllowed) = false", e)
}

func TestExpires(t *testing.T) {
	t.Parallel()
	fetched := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &Policy{MaxAge: 604800 * time.Second, Fetched: fetched}
	want := fetched.Add(7 * 24 * time.Hour)
	assert.Equal(t, want, p.Expires(), "Expires() = %v, want %v", p.Expires(), want)
}
