package mtasts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

func TestParseTLSRPTRecord(t *testing.T) {
	t.Parallel()
	ext := func(kv ...string) []mtasts.Extension {
		var e []mtasts.Extension
		for i := 0; i < len(kv); i += 2 {
			e = append(e, mtasts.Extension{Key: kv[i], Value: kv[i+1]})
		}
		return e
	}
	tests := []struct {
		name string
		txt  string
		want *mtasts.TLSRPTRecord // nil: invalid
	}{
		// RFC 8460 §3's examples.
		{"rfc mailto", "v=TLSRPTv1; rua=mailto:reports@example.com",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:reports@example.com"}}},
		{"rfc https", "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
			&mtasts.TLSRPTRecord{RUA: []string{"https://reporting.example.com/v1/tlsrpt"}}},

		{"no white space", "v=TLSRPTv1;rua=mailto:a@example.com",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}}},
		{"tabs and spaces around ;", "v=TLSRPTv1 \t;\t rua=mailto:a@example.com",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}}},
		{"trailing ;", "v=TLSRPTv1; rua=mailto:a@example.com;",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}}},
		{"trailing ; and space", "v=TLSRPTv1; rua=mailto:a@example.com; ",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}}},
		{"two URIs", "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/tlsrpt",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com", "https://r.example.com/tlsrpt"}}},
		{"white space around comma", "v=TLSRPTv1; rua=mailto:a@example.com \t, https://r.example.com/",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com", "https://r.example.com/"}}},
		{"two rua fields", "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.net",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com", "mailto:b@example.net"}}},
		{"extension after rua", "v=TLSRPTv1; rua=mailto:a@example.com; ext_1.x-y=v,a:l/u~e",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}, Extensions: ext("ext_1.x-y", "v,a:l/u~e")}},
		{"extension before rua", "v=TLSRPTv1; 9x=1; rua=mailto:a@example.com",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}, Extensions: ext("9x", "1")}},
		{"repeated extension: first wins", "v=TLSRPTv1; rua=mailto:a@example.com; x=1; x=2; y=3",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com"}, Extensions: ext("x", "1", "y", "3")}},
		{"percent-encoded comma kept", "v=TLSRPTv1; rua=https://r.example.com/tlsrpt?a=1%2C2%21",
			&mtasts.TLSRPTRecord{RUA: []string{"https://r.example.com/tlsrpt?a=1%2C2%21"}}},
		{"scheme in upper case", "v=TLSRPTv1; rua=MAILTO:a@example.com,HTTPS://R.EXAMPLE.COM/",
			&mtasts.TLSRPTRecord{RUA: []string{"MAILTO:a@example.com", "HTTPS://R.EXAMPLE.COM/"}}},
		{"mailto with two addresses and a header", "v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.com?subject=tls",
			&mtasts.TLSRPTRecord{RUA: []string{"mailto:a@example.com%2Cb@example.com?subject=tls"}}},
		{"other scheme kept", "v=TLSRPTv1; rua=http://r.example.com/,mailto:a@example.com",
			&mtasts.TLSRPTRecord{RUA: []string{"http://r.example.com/", "mailto:a@example.com"}}},
		{"https with port and IPv6 literal", "v=TLSRPTv1; rua=https://[::1]:8443/r",
			&mtasts.TLSRPTRecord{RUA: []string{"https://[::1]:8443/r"}}},

		{"empty", "", nil},
		{"version only", "v=TLSRPTv1", nil},
		{"version and ;", "v=TLSRPTv1;", nil},
		{"no rua", "v=TLSRPTv1; ext=1", nil},
		{"version in lower case", "v=tlsrptv1; rua=mailto:a@example.com", nil},
		{"version 2", "v=TLSRPTv2; rua=mailto:a@example.com", nil},
		{"version 10", "v=TLSRPTv10; rua=mailto:a@example.com", nil},
		{"space in version", "v = TLSRPTv1; rua=mailto:a@example.com", nil},
		{"leading space", " v=TLSRPTv1; rua=mailto:a@example.com", nil},
		{"version not first", "rua=mailto:a@example.com; v=TLSRPTv1", nil},
		{"no ; after version", "v=TLSRPTv1 rua=mailto:a@example.com", nil},
		{"rua in upper case", "v=TLSRPTv1; RUA=mailto:a@example.com", nil},
		{"space before =", "v=TLSRPTv1; rua =mailto:a@example.com", nil},
		{"space after =", "v=TLSRPTv1; rua= mailto:a@example.com", nil},
		{"trailing space", "v=TLSRPTv1; rua=mailto:a@example.com ", nil},
		{"empty rua", "v=TLSRPTv1; rua=", nil},
		{"empty rua then field", "v=TLSRPTv1; rua=; x=1", nil},
		{"trailing comma", "v=TLSRPTv1; rua=mailto:a@example.com,", nil},
		{"two commas", "v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com", nil},
		{"two URIs without comma", "v=TLSRPTv1; rua=mailto:a@example.com mailto:b@example.com", nil},
		{"double ;", "v=TLSRPTv1; rua=mailto:a@example.com;;", nil},
		{"no scheme", "v=TLSRPTv1; rua=reports@example.com", nil},
		{"scheme begins with a digit", "v=TLSRPTv1; rua=1http://r.example.com/", nil},
		{"mailto without address", "v=TLSRPTv1; rua=mailto:", nil},
		{"mailto only headers", "v=TLSRPTv1; rua=mailto:?to=a@example.com", nil},
		{"mailto not an address", "v=TLSRPTv1; rua=mailto:reports", nil},
		{"mailto with display name", "v=TLSRPTv1; rua=mailto:Reports%20%3Ca@example.com%3E", nil},
		{"https without host", "v=TLSRPTv1; rua=https:///tlsrpt", nil},
		{"https opaque", "v=TLSRPTv1; rua=https:r.example.com", nil},
		{"unencoded !", "v=TLSRPTv1; rua=https://r.example.com/a!b", nil},
		{"bad percent-encoding", "v=TLSRPTv1; rua=https://r.example.com/%2", nil},
		{"non-hex percent-encoding", "v=TLSRPTv1; rua=https://r.example.com/%zz", nil},
		{"non-ASCII in URI", "v=TLSRPTv1; rua=mailto:ré@example.com", nil},
		{"quote in URI", `v=TLSRPTv1; rua=https://r.example.com/"x"`, nil},
		{"field without =", "v=TLSRPTv1; rua=mailto:a@example.com; ext", nil},
		{"extension without value", "v=TLSRPTv1; rua=mailto:a@example.com; ext=", nil},
		{"extension name with _ first", "v=TLSRPTv1; rua=mailto:a@example.com; _x=1", nil},
		{"extension name too long", "v=TLSRPTv1; rua=mailto:a@example.com; " + strings.Repeat("x", 33) + "=1", nil},
		{"extension value with =", "v=TLSRPTv1; rua=mailto:a@example.com; x=a=b", nil},
		{"extension value not ASCII", "v=TLSRPTv1; rua=mailto:a@example.com; x=é", nil},
		{"control character", "v=TLSRPTv1; rua=mailto:a@example.com; x=\x01", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := mtasts.ParseTLSRPTRecord(tt.txt)
			if tt.want == nil {
				require.ErrorIs(t, err, mtasts.ErrInvalidTLSRPTRecord, "ParseTLSRPTRecord(%q) = %+v, want an error", tt.txt, got)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err, "ParseTLSRPTRecord(%q)", tt.txt)
			assert.Equal(t, tt.want, got, "ParseTLSRPTRecord(%q)", tt.txt)

			// The canonical form parses to the same record.
			again, err := mtasts.ParseTLSRPTRecord(got.String())
			require.NoError(t, err, "ParseTLSRPTRecord(%q)", got.String())
			assert.Equal(t, got, again, "ParseTLSRPTRecord(%q)", got.String())
		})
	}
}

func TestTLSRPTRecordDestinations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		txt    string
		https  []string
		mailto []string
	}{
		{"v=TLSRPTv1; rua=mailto:a@example.com", nil, []string{"a@example.com"}},
		{"v=TLSRPTv1; rua=https://r.example.com/x", []string{"https://r.example.com/x"}, nil},
		{
			"v=TLSRPTv1; rua=mailto:tls%2Brpt@example.com,https://r.example.com/x%2Cy; rua=HTTPS://s.example.net/,MailTo:b@example.com%2Cc@example.com?subject=x,http://r.example.com/",
			[]string{"https://r.example.com/x%2Cy", "HTTPS://s.example.net/"},
			[]string{"tls+rpt@example.com", "b@example.com", "c@example.com"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.txt, func(t *testing.T) {
			t.Parallel()
			r, err := mtasts.ParseTLSRPTRecord(tt.txt)
			require.NoError(t, err)
			assert.Equal(t, tt.https, r.HTTPS(), "HTTPS() of %q", tt.txt)
			assert.Equal(t, tt.mailto, r.Mailto(), "Mailto() of %q", tt.txt)
		})
	}
}

func TestLookupTLSRPT(t *testing.T) {
	t.Parallel()
	const (
		good  = "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
		good2 = "v=TLSRPTv1; rua=https://tlsrpt.example.net/v1"
	)
	tests := []struct {
		name    string
		setup   func(ts *mtaststest.Server)
		domain  string
		want    *mtasts.TLSRPTRecord
		wantErr error
	}{
		{
			name:   "one record",
			setup:  func(ts *mtaststest.Server) { ts.SetTXT("_smtp._tls.example.com", []string{good}) },
			domain: "example.com",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"mailto:tlsrpt@example.com"}},
		},
		{
			name: "record in several strings, joined without spaces",
			setup: func(ts *mtaststest.Server) {
				ts.SetTXT("_smtp._tls.example.com", []string{"v=TLSRPTv1; rua=mai", "lto:tlsrpt@exa", "mple.com"})
			},
			domain: "example.com",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"mailto:tlsrpt@example.com"}},
		},
		{
			name: "other TXT records beside it are ignored",
			setup: func(ts *mtaststest.Server) {
				ts.SetTXT("_smtp._tls.example.com", []string{"v=spf1 -all"}, []string{good2}, []string{"v=TLSRPTv10; rua=mailto:x@example.com"})
			},
			domain: "example.com",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"https://tlsrpt.example.net/v1"}},
		},
		{
			// RFC 8460 §3: records that do not begin with "v=TLSRPTv1;" are
			// discarded before the records are counted.
			name: "a bare version beside a valid record is discarded",
			setup: func(ts *mtaststest.Server) {
				ts.SetTXT("_smtp._tls.example.com", []string{"v=TLSRPTv1"}, []string{good}, []string{"v=TLSRPTv1 "}, []string{"v=TLSRPTv1 rua=mailto:x@example.com"})
			},
			domain: "example.com",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"mailto:tlsrpt@example.com"}},
		},
		{
			name:    "a bare version alone is no record",
			setup:   func(ts *mtaststest.Server) { ts.SetTXT("_smtp._tls.example.com", []string{"v=TLSRPTv1"}) },
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name:   "domain in upper case with a final dot",
			setup:  func(ts *mtaststest.Server) { ts.SetTXT("_smtp._tls.example.com", []string{good}) },
			domain: "EXAMPLE.com.",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"mailto:tlsrpt@example.com"}},
		},
		{
			name: "through a CNAME",
			setup: func(ts *mtaststest.Server) {
				ts.SetCNAME("_smtp._tls.example.com", "tlsrpt.provider.example")
				ts.SetTXT("tlsrpt.provider.example", []string{good2})
			},
			domain: "example.com",
			want:   &mtasts.TLSRPTRecord{RUA: []string{"https://tlsrpt.example.net/v1"}},
		},
		{
			name:    "name does not exist",
			setup:   func(ts *mtaststest.Server) {},
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name:    "only other TXT records",
			setup:   func(ts *mtaststest.Server) { ts.SetTXT("_smtp._tls.example.com", []string{"v=spf1 -all"}) },
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name:    "the record at the domain itself does not count",
			setup:   func(ts *mtaststest.Server) { ts.SetTXT("example.com", []string{good}) },
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name:    "two valid records are none",
			setup:   func(ts *mtaststest.Server) { ts.SetTXT("_smtp._tls.example.com", []string{good}, []string{good2}) },
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name: "a valid and a broken record are none",
			setup: func(ts *mtaststest.Server) {
				ts.SetTXT("_smtp._tls.example.com", []string{good}, []string{"v=TLSRPTv1; rua=nonsense"})
			},
			domain:  "example.com",
			wantErr: mtasts.ErrNoTLSRPTRecord,
		},
		{
			name: "one broken record",
			setup: func(ts *mtaststest.Server) {
				ts.SetTXT("_smtp._tls.example.com", []string{"v=TLSRPTv1; rua=reports@example.com"})
			},
			domain:  "example.com",
			wantErr: mtasts.ErrInvalidTLSRPTRecord,
		},
		{
			name:    "SERVFAIL",
			setup:   func(ts *mtaststest.Server) { ts.SetDNSFault("_smtp._tls.example.com", mtaststest.DNSServFail) },
			domain:  "example.com",
			wantErr: mtasts.ErrDNSTemporary,
		},
		{
			name:    "address literal",
			setup:   func(ts *mtaststest.Server) {},
			domain:  "[127.0.0.1]",
			wantErr: mtasts.ErrInvalidDomain,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := mtaststest.NewServer()
			defer ts.Close()
			tt.setup(ts)
			got, err := ts.Resolver().LookupTLSRPT(context.Background(), tt.domain)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr, "LookupTLSRPT(%q) = %+v", tt.domain, got)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err, "LookupTLSRPT(%q)", tt.domain)
			assert.Equal(t, tt.want, got, "LookupTLSRPT(%q)", tt.domain)
			assert.Equal(t, 1, ts.DNSQueriesFor("_smtp._tls.example.com"), "queries for _smtp._tls.example.com")
		})
	}
}

func TestLookupTLSRPTAsksNothingForAnInvalidDomain(t *testing.T) {
	t.Parallel()
	ts := mtaststest.NewServer()
	defer ts.Close()
	for _, d := range []string{"", "[127.0.0.1]", "127.0.0.1", "a..b", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 52)} {
		_, err := ts.Resolver().LookupTLSRPT(context.Background(), d)
		assert.ErrorIs(t, err, mtasts.ErrInvalidDomain, "LookupTLSRPT(%q)", d)
	}
	assert.Zero(t, ts.DNSQueries(), "DNS queries")
}

func FuzzParseTLSRPTRecord(f *testing.F) {
	for _, s := range []string{
		"v=TLSRPTv1; rua=mailto:reports@example.com",
		"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
		"v=TLSRPTv1;rua=mailto:a@example.com , https://r.example.com/x%2C; x=1; rua=mailto:b@example.net;",
		"v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.com?subject=x",
		"v=TLSRPTv1; rua=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		r, err := mtasts.ParseTLSRPTRecord(txt)
		if err != nil {
			require.ErrorIs(t, err, mtasts.ErrInvalidTLSRPTRecord)
			return
		}
		require.NotEmpty(t, r.RUA, "ParseTLSRPTRecord(%q) has no rua", txt)
		again, err := mtasts.ParseTLSRPTRecord(r.String())
		require.NoError(t, err, "ParseTLSRPTRecord(%q), the String of ParseTLSRPTRecord(%q)", r.String(), txt)
		require.Equal(t, r, again, "round trip of %q through %q", txt, r.String())
		r.HTTPS()
		r.Mailto()
	})
}

func ExampleParseTLSRPTRecord() {
	r, err := mtasts.ParseTLSRPTRecord("v=TLSRPTv1; rua=mailto:tls%2Breports@example.com,https://tlsrpt.example.com/v1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("post to:", r.HTTPS())
	fmt.Println("mail to:", r.Mailto())
	// Output:
	// post to: [https://tlsrpt.example.com/v1]
	// mail to: [tls+reports@example.com]
}
