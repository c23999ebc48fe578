package mtasts

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refMatch is the slow matcher that Match is checked against, written to be
// obviously correct rather than fast: RFC 8461 §4.1 by splitting host and
// patterns into lower-case labels and comparing them one by one, a "*" as the
// first pattern label standing for any one host label. One trailing dot of the
// host is dropped first, and a host with non-ASCII characters is converted to
// A-labels; one that is not UTF-8 is not a name. Patterns that are not
// ["*."] and a host name match nothing.
func refMatch(patterns []string, host string) bool {
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			if !utf8.ValidString(host) {
				return false
			}
			a, err := toASCII(host)
			if err != nil {
				return false
			}
			host = a
			break
		}
	}
	hostLabels, ok := refLabels(host)
	if !ok {
		return false
	}
	for _, pat := range patterns {
		wild := strings.HasPrefix(pat, "*.")
		patLabels, ok := refLabels(strings.TrimPrefix(pat, "*."))
		if !ok {
			continue
		}
		if wild {
			patLabels = append([]string{"*"}, patLabels...)
		}
		if len(patLabels) != len(hostLabels) {
			continue
		}
		same := true
		for i := range patLabels {
			if patLabels[i] != hostLabels[i] && !(i == 0 && wild) {
				same = false
			}
		}
		if same {
			return true
		}
	}
	return false
}

// refLabel reports whether l is an LDH label of RFC 5321 in lower case: 1 to
// 63 letters, digits and hyphens, beginning and ending with a letter or digit.
func refLabel(l string) bool {
	if len(l) < 1 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range l {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// refLabels splits an ASCII host name of at most 253 characters into its
// labels in lower case, and reports whether every label is an LDH label.
// Non-ASCII is refused before lowering case, as strings.ToLower maps some of
// it to ASCII ("İ" to "i", the Kelvin sign to "k").
func refLabels(name string) ([]string, bool) {
	if name == "" || len(name) > 253 {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return nil, false
		}
	}
	labels := strings.Split(strings.ToLower(name), ".")
	for _, l := range labels {
		if !refLabel(l) {
			return nil, false
		}
	}
	return labels, true
}

// refValidPattern is validPattern by way of refLabels.
func refValidPattern(pat string) bool {
	_, ok := refLabels(strings.TrimPrefix(pat, "*."))
	return ok
}

func TestMatch(t *testing.T) {
	t.Parallel()
	p := &Policy{
		Mode: ModeEnforce,
		MX:   []string{"mail.example.com", "*.example.net", "xn--bcher-kva.example", "*.xn--p1ai", "MX.Upper.Example"},
	}
	for _, tc := range []struct {
		host string
		want bool
	}{
		// Exact names, in any ASCII case, with or without a trailing dot.
		{"mail.example.com", true},
		{"MAIL.EXAMPLE.COM", true},
		{"Mail.Example.Com", true},
		{"mail.example.com.", true},
		{"MAIL.example.COM.", true},
		{"mx.upper.example", true},
		{"mail.example.com..", false},
		{"mail.example.co", false},
		{"mail.example.comm", false},
		{"ail.example.com", false},
		{"xmail.example.com", false},
		{"a.mail.example.com", false},
		{"example.com", false},

		// The wildcard is one whole left-most label.
		{"mx1.example.net", true},
		{"MX1.Example.NET", true},
		{"mx1.example.net.", true},
		{"a-b.example.net", true},
		{"0.example.net", true},
		{"example.net", false},
		{".example.net", false},
		{"a.b.example.net", false},
		{"xexample.net", false},
		{"x-example.net", false},
		{"mx1.example.net.example", false},
		{"mx1.example.nett", false},
		{"*.example.net", false},
		{"-a.example.net", false},
		{"a-.example.net", false},

		// U-labels are converted to A-labels.
		{"xn--bcher-kva.example", true},
		{"XN--BCHER-KVA.EXAMPLE", true},
		{"bücher.example", true},
		{"BÜCHER.example", true},
		{"bücher.example.", true},
		{"bucher.example", false},
		{"mx.испытание.рф", false},
		{"испытание.рф", true},
		{"рф", false},
		// UTS #46 maps compatibility forms as a lookup would: the Kelvin
		// sign to "k", full-width letters to ASCII.
		{"\u212Ax.example.net", true},
		{"ｍｘ.example.net", true},

		// Malformed hosts match nothing.
		{"", false},
		{".", false},
		{"..", false},
		{"*", false},
		{"*.", false},
		{"mail..example.com", false},
		{".mail.example.com", false},
		{"mail.example.com ", false},
		{" mail.example.com", false},
		{"mail example.com", false},
		{"mail.example.com:25", false},
		{"[192.0.2.1]", false},
		{"mail_1.example.net", false},
		{"mail.example.com\x00", false},
		{"\xff.example.net", false},
		{"a\x80.example.net", false},
		{"\uFFFD.example.net", false},
		{strings.Repeat("a", 64) + ".example.net", false},
		{strings.Repeat("a.", 130) + "example.net", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			got := p.Match(tc.host)
			assert.Equal(t, tc.want, got, "Match(%q) = %v, want %v", tc.host, got, tc.want)
			ref := refMatch(p.MX, tc.host)
			assert.Equal(t, tc.want, ref, "refMatch(%q) = %v, want %v", tc.host, ref, tc.want)
		})
	}
}

func TestMatchNoPatterns(t *testing.T) {
	t.Parallel()
	var nilPolicy *Policy
	for _, p := range []*Policy{nilPolicy, {}, {Mode: ModeNone}} {
		for _, host := range []string{"mail.example.com", "", "."} {
			assert.False(t, p.Match(host), "%+v.Match(%q) = true, want false", p, host)
		}
	}
}

// TestMatchReference compares Match with refMatch over every combination of
// generated hosts and patterns, including malformed ones of both.
func TestMatchReference(t *testing.T) {
	t.Parallel()
	labels := []string{
		"a", "B", "mx", "MX", "mail", "example", "EXAMPLE", "net", "com", "0", "a-b", "xn--bcher-kva",
		"bücher", "BÜCHER", "*", "", "-a", "a-", "a_b", "xexample", "x.y", strings.Repeat("z", 63), strings.Repeat("z", 64),
	}
	// Names of up to two generated labels before a common suffix, then some
	// labels on their own. Patterns are the shorter names, so that each
	// wildcard pattern meets hosts with no label, one label and two labels
	// in the place of its "*". The second label comes from a smaller set to
	// keep the number of pairs near a hundred thousand.
	suffixes := []string{"net", "example.net", "EXAMPLE.com"}
	outer := []string{"a", "MX", "", "-a", "bücher", strings.Repeat("z", 63)}
	var short, long []string
	for _, suffix := range suffixes {
		short = append(short, suffix)
		for _, l1 := range labels {
			short = append(short, l1+"."+suffix)
			for _, l2 := range outer {
				long = append(long, l2+"."+l1+"."+suffix)
			}
		}
	}
	short = append(short, labels...)

	// Hosts and patterns include malformed names: ParsePolicy accepts no
	// invalid pattern, but a Policy built by hand may hold one, and a
	// malformed host must match nothing even then.
	var patterns, hosts []string
	for _, n := range short {
		patterns = append(patterns, n, "*."+n)
	}
	for _, n := range append(short, long...) {
		hosts = append(hosts, n, n+".", "*."+n)
	}
	hosts = append(hosts, "", ".", "..", "*", "*.", "\xff.example.net", "a\x80.net")

	// Match each host against one pattern at a time so that a disagreement
	// names the pattern; then against a policy holding every pattern, which
	// must match a host if and only if one of the patterns does.
	checked, matched := 0, 0
	wantAny := make([]bool, len(hosts))
	for _, pat := range patterns {
		p := &Policy{Mode: ModeEnforce, MX: []string{pat}}
		for i, host := range hosts {
			got, want := p.Match(host), refMatch(p.MX, host)
			checked++
			if got {
				matched++
			}
			if got != want {
				t.Errorf("Match(%q) with mx %q = %v, want %v", host, pat, got, want)
			}
			wantAny[i] = wantAny[i] || want
		}
	}
	all := &Policy{Mode: ModeEnforce, MX: patterns}
	for i, host := range hosts {
		if got := all.Match(host); got != wantAny[i] {
			t.Errorf("Match(%q) with all patterns = %v, want %v", host, got, wantAny[i])
		}
	}
	// The generated cases must exercise both outcomes.
	assert.Greater(t, matched, 1000, "matching pairs among %d", checked)
	assert.Greater(t, checked-matched, 1000, "non-matching pairs among %d", checked)

	// validPattern, which ParsePolicy applies to mx values, agrees with the
	// reference's idea of a pattern.
	for _, pat := range append(patterns, hosts...) {
		if got, want := validPattern(pat), refValidPattern(pat); got != want {
			t.Errorf("validPattern(%q) = %v, want %v", pat, got, want)
		}
	}
}

func TestNormalizeDomain(t *testing.T) {
	t.Parallel()
	// The longest domain that "_mta-sts." can prefix within 253 characters.
	longest := strings.Repeat(strings.Repeat("a", 60)+".", 3) + strings.Repeat("b", 61)
	require.Len(t, longest, maxDomainLen)

	valid := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com.", "example.com"},
		{"EXAMPLE.COM.", "example.com"},
		{"a-b.c0.example", "a-b.c0.example"},
		{"localhost", "localhost"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"BÜCHER.Example.", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"испытание.рф", "xn--80akhbyknj4f.xn--p1ai"},
		{longest, longest},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := normalizeDomain(tc.in)
			require.NoError(t, err, "normalizeDomain(%q)", tc.in)
			assert.Equal(t, tc.want, got, "normalizeDomain(%q) = %q, want %q", tc.in, got, tc.want)
		})
	}

	invalid := []string{
		"",
		".",
		"..",
		"a..b",
		".example.com",
		"example.com..",
		"[192.0.2.1]",
		"[IPv6:2001:db8::1]",
		"192.0.2.1",
		"192.0.2.1.",
		"::1",
		"2001:db8::1",
		"1.2.3",
		"example.123",
		"exa mple.com",
		" example.com",
		"example.com ",
		"example.com\n",
		"example_com",
		"-example.com",
		"example-.com",
		"*.example.com",
		"user@example.com",
		"example.com:25",
		"\xffexample.com",
		strings.Repeat("a", 64) + ".com",
		longest + "a",
		"a" + longest,
		strings.Repeat("a.", 127) + "com",
	}
	for _, in := range invalid {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			got, err := normalizeDomain(in)
			assert.ErrorIs(t, err, ErrInvalidDomain, "normalizeDomain(%q) = %q, %v, want an error wrapping ErrInvalidDomain", in, got, err)
			assert.Empty(t, got, "normalizeDomain(%q) returned a name with an error", in)
		})
	}
}

func TestNormalizeDomainNoAlloc(t *testing.T) {
	// Not parallel: AllocsPerRun counts the allocations of the whole program.
	for _, d := range []string{"example.com", "mail.example.co.uk", "xn--bcher-kva.example"} {
		var got string
		var err error
		allocs := testing.AllocsPerRun(100, func() { got, err = normalizeDomain(d) })
		require.NoError(t, err, "normalizeDomain(%q)", d)
		assert.Equal(t, d, got, "normalizeDomain(%q) = %q, want it unchanged", d, got)
		assert.Zero(t, allocs, "normalizeDomain(%q) allocates %v times, want 0", d, allocs)
	}
}

func TestMatchNoAlloc(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net"}}
	for _, host := range []string{"mx1.example.net", "MAIL.example.com.", "mx1.example.org"} {
		allocs := testing.AllocsPerRun(100, func() { p.Match(host) })
		assert.Zero(t, allocs, "Match(%q) allocates %v times, want 0", host, allocs)
	}
}
