package mtasts

import (
	"fmt"
	"strings"
	"testing"
)

// benchPolicy is the example policy of RFC 8461 §3.2: three mx patterns, one
// of them a wildcard.
const benchPolicy = "version: STSv1\n" +
	"mode: enforce\n" +
	"mx: mail.example.com\n" +
	"mx: *.example.net\n" +
	"mx: backupmx.example.com\n" +
	"max_age: 604800\n"

// BenchmarkParsePolicy parses a three-mx policy, the common size of a
// fetched policy file. Target: at most 300 ns/op and 4 allocs/op.
func BenchmarkParsePolicy(b *testing.B) {
	text := []byte(benchPolicy)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := ParsePolicy(text); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatch matches MX hosts against the three patterns of the RFC
// example, as Validate does once per MX before connecting. Target: at most
// 30 ns/op and no allocation.
func BenchmarkMatch(b *testing.B) {
	p, err := ParsePolicy([]byte(benchPolicy))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, host string
		want       bool
	}{
		// Matches the second pattern, *.example.net.
		{"wildcard", "mx1.example.net", true},
		// Compared with all three patterns and refused.
		{"nomatch", "mx1.example.org", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.Match(bc.host) != bc.want {
					b.Fatalf("Match(%q) = %v, want %v", bc.host, !bc.want, bc.want)
				}
			}
		})
	}
}

// largePolicy is a policy of 50 CRLF-terminated lines: version, mode, max_age
// and 47 mx host names, as a provider listing each of its MX hosts publishes.
var largePolicy = func() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: enforce\r\nmax_age: 604800\r\n")
	for i := range 47 {
		fmt.Fprintf(&b, "mx: mx%d.mail.example-corp.com\r\n", i+1)
	}
	return b.String()
}()

// BenchmarkParsePolicyLarge parses the 50-line CRLF policy. Target: at most
// 3 µs/op.
func BenchmarkParsePolicyLarge(b *testing.B) {
	text := []byte(largePolicy)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		p, err := ParsePolicy(text)
		if err != nil {
			b.Fatal(err)
		}
		if len(p.MX) != 47 {
			b.Fatalf("ParsePolicy: %d mx, want 47", len(p.MX))
		}
	}
}

// BenchmarkParseRecord parses the example record of RFC 8461 §3.1, as every
// Lookup that queries DNS does. Target: at most 100 ns/op.
func BenchmarkParseRecord(b *testing.B) {
	const txt = "v=STSv1; id=20160831085700Z;"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRecord(txt); err != nil {
			b.Fatal(err)
		}
	}
}
