package mtasts_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
)

// The code blocks of README.md are the bodies of the functions below, word
// for word, so that they compile; TestREADMEBlocksCompile holds them to it.
// They are not run: the API block and "Running for long" use the system's
// name servers and /var/lib/mta-sts, and the reports block needs a day to
// pass. ExampleResolver_Lookup, ExampleResolver_Run and ExampleReportCollector
// run the same code against mtaststest.

// readmeAPI is the block of "## API", after its import line.
func readmeAPI(ctx context.Context, mxHost string) {
	var r mtasts.Resolver                   // zero value works; fields configure it
	p, err := r.Lookup(ctx, "fabrikam.com") // (policy, nil) | (nil, nil) no policy | (nil, err) report it
	if err != nil {
		log.Printf("MTA-STS: %v", err) // deliver as without a policy, and report it
	}
	if err := p.Validate(mxHost); err != nil { // nil policy, none and testing never refuse
		// enforce: skip this MX (err wraps mtasts.ErrMXNotAllowed)
	}
}

// readmeRunningForLong is the block of "## Running for long".
func readmeRunningForLong(ctx context.Context) {
	r := &mtasts.Resolver{
		Cache:      mtasts.DirCache("/var/lib/mta-sts"), // survives restarts; Run refreshes what it holds
		MaxEntries: 200_000,                             // past it, domains not looked up lately leave memory
		Logger:     slog.Default(),
	}
	go r.Run(ctx) // refresh every cached policy about daily, and long before it expires
}

// readmeReports is the block of "## TLSRPT reports".
func readmeReports(ctx context.Context, resolver *mtasts.Resolver, domain string, p *mtasts.Policy, err error,
	mx string, local, remote netip.Addr, submit func([]byte)) {
	collector := &mtasts.ReportCollector{OrganizationName: "Example Inc.",
		ContactInfo: "tlsrpt@example.org", Submitter: "mail.example.org"}
	// after each delivery attempt to an MX of domain:
	collector.Add(mtasts.SessionResult{Domain: domain, Policy: p, Err: err,
		MXHost: mx, SendingIP: local, ReceivingIP: remote})
	// once a day, after midnight UTC:
	for _, rep := range collector.TakeFinished() {
		rec, err := resolver.LookupTLSRPT(ctx, rep.Policies[0].Policy.Domain) // _smtp._tls.<domain>
		if err != nil {
			continue
		}
		for _, uri := range rec.HTTPS() {
			err = mtasts.PostReport(ctx, nil, uri, rep) // application/tlsrpt+gzip
		}
		if to := rec.Mailto(); len(to) > 0 {
			msg, err := rep.Mail("tlsrpt@mail.example.org", to, time.Time{}) // multipart/report
			if err == nil {
				submit(msg) // DKIM-sign it, then hand it to your MTA
			}
		}
	}
}

// readmeBlock returns the first Go code block of README.md's section, without
// its fences.
func readmeBlock(t *testing.T, readme, section string) string {
	t.Helper()
	_, text, ok := strings.Cut(readme, "\n## "+section+"\n")
	require.True(t, ok, "README.md has no section %q", section)
	text, _, _ = strings.Cut(text, "\n## ") // this section only
	_, block, ok := strings.Cut(text, "\n```go\n")
	require.True(t, ok, "section %q has no Go code block", section)
	block, _, ok = strings.Cut(block, "\n```\n")
	require.True(t, ok, "the code block of %q does not end", section)
	return block
}

// funcBody returns the statements of the named function in file, one tab of
// indentation less.
func funcBody(t *testing.T, file, name string) string {
	t.Helper()
	src, err := os.ReadFile(file)
	require.NoError(t, err)
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	require.NoError(t, err)
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != name {
			continue
		}
		body := string(src[fset.Position(fd.Body.Lbrace).Offset+1 : fset.Position(fd.Body.Rbrace).Offset])
		lines := strings.Split(strings.Trim(body, "\n"), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimPrefix(l, "\t")
		}
		return strings.Join(lines, "\n")
	}
	t.Fatalf("%s has no function %s", file, name)
	return ""
}

func TestREADMEBlocksCompile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("README.md")
	require.NoError(t, err)
	readme := string(data)
	for _, tc := range []struct{ section, fn string }{
		{"API", "readmeAPI"},
		{"Running for long", "readmeRunningForLong"},
		{"TLSRPT reports", "readmeReports"},
	} {
		t.Run(tc.section, func(t *testing.T) {
			block := readmeBlock(t, readme, tc.section)
			if rest, ok := strings.CutPrefix(block, "import \"github.com/seedc2a895ea/mtasts\"\n\n"); ok {
				block = rest
			}
			assert.Equal(t, funcBody(t, "readme_test.go", tc.fn), block, "README.md's code block and %s", tc.fn)
		})
	}

	// ExampleResolver_Run's comment shows the same configuration.
	src, err := os.ReadFile("example_run_test.go")
	require.NoError(t, err)
	f, err := parser.ParseFile(token.NewFileSet(), "example_run_test.go", src, parser.ParseComments)
	require.NoError(t, err)
	var snippet []string
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "ExampleResolver_Run" && fd.Doc != nil {
			for _, l := range strings.Split(fd.Doc.Text(), "\n") {
				if code, ok := strings.CutPrefix(l, "\t"); ok {
					snippet = append(snippet, code)
				}
			}
		}
	}
	assert.Equal(t, readmeBlock(t, readme, "Running for long"), strings.Join(snippet, "\n"),
		"ExampleResolver_Run's comment and README.md's \"Running for long\"")
}
