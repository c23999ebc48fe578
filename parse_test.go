package mtasts

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestParseRecord(t *testing.T) {
	t.Parallel()
	id32 := strings.Repeat("Ab1", 10) + "Z9"
	name32 := "x" + strings.Repeat("a._-", 7) + "bcd"
	require.Len(t, id32, 32)
	require.Len(t, name32, 32)

	valid := []struct {
		name, txt string
		want      Record
	}{
		{"rfc8461 example", "v=STSv1; id=20160831085700Z;", Record{ID: "20160831085700Z"}},
		{"no trailing separator", "v=STSv1; id=20160831085700Z", Record{ID: "20160831085700Z"}},
		{"no white space", "v=STSv1;id=abc", Record{ID: "abc"}},
		{"white space before separator", "v=STSv1 ;id=abc", Record{ID: "abc"}},
		{"tabs and spaces around separators", "v=STSv1\t ; \tid=abc \t;\t ", Record{ID: "abc"}},
		{"one-character id", "v=STSv1; id=0", Record{ID: "0"}},
		{"32-character id", "v=STSv1; id=" + id32, Record{ID: id32}},
		{"id in mixed case kept as published", "v=STSv1; id=AbCdEf", Record{ID: "AbCdEf"}},
		{"extension before id", "v=STSv1; rua=mailto:a@example.com; id=1",
			Record{ID: "1", Extensions: []Extension{{"rua", "mailto:a@example.com"}}}},
		{"extension after id", "v=STSv1; id=1; ext=value;",
			Record{ID: "1", Extensions: []Extension{{"ext", "value"}}}},
		{"extension name with digits, dots, underscores and hyphens", "v=STSv1; id=1; 9a.b_c-d=x",
			Record{ID: "1", Extensions: []Extension{{"9a.b_c-d", "x"}}}},
		{"32-character extension name", "v=STSv1; id=1; " + name32 + "=x",
			Record{ID: "1", Extensions: []Extension{{name32, "x"}}}},
		{"extension value with every allowed punctuation", "v=STSv1; id=1; e=!\"#$%&'()*+,-./:<>?@[\\]^_`{|}~",
			Record{ID: "1", Extensions: []Extension{{"e", "!\"#$%&'()*+,-./:<>?@[\\]^_`{|}~"}}}},
		{"field names are case-sensitive", "v=STSv1; ID=upper; id=lower",
			Record{ID: "lower", Extensions: []Extension{{"ID", "upper"}}}},
		{"first id wins", "v=STSv1; id=first; id=second", Record{ID: "first"}},
		{"first extension wins, order kept", "v=STSv1; b=1; id=x; a=2; b=3",
			Record{ID: "x", Extensions: []Extension{{"b", "1"}, {"a", "2"}}}},
		// RFC 8461 §3.2: all but the first entry of a non-repeated field are
		// ignored, so a later one need only be a syntactically valid field.
		{"later id with punctuation ignored", "v=STSv1; id=first; id=2016-08-31", Record{ID: "first"}},
		{"later id of 33 characters ignored", "v=STSv1; id=first; id=" + id32 + "x", Record{ID: "first"}},
		{"later id with non-id punctuation before the first extension", "v=STSv1; id=1; id=a:b; e=x",
			Record{ID: "1", Extensions: []Extension{{"e", "x"}}}},
		{"later version ignored", "v=STSv1; id=1; v=STSv2", Record{ID: "1"}},
		{"later version STSv1 ignored", "v=STSv1; v=STSv1; id=1", Record{ID: "1"}},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRecord(tc.txt)
			require.NoError(t, err, "ParseRecord(%q)", tc.txt)
			assert.Equal(t, &tc.want, got, "ParseRecord(%q) = %+v, want %+v", tc.txt, got, tc.want)

			// String gives a record that parses to the same value.
			again, err := ParseRecord(got.String())
			require.NoError(t, err, "ParseRecord(%q) of String()", got.String())
			assert.Equal(t, got, again, "ParseRecord(%q) = %+v, want %+v", got.String(), again, got)
			assert.True(t, isSTSRecord(tc.txt), "isSTSRecord(%q) = false, want true", tc.txt)
		})
	}

	invalid := []struct {
		name, txt string
		sts       bool // whether isSTSRecord counts it as an STS record at all
	}{
		{"empty", "", false},
		{"version only", "v=STSv1", true},
		{"version and separator only", "v=STSv1;", true},
		{"version and white space only", "v=STSv1 ; ", true},
		{"lower-case version", "v=stsv1; id=1", false},
		{"upper-case field name v", "V=STSv1; id=1", false},
		{"version STSv10", "v=STSv10; id=1", false},
		{"version STSv1.0", "v=STSv1.0; id=1", false},
		{"version STSv2", "v=STSv2; id=1", false},
		{"white space before version", " v=STSv1; id=1", false},
		{"version not first", "id=1; v=STSv1", false},
		{"spf record", "v=spf1 -all", false},
		{"no separator after version", "v=STSv1 id=1", true},
		{"no separator between fields", "v=STSv1; id=1 ext=2", true},
		{"comma separator", "v=STSv1, id=1", false},
		{"empty id", "v=STSv1; id=", true},
		{"33-character id", "v=STSv1; id=" + id32 + "x", true},
		{"id with hyphen", "v=STSv1; id=2016-08-31", true},
		{"id with dot", "v=STSv1; id=1.2", true},
		{"id with underscore", "v=STSv1; id=a_b", true},
		{"id with non-ASCII", "v=STSv1; id=é1", true},
		{"id with CRLF", "v=STSv1; id=1\r\n", true},
		{"id without equals", "v=STSv1; id", true},
		{"no id, extension only", "v=STSv1; ext=1", true},
		{"upper-case ID only", "v=STSv1; ID=1", true},
		{"double separator", "v=STSv1; id=1;;", true},
		{"empty field", "v=STSv1;; id=1", true},
		{"two trailing separators with space", "v=STSv1; id=1; ;", true},
		{"field without equals", "v=STSv1; id=1; ext", true},
		{"empty extension value", "v=STSv1; id=1; ext=", true},
		{"extension value with equals", "v=STSv1; id=1; ext=a=b", true},
		{"extension value with inner space", "v=STSv1; id=1; ext=a b", true},
		{"extension value with non-ASCII", "v=STSv1; id=1; ext=é", true},
		{"extension value with DEL", "v=STSv1; id=1; ext=a\x7f", true},
		{"extension value with NUL", "v=STSv1; id=1; ext=a\x00", true},
		{"extension name starts with underscore", "v=STSv1; id=1; _ext=1", true},
		{"extension name starts with hyphen", "v=STSv1; id=1; -ext=1", true},
		{"extension name starts with dot", "v=STSv1; id=1; .ext=1", true},
		{"extension name with slash", "v=STSv1; id=1; a/b=1", true},
		{"empty extension name", "v=STSv1; id=1; =1", true},
		{"33-character extension name", "v=STSv1; id=1; " + name32 + "x=1", true},
		// The first entry of a field is the one that counts, and a later one
		// must still be a syntactically valid field.
		{"first id invalid, later one valid", "v=STSv1; id=2016-08-31; id=abc", true},
		{"later id empty", "v=STSv1; id=abc; id=", true},
		{"later id with equals", "v=STSv1; id=abc; id=a=b", true},
		{"later id with non-ASCII", "v=STSv1; id=abc; id=é", true},
		{"later version empty", "v=STSv1; id=abc; v=", true},
		{"later extension with invalid value", "v=STSv1; id=abc; e=1; e=a=b", true},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRecord(tc.txt)
			assert.ErrorIs(t, err, ErrInvalidRecord, "ParseRecord(%q) = %+v, %v, want an error wrapping ErrInvalidRecord", tc.txt, got, err)
			assert.Nil(t, got, "ParseRecord(%q) returned a record with an error", tc.txt)
			assert.Equal(t, tc.sts, isSTSRecord(tc.txt), "isSTSRecord(%q) = %v, want %v", tc.txt, !tc.sts, tc.sts)
		})
	}
}

func TestRecordString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		r    Record
		want string
	}{
		{Record{ID: "20160831085700Z"}, "v=STSv1; id=20160831085700Z;"},
		{Record{ID: "1", Extensions: []Extension{{"a", "x"}, {"b.c", "y:z"}}}, "v=STSv1; id=1; a=x; b.c=y:z;"},
	} {
		got := tc.r.String()
		assert.Equal(t, tc.want, got, "%+v.String() = %q, want %q", tc.r, got, tc.want)
		back, err := ParseRecord(got)
		require.NoError(t, err, "ParseRecord(%q)", got)
		assert.Equal(t, &tc.r, back, "ParseRecord(%q) = %+v, want %+v", got, back, tc.r)
	}
}

// policyHead is the start of a valid policy, to which cases add lines.
const policyHead = "version: STSv1\nmode: enforce\nmx: mail.example.com\n"

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("a", 63)
	// A 253-character host name: three 63-character labels and a 61-character one.
	host253 := label63 + "." + label63 + "." + label63 + "." + strings.Repeat("b", 61)
	require.Len(t, host253, 253)

	rfc := &Policy{
		Mode:   ModeEnforce,
		MaxAge: 604800 * time.Second,
		MX:     []string{"mail.example.com", "*.example.net", "backupmx.example.com"},
	}
	enforce := func(maxAge time.Duration, mx ...string) *Policy {
		return &Policy{Mode: ModeEnforce, MaxAge: maxAge, MX: mx}
	}
	day := 86400 * time.Second

	valid := []struct {
		name, text string
		want       *Policy
	}{
		{"rfc8461 example", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n", rfc},
		{"CRLF", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n", rfc},
		{"mixed LF and CRLF", "version: STSv1\r\nmode: enforce\nmx: mail.example.com\r\nmx: *.example.net\nmx: backupmx.example.com\r\nmax_age: 604800\n", rfc},
		{"no final newline", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800", rfc},
		{"no final newline after CRLF lines", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800", rfc},
		{"trailing white space", "version: STSv1 \nmode: enforce\t\nmx: mail.example.com \t \nmx: *.example.net \r\nmx: backupmx.example.com\t\r\nmax_age: 604800  ", rfc},
		{"no white space after colon", "version:STSv1\nmode:enforce\nmx:mail.example.com\nmx:*.example.net\nmx:backupmx.example.com\nmax_age:604800\n", rfc},
		{"tabs and spaces after colon", "version:\t STSv1\nmode: \tenforce\nmx:  mail.example.com\nmx:\t*.example.net\nmx: backupmx.example.com\nmax_age:   604800\n", rfc},
		{"any order", "max_age: 604800\nmx: mail.example.com\nmode: enforce\nmx: *.example.net\nversion: STSv1\nmx: backupmx.example.com\n", rfc},
		{"mode testing", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n",
			&Policy{Mode: ModeTesting, MaxAge: day, MX: []string{"mx.example.com"}}},
		{"mode none without mx", "version: STSv1\nmode: none\nmax_age: 86400\n",
			&Policy{Mode: ModeNone, MaxAge: day}},
		{"mode none with mx", "version: STSv1\nmode: none\nmx: mx.example.com\nmax_age: 86400\n",
			&Policy{Mode: ModeNone, MaxAge: day, MX: []string{"mx.example.com"}}},
		{"later mode none does not downgrade", policyHead + "max_age: 86400\nmode: none\n", enforce(day, "mail.example.com")},
		{"later mode enforce does not upgrade", "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 86400\n",
			&Policy{Mode: ModeTesting, MaxAge: day, MX: []string{"a.example"}}},
		{"first max_age wins", policyHead + "max_age: 86400\nmax_age: 0\n", enforce(day, "mail.example.com")},
		{"repeated version", "version: STSv1\n" + policyHead + "max_age: 86400\n", enforce(day, "mail.example.com")},
		{"max_age 0", policyHead + "max_age: 0\n", enforce(0, "mail.example.com")},
		{"max_age 31557600", policyHead + "max_age: 31557600\n", enforce(MaxMaxAge, "mail.example.com")},
		{"max_age 31557601 held to MaxMaxAge", policyHead + "max_age: 31557601\n", enforce(MaxMaxAge, "mail.example.com")},
		{"max_age past the range of a Duration held to MaxMaxAge", policyHead + "max_age: 9223372037\n", enforce(MaxMaxAge, "mail.example.com")},
		{"max_age of 10 nines held to MaxMaxAge", policyHead + "max_age: 9999999999\n", enforce(MaxMaxAge, "mail.example.com")},
		{"max_age with leading zeros", policyHead + "max_age: 0000086400\n", enforce(day, "mail.example.com")},
		{"many mx", "version: STSv1\nmode: enforce\nmx: a.example\nmx: b.example\nmx: c.example\nmx: d.example\nmx: e.example\nmx: *.f.example\nmax_age: 86400\n",
			enforce(day, "a.example", "b.example", "c.example", "d.example", "e.example", "*.f.example")},
		{"repeated mx kept", policyHead + "mx: mail.example.com\nmax_age: 86400\n", enforce(day, "mail.example.com", "mail.example.com")},
		{"mx case kept as published", "version: STSv1\nmode: enforce\nmx: MAIL.Example.COM\nmx: *.EXAMPLE.net\nmax_age: 86400\n",
			enforce(day, "MAIL.Example.COM", "*.EXAMPLE.net")},
		{"mx in A-labels", "version: STSv1\nmode: enforce\nmx: xn--bcher-kva.example\nmx: *.xn--p1ai\nmax_age: 86400\n",
			enforce(day, "xn--bcher-kva.example", "*.xn--p1ai")},
		{"mx single label", "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 86400\n", enforce(day, "localhost")},
		{"mx labels with digits and inner hyphens", "version: STSv1\nmode: enforce\nmx: 1-2.a--b.0\nmax_age: 86400\n", enforce(day, "1-2.a--b.0")},
		{"mx 63-character label", "version: STSv1\nmode: enforce\nmx: " + label63 + ".example\nmax_age: 86400\n", enforce(day, label63+".example")},
		{"mx 253 characters", "version: STSv1\nmode: enforce\nmx: " + host253 + "\nmax_age: 86400\n", enforce(day, host253)},
		{"extension with UTF-8 and inner spaces", policyHead + "max_age: 86400\ncomment: géré par l’équipe  mail ; a=b \n",
			&Policy{Mode: ModeEnforce, MaxAge: day, MX: []string{"mail.example.com"},
				Extensions: []Extension{{"comment", "géré par l’équipe  mail ; a=b"}}}},
		{"extension name with digits, dots, underscores and hyphens", policyHead + "max_age: 86400\n9x.y_z-1: v\n",
			&Policy{Mode: ModeEnforce, MaxAge: day, MX: []string{"mail.example.com"},
				Extensions: []Extension{{"9x.y_z-1", "v"}}}},
		{"keys are case-sensitive", policyHead + "max_age: 86400\nMode: none\nMX: evil.example\nMAX_AGE: 1\n",
			&Policy{Mode: ModeEnforce, MaxAge: day, MX: []string{"mail.example.com"},
				Extensions: []Extension{{"Mode", "none"}, {"MX", "evil.example"}, {"MAX_AGE", "1"}}}},
		{"first extension wins, order kept", policyHead + "b: 1\nmax_age: 86400\na: 2\nb: 3\n",
			&Policy{Mode: ModeEnforce, MaxAge: day, MX: []string{"mail.example.com"},
				Extensions: []Extension{{"b", "1"}, {"a", "2"}}}},
		// RFC 8461 §3.2: all but the first entry of a non-repeated field are
		// ignored, whatever their value, as long as the line is a
		// syntactically valid field (the extension grammar).
		{"later version STSv2 ignored", policyHead + "max_age: 86400\nversion: STSv2\n", enforce(day, "mail.example.com")},
		{"later version in lower case ignored", "version: STSv1\nversion: stsv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n", enforce(day, "mail.example.com")},
		{"later mode strict ignored", policyHead + "max_age: 86400\nmode: strict\n", enforce(day, "mail.example.com")},
		{"later mode enforced ignored", "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400\nmode: enforced\n",
			&Policy{Mode: ModeTesting, MaxAge: day, MX: []string{"a.example"}}},
		{"later mode with inner space and UTF-8 ignored", policyHead + "max_age: 86400\nmode: é force\r\n", enforce(day, "mail.example.com")},
		{"later max_age garbage ignored", policyHead + "max_age: 86400\nmax_age: garbage\n", enforce(day, "mail.example.com")},
		{"later max_age negative ignored", policyHead + "max_age: 86400\nmax_age: -1\n", enforce(day, "mail.example.com")},
		{"later max_age of 11 digits ignored", policyHead + "max_age: 86400\nmax_age: 31557600000\n", enforce(day, "mail.example.com")},
		{"later duplicates between mx lines", "version: STSv1\nmode: enforce\nmx: a.example\nmode: none ; really\nmx: b.example\nmax_age: 86400\nversion: 2\nmx: *.c.example\nmax_age: 1 week\n",
			enforce(day, "a.example", "b.example", "*.c.example")},
		{"later extension with different value ignored", policyHead + "max_age: 86400\nnote: a\nnote: b c\n",
			&Policy{Mode: ModeEnforce, MaxAge: day, MX: []string{"mail.example.com"},
				Extensions: []Extension{{"note", "a"}}}},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePolicy([]byte(tc.text))
			require.NoError(t, err, "ParsePolicy(%q)", tc.text)
			assert.Equal(t, tc.want, got, "ParsePolicy(%q) = %+v, want %+v", tc.text, got, tc.want)

			// String gives a policy file that parses to the same value.
			again, err := ParsePolicy([]byte(got.String()))
			require.NoError(t, err, "ParsePolicy(%q) of String()", got.String())
			assert.Equal(t, got, again, "ParsePolicy(%q) = %+v, want %+v", got.String(), again, got)
		})
	}

	// line is the 1-based line each error must name, or 0 for errors about
	// the policy as a whole (a required field missing).
	invalid := []struct {
		name, text string
		line       int
	}{
		{"empty", "", 0},
		{"only a newline", "\n", 1},
		{"only CRLF", "\r\n", 1},
		{"HTML page", "<!DOCTYPE html>\n<html><body>Not Found</body></html>\n", 1},
		{"HTML page with a colon", "<html><head><meta http-equiv=\"refresh\" content=\"0; url=https://example.com:443/\"></head></html>\n", 1},
		{"JSON", `{"version": "STSv1", "mode": "enforce"}`, 1},
		{"empty line in the middle", "version: STSv1\nmode: enforce\n\nmx: mail.example.com\nmax_age: 86400\n", 3},
		{"empty CRLF line in the middle", "version: STSv1\r\n\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n", 2},
		{"empty line at the end", policyHead + "max_age: 86400\n\n", 5},
		{"white space line at the end", policyHead + "max_age: 86400\n \t", 5},
		{"empty line at the start", "\n" + policyHead + "max_age: 86400\n", 1},
		{"CR without LF at the end", policyHead + "max_age: 86400\r", 4},
		{"CR line endings", "version: STSv1\rmode: enforce\rmx: mail.example.com\rmax_age: 86400\r", 1},
		{"byte order mark", "\ufeff" + policyHead + "max_age: 86400\n", 1},
		{"space before colon", "version: STSv1\nmode : enforce\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"tab before colon", "version: STSv1\nmode\t: enforce\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"white space before key", "version: STSv1\n mode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"no colon", policyHead + "max_age 86400\n", 4},
		{"version lower case", "version: stsv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 1},
		{"version STSv2", "version: STSv2\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 1},
		{"version STSv10", "version: STSv10\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 1},
		{"empty version", "version:\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 1},
		{"mode Enforce", "version: STSv1\nmode: Enforce\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"mode ENFORCE", "version: STSv1\nmode: ENFORCE\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"mode unknown", "version: STSv1\nmode: report\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"empty mode", "version: STSv1\nmode:\nmx: mail.example.com\nmax_age: 86400\n", 2},
		{"no version", "mode: enforce\nmx: mail.example.com\nmax_age: 86400\n", 0},
		{"no mode", "version: STSv1\nmx: mail.example.com\nmax_age: 86400\n", 0},
		{"no max_age", policyHead, 0},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 86400\n", 0},
		{"testing without mx", "version: STSv1\nmode: testing\nmax_age: 86400\n", 0},
		{"only upper-case keys", "VERSION: STSv1\nMODE: enforce\nMX: mail.example.com\nMAX_AGE: 86400\n", 0},
		{"max_age empty", policyHead + "max_age:\n", 4},
		{"max_age 11 digits", policyHead + "max_age: 31557600000\n", 4},
		{"max_age 11 digits with leading zero", policyHead + "max_age: 00000086400\n", 4},
		{"max_age negative", policyHead + "max_age: -1\n", 4},
		{"max_age plus sign", policyHead + "max_age: +86400\n", 4},
		{"max_age fraction", policyHead + "max_age: 86400.0\n", 4},
		{"max_age exponent", policyHead + "max_age: 1e5\n", 4},
		{"max_age hexadecimal", policyHead + "max_age: 0x10\n", 4},
		{"max_age with unit", policyHead + "max_age: 86400s\n", 4},
		{"max_age inner space", policyHead + "max_age: 86 400\n", 4},
		{"max_age non-ASCII digits", policyHead + "max_age: ٨٦٤٠٠\n", 4},
		{"mx empty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 86400\n", 3},
		{"mx bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 86400\n", 3},
		{"mx wildcard and dot only", "version: STSv1\nmode: enforce\nmx: *.\nmax_age: 86400\n", 3},
		{"mx wildcard without dot", "version: STSv1\nmode: enforce\nmx: *example.com\nmax_age: 86400\n", 3},
		{"mx partial-label wildcard", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 86400\n", 3},
		{"mx inner wildcard", "version: STSv1\nmode: enforce\nmx: mail.*.example.com\nmax_age: 86400\n", 3},
		{"mx two wildcards", "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 86400\n", 3},
		{"mx trailing wildcard", "version: STSv1\nmode: enforce\nmx: example.*\nmax_age: 86400\n", 3},
		{"mx U-label", "version: STSv1\nmode: enforce\nmx: bücher.example\nmax_age: 86400\n", 3},
		{"mx wildcard U-label", "version: STSv1\nmode: enforce\nmx: *.bücher.example\nmax_age: 86400\n", 3},
		{"mx trailing dot", "version: STSv1\nmode: enforce\nmx: mail.example.com.\nmax_age: 86400\n", 3},
		{"mx leading dot", "version: STSv1\nmode: enforce\nmx: .example.com\nmax_age: 86400\n", 3},
		{"mx empty label", "version: STSv1\nmode: enforce\nmx: mail..example.com\nmax_age: 86400\n", 3},
		{"mx 64-character label", "version: STSv1\nmode: enforce\nmx: " + label63 + "a.example\nmax_age: 86400\n", 3},
		{"mx 254 characters", "version: STSv1\nmode: enforce\nmx: a" + host253 + "\nmax_age: 86400\n", 3},
		{"mx label starts with hyphen", "version: STSv1\nmode: enforce\nmx: -mail.example.com\nmax_age: 86400\n", 3},
		{"mx label ends with hyphen", "version: STSv1\nmode: enforce\nmx: mail-.example.com\nmax_age: 86400\n", 3},
		{"mx last label starts with hyphen", "version: STSv1\nmode: enforce\nmx: mail.-com\nmax_age: 86400\n", 3},
		{"mx ends with hyphen", "version: STSv1\nmode: enforce\nmx: mail.com-\nmax_age: 86400\n", 3},
		{"mx wildcard then hyphen label", "version: STSv1\nmode: enforce\nmx: *.-example.com\nmax_age: 86400\n", 3},
		{"mx underscore", "version: STSv1\nmode: enforce\nmx: mail_1.example.com\nmax_age: 86400\n", 3},
		{"mx inner space", "version: STSv1\nmode: enforce\nmx: mail example.com\nmax_age: 86400\n", 3},
		{"mx two hosts on a line", "version: STSv1\nmode: enforce\nmx: a.example, b.example\nmax_age: 86400\n", 3},
		{"mx address literal", "version: STSv1\nmode: enforce\nmx: [192.0.2.1]\nmax_age: 86400\n", 3},
		{"mx IPv6 address", "version: STSv1\nmode: enforce\nmx: 2001:db8::1\nmax_age: 86400\n", 3},
		{"mx with port", "version: STSv1\nmode: enforce\nmx: mail.example.com:25\nmax_age: 86400\n", 3},
		{"invalid mx in mode none", "version: STSv1\nmode: none\nmx: *\nmax_age: 86400\n", 3},
		{"extension key starts with underscore", policyHead + "_x: 1\nmax_age: 86400\n", 4},
		{"extension key starts with hyphen", policyHead + "-x: 1\nmax_age: 86400\n", 4},
		{"extension key with space", policyHead + "a b: 1\nmax_age: 86400\n", 4},
		{"extension key of 33 characters", policyHead + strings.Repeat("k", 33) + ": 1\nmax_age: 86400\n", 4},
		{"extension key non-ASCII", policyHead + "clé: 1\nmax_age: 86400\n", 4},
		{"empty key", policyHead + ": value\nmax_age: 86400\n", 4},
		{"extension value empty", policyHead + "x:\nmax_age: 86400\n", 4},
		{"extension value white space only", policyHead + "x: \t \nmax_age: 86400\n", 4},
		{"extension value inner tab", policyHead + "x: a\tb\nmax_age: 86400\n", 4},
		{"extension value NUL", policyHead + "x: a\x00b\nmax_age: 86400\n", 4},
		{"extension value DEL", policyHead + "x: a\x7f\nmax_age: 86400\n", 4},
		{"extension value invalid UTF-8", policyHead + "x: a\xffb\nmax_age: 86400\n", 4},
		{"extension value inner CR", policyHead + "x: a\rb\nmax_age: 86400\n", 4},
		// Only the first entry of a field counts, and a later one must still
		// be a syntactically valid field; every mx is checked.
		{"first version invalid, later one valid", "version: STSv2\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\n", 1},
		{"first mode invalid, later one valid", "version: STSv1\nmode: enforced\nmode: enforce\nmx: a.example\nmax_age: 86400\n", 2},
		{"first max_age invalid, later one valid", policyHead + "max_age: garbage\nmax_age: 86400\n", 4},
		{"later mode empty", policyHead + "max_age: 86400\nmode:\n", 5},
		{"later mode white space only", policyHead + "max_age: 86400\nmode: \t\r\n", 5},
		{"later mode inner tab", policyHead + "max_age: 86400\nmode: en\tforce\n", 5},
		{"later max_age with NUL", policyHead + "max_age: 86400\nmax_age: 1\x00\n", 5},
		{"later version invalid UTF-8", policyHead + "max_age: 86400\nversion: \xff\n", 5},
		{"later version with space before the colon", policyHead + "max_age: 86400\nversion : STSv2\n", 5},
		{"later extension empty", policyHead + "max_age: 86400\nnote: a\nnote:\n", 6},
		{"invalid mx after valid ones", policyHead + "mx: b.example\nmax_age: 86400\nmx: c_d.example\n", 6},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePolicy([]byte(tc.text))
			require.Error(t, err, "ParsePolicy(%q) = %+v, want an error", tc.text, got)
			assert.Nil(t, got, "ParsePolicy(%q) returned a policy with an error", tc.text)
			assert.ErrorIs(t, err, ErrInvalidPolicy, "ParsePolicy(%q)", tc.text)
			if tc.line > 0 {
				assert.Contains(t, err.Error(), fmt.Sprintf(": line %d ", tc.line), "ParsePolicy(%q) = %v, want the error to name line %d", tc.text, err, tc.line)
			} else {
				assert.NotContains(t, err.Error(), "line", "ParsePolicy(%q) = %v, want an error about the whole policy", tc.text, err)
			}
		})
	}
}

func TestPolicyString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    Policy
		want string
	}{
		{Policy{Mode: ModeNone, MaxAge: 0}, "version: STSv1\nmode: none\nmax_age: 0\n"},
		{
			Policy{
				Mode:       ModeEnforce,
				MaxAge:     MaxMaxAge,
				MX:         []string{"mail.example.com", "*.example.net"},
				Extensions: []Extension{{"comment", "a b ü"}},
			},
			"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 31557600\ncomment: a b ü\n",
		},
	} {
		got := tc.p.String()
		assert.Equal(t, tc.want, got, "%+v.String() = %q, want %q", tc.p, got, tc.want)
		back, err := ParsePolicy([]byte(got))
		require.NoError(t, err, "ParsePolicy(%q)", got)
		assert.Equal(t, &tc.p, back, "ParsePolicy(%q) = %+v, want %+v", got, back, tc.p)
	}
}

// TestParsePolicyInputNotRetained checks that the parsed policy does not share
// memory with the input, which a caller may reuse for the next fetch.
func TestParsePolicyInputNotRetained(t *testing.T) {
	t.Parallel()
	text := []byte(policyHead + "max_age: 86400\nnote: kept\n")
	p, err := ParsePolicy(text)
	require.NoError(t, err)
	for i := range text {
		text[i] = 'x'
	}
	assert.Equal(t, []string{"mail.example.com"}, p.MX, "MX after the input was overwritten")
	assert.Equal(t, []Extension{{"note", "kept"}}, p.Extensions, "Extensions after the input was overwritten")
}

// TestPolicyFiles parses each testdata/policy/*.txt and compares the result
// with the .golden file beside it: the policy's String() form, or "error: "
// and the error. Files named valid-* must parse and invalid-* must not.
// Run with -update to rewrite the golden files.
func TestPolicyFiles(t *testing.T) {
	t.Parallel()
	testGoldenFiles(t, "policy", func(in []byte) (string, error) {
		p, err := ParsePolicy(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				return "", fmt.Errorf("error %v does not wrap ErrInvalidPolicy", err)
			}
			return "", err
		}
		return p.String(), nil
	})
}

// TestRecordFiles parses each testdata/record/*.txt, the file's final newline
// not being part of the record, as TestPolicyFiles does for policies.
func TestRecordFiles(t *testing.T) {
	t.Parallel()
	testGoldenFiles(t, "record", func(in []byte) (string, error) {
		r, err := ParseRecord(strings.TrimSuffix(string(in), "\n"))
		if err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				return "", fmt.Errorf("error %v does not wrap ErrInvalidRecord", err)
			}
			return "", err
		}
		return r.String() + "\n", nil
	})
}

// testGoldenFiles runs parse on every testdata/<dir>/*.txt and compares its
// output with the matching .golden file.
func testGoldenFiles(t *testing.T, dir string, parse func([]byte) (string, error)) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no input files in testdata/%s", dir)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wantOK := strings.HasPrefix(name, "valid-")
			require.True(t, wantOK || strings.HasPrefix(name, "invalid-"), "%s: name must begin with valid- or invalid-", file)
			in, err := os.ReadFile(file)
			require.NoError(t, err)

			got, err := parse(in)
			if wantOK {
				require.NoError(t, err, "%s", file)
			} else {
				require.Error(t, err, "%s parsed as %q, want an error", file, got)
				got = "error: " + err.Error() + "\n"
			}

			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "missing golden file; run go test -run %s -update", t.Name())
			assert.Equal(t, string(want), got, "%s: output differs from %s", file, golden)
		})
	}
}

// TestMXChecker checks that mxChecker, which ParsePolicy uses in place of
// validPattern, gives the same answer after any earlier pattern, since it
// checks only the first label of a pattern in the domain of the one before.
func TestMXChecker(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("a", 63)
	long := strings.Repeat(label63+".", 4) + "example.com"
	require.Len(t, long, 267)
	// A domain of 250 characters, under which a label of 2 fits and one of 3
	// does not.
	d250 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 58)
	require.Len(t, d250, 250)
	patterns := []string{
		"mx1.example.com", "mx2.example.com", "*.example.com", "example.com", "com",
		"a.b.example.com", "a..example.com", ".example.com", "..example.com",
		"-a.example.com", "a-.example.com", "a-b.example.com", "a_b.example.com",
		"é.example.com", "*.*.example.com", "*a.example.com", "a*.example.com",
		"a.example.com.", "A.EXAMPLE.COM", "Mx3.Example.Com", "a.example.co", "aexample.com",
		label63 + ".example.com", label63 + "a.example.com", long, long[13:], long[14:],
		"a." + d250, "ab." + d250, "abc." + d250, "*.ab." + d250,
		"mx1.mail.example-corp.com", "mx2.mail.example-corp.com", "mx-.mail.example-corp.com",
		"", "*.", "*", ".", "a b.example.com", "a\r.example.com",
	}
	for _, first := range patterns {
		for _, pat := range patterns {
			var c mxChecker
			c.valid(first)
			got, want := c.valid(pat), validPattern(pat)
			assert.Equal(t, want, got, "valid(%q) after valid(%q) = %v, want %v", pat, first, got, want)
		}
	}
}

// TestManyExtensions checks that the first of each extension key is kept, in
// order, past the number of keys up to which extensionSet searches its list.
func TestManyExtensions(t *testing.T) {
	t.Parallel()
	const n = 3 * maxExtensionSearch
	var policy, record strings.Builder
	policy.WriteString(policyHead + "max_age: 86400\n")
	record.WriteString("v=STSv1; id=1")
	var want []Extension
	// Each key once, then each again with another value, in reverse order.
	for i := range n {
		key := fmt.Sprintf("k%d", i)
		want = append(want, Extension{key, "first"})
		fmt.Fprintf(&policy, "%s: first\n", key)
		fmt.Fprintf(&record, "; %s=first", key)
	}
	for i := n - 1; i >= 0; i-- {
		fmt.Fprintf(&policy, "k%d: second\n", i)
		fmt.Fprintf(&record, "; k%d=second", i)
	}

	p, err := ParsePolicy([]byte(policy.String()))
	require.NoError(t, err, "ParsePolicy(%q)", policy.String())
	assert.Equal(t, want, p.Extensions, "ParsePolicy(%q).Extensions = %v, want %v", policy.String(), p.Extensions, want)

	r, err := ParseRecord(record.String())
	require.NoError(t, err, "ParseRecord(%q)", record.String())
	assert.Equal(t, want, r.Extensions, "ParseRecord(%q).Extensions = %v, want %v", record.String(), r.Extensions, want)
}
