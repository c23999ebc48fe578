package mtasts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addFileSeeds adds each testdata/<dir>/*.txt to the corpus of f.
func addFileSeeds(f *testing.F, dir string, add func([]byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
	if err != nil {
		f.Fatal(err)
	}
	if len(files) == 0 {
		f.Fatalf("no seed files in testdata/%s", dir)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		add(b)
	}
}

func FuzzParsePolicy(f *testing.F) {
	// RFC 8461 §3.2's example, and its shapes the fuzzer should mutate from.
	f.Add([]byte("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n"))
	f.Add([]byte("version: STSv1\r\nmode: testing\r\nmx: *.example.com\r\nmax_age: 31557600"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\nnote: é à\n"))
	addFileSeeds(f, "policy", func(b []byte) { f.Add(b) })

	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := ParsePolicy(text)
		if err != nil {
			if p != nil {
				t.Fatalf("ParsePolicy(%q) = %v, %v: a policy with an error", text, p, err)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("ParsePolicy(%q) error %v does not wrap ErrInvalidPolicy", text, err)
			}
			return
		}

		// What the grammar guarantees of any policy it accepts.
		switch p.Mode {
		case ModeEnforce, ModeTesting:
			if len(p.MX) == 0 {
				t.Errorf("ParsePolicy(%q): mode %s with no mx", text, p.Mode)
			}
		case ModeNone:
		default:
			t.Errorf("ParsePolicy(%q): mode %q", text, p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > MaxMaxAge || p.MaxAge%time.Second != 0 {
			t.Errorf("ParsePolicy(%q): max_age %v", text, p.MaxAge)
		}
		for _, mx := range p.MX {
			if !refValidPattern(mx) {
				t.Errorf("ParsePolicy(%q): mx %q is not a pattern", text, mx)
			}
		}
		for _, e := range p.Extensions {
			if !validExtName(e.Key) || e.Value == "" || strings.ContainsAny(e.Value, "\r\n\t") {
				t.Errorf("ParsePolicy(%q): extension %q: %q", text, e.Key, e.Value)
			}
		}

		// String round trip: the policy file it writes parses to an equal
		// policy, and writing that again gives the same file.
		s := p.String()
		q, err := ParsePolicy([]byte(s))
		if err != nil {
			t.Fatalf("ParsePolicy(%q) of String() of ParsePolicy(%q): %v", s, text, err)
		}
		if !equalPolicies(p, q) {
			t.Fatalf("ParsePolicy(%q) = %#v, want %#v (from %q)", s, q, p, text)
		}
		if s2 := q.String(); s2 != s {
			t.Fatalf("String() = %q after a round trip, want %q", s2, s)
		}
	})
}

// equalPolicies compares what ParsePolicy sets, treating nil and empty slices
// alike.
func equalPolicies(a, b *Policy) bool {
	if a.Mode != b.Mode || a.MaxAge != b.MaxAge || len(a.MX) != len(b.MX) || len(a.Extensions) != len(b.Extensions) {
		return false
	}
	for i := range a.MX {
		if a.MX[i] != b.MX[i] {
			return false
		}
	}
	for i := range a.Extensions {
		if a.Extensions[i] != b.Extensions[i] {
			return false
		}
	}
	return true
}

func FuzzParseRecord(f *testing.F) {
	// RFC 8461 §3.1's example, and variations on the separators.
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1 ;id=abc\t; ext=a:b ; ")
	f.Add("v=STSv1; id=1; rua=mailto:a@example.com; id=2")
	addFileSeeds(f, "record", func(b []byte) { f.Add(strings.TrimSuffix(string(b), "\n")) })

	f.Fuzz(func(t *testing.T, txt string) {
		r, err := ParseRecord(txt)
		if err != nil {
			if r != nil {
				t.Fatalf("ParseRecord(%q) = %v, %v: a record with an error", txt, r, err)
			}
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("ParseRecord(%q) error %v does not wrap ErrInvalidRecord", txt, err)
			}
			return
		}
		if !isSTSRecord(txt) {
			t.Errorf("ParseRecord(%q) succeeded but isSTSRecord is false", txt)
		}
		if !validID(r.ID) {
			t.Errorf("ParseRecord(%q): id %q", txt, r.ID)
		}
		seen := map[string]bool{"id": true}
		for _, e := range r.Extensions {
			if seen[e.Key] || !validExtName(e.Key) || !validRecordExtValue(e.Value) {
				t.Errorf("ParseRecord(%q): extension %q=%q", txt, e.Key, e.Value)
			}
			seen[e.Key] = true
		}

		s := r.String()
		r2, err := ParseRecord(s)
		if err != nil {
			t.Fatalf("ParseRecord(%q) of String() of ParseRecord(%q): %v", s, txt, err)
		}
		if r2.ID != r.ID || len(r2.Extensions) != len(r.Extensions) {
			t.Fatalf("ParseRecord(%q) = %#v, want %#v (from %q)", s, r2, r, txt)
		}
		for i := range r.Extensions {
			if r2.Extensions[i] != r.Extensions[i] {
				t.Fatalf("ParseRecord(%q) = %#v, want %#v (from %q)", s, r2, r, txt)
			}
		}
		if s2 := r2.String(); s2 != s {
			t.Fatalf("String() = %q after a round trip, want %q", s2, s)
		}
	})
}

func FuzzMatch(f *testing.F) {
	// Two patterns, as policies usually hold, and a host.
	for _, seed := range [][3]string{
		{"mail.example.com", "*.example.net", "mx1.example.net"},
		{"mail.example.com", "*.example.net", "MAIL.Example.COM."},
		{"mail.example.com", "*.example.net", "a.b.example.net"},
		{"mail.example.com", "*.example.net", "example.net"},
		{"mail.example.com", "*.example.net", "xexample.net"},
		{"xn--bcher-kva.example", "*.xn--p1ai", "bücher.example"},
		{"xn--bcher-kva.example", "*.xn--p1ai", "испытание.рф"},
		{"*.example.net", "*", "*.example.net"},
		{"a..b", ".", "."},
		{"", "*.", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}

	f.Fuzz(func(t *testing.T, pat1, pat2, host string) {
		p := &Policy{Mode: ModeEnforce, MX: []string{pat1, pat2}}
		got := p.Match(host)
		if want := refMatch(p.MX, host); got != want {
			t.Fatalf("Match(%q) with mx %q = %v, want %v", host, p.MX, got, want)
		}
		if err := p.Validate(host); (err == nil) != got {
			t.Fatalf("Validate(%q) with mx %q = %v, but Match = %v", host, p.MX, err, got)
		}
		for _, pat := range p.MX {
			if v, want := validPattern(pat), refValidPattern(pat); v != want {
				t.Fatalf("validPattern(%q) = %v, want %v", pat, v, want)
			}
		}
	})
}
