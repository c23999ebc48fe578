package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzRequest: whatever a client sends, reading stops with a request or an
// error (never a panic, never more than maxRequest bytes), and a key gives a
// domain without brackets, port, trailing dot or upper case, or no domain.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"23:postfix enforce.example,", "0:,", "01:a,", "99999:", "x:", "5:ab", "12:postfix [a]:25,",
		"18:postfix [ipv6:::1],", "16:postfix Bücher.DE.,",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for range 4 {
			req, err := readNetstring(br, nil)
			if err != nil {
				return
			}
			if len(req) > maxRequest {
				t.Fatalf("request of %d bytes", len(req))
			}
			_, key, ok := strings.Cut(string(req), " ")
			if !ok {
				continue
			}
			d, _, ok := parseKey(key)
			if !ok {
				continue
			}
			if d == "" || strings.HasSuffix(d, ".") || strings.HasPrefix(d, ".") || strings.ContainsAny(d, "[]") {
				t.Fatalf("parseKey(%q) = %q", key, d)
			}
			if utf8.ValidString(d) && strings.ToLower(d) != d {
				t.Fatalf("parseKey(%q) = %q, not lower case", key, d)
			}
			if isAddr(d) {
				t.Fatalf("parseKey(%q) = %q, an address", key, d)
			}
		}
	})
}
