// Command mtasts-check diagnoses a domain's MTA-STS (RFC 8461) and TLSRPT
// (RFC 8460) the way a sending MTA that uses package mtasts sees them.
//
//	go run ./examples/mtasts-check [flags] DOMAIN...
//
// For each domain it prints the _mta-sts TXT answer (every record, the CNAME
// chain, which record counts and why), the policy fetch (URL, HTTP status,
// media type, size, TLS version, the certificate chain), the parsed policy
// and every line the parser refuses, the MX hosts and the pattern each
// matches, with --probe a STARTTLS probe of each MX host on port 25 (EHLO,
// STARTTLS, the certificate checked for the MX name, then QUIT: no mail is
// sent), the _smtp._tls TLSRPT record, the findings a careful administrator
// wants to know about, and a verdict: what a sender that enforces MTA-STS
// does with mail for the domain right now, and the RFC 8460 result type that
// each failure shows in the domain's TLSRPT reports.
//
// The verdict comes from the package's own Resolver.Lookup, Policy.Validate,
// Policy.TLSConfig and Classify, so that the checker says what the library
// does; the raw details (records, headers, certificates) come from a DNS
// query and an HTTPS GET of the checker's own, under the same rules: no
// redirects followed, TLS 1.2 or later.
//
// Flags:
//
//	--json            print JSON (the schema below) instead of text
//	--probe           probe each MX host with STARTTLS on port 25
//	--nameserver ADDR ask this DNS server (host or host:port) instead of
//	                  those of /etc/resolv.conf
//	--timeout D       bound on each DNS question, fetch and probe (default 20s)
//	--cache DIR       a DirCache the sender shares: show its entry for each
//	                  domain, apply it as the sender would, compare its id
//	--purge           with --cache, delete each domain's entry first, so that a
//	                  sender reading the directory fetches the policy afresh
//	                  (a running sender that holds it in memory keeps it until
//	                  its own Resolver.Purge or a restart)
//	--ehlo NAME       the name sent in EHLO by --probe (default localhost)
//	--no-color        no colour even on a terminal
//
// Exit status: 0 when no domain has a problem (findings of severity "info"
// only), 1 when a problem was found (a finding of severity "error" or
// "warning"), 2 when a domain could not be checked (bad arguments, DNS not
// answering) — the highest over all domains.
//
// # JSON schema (version 1)
//
// The output is one object; fields never change meaning within a version,
// new fields may be added, and absent values are omitted.
//
//	{"schema": 1, "exit": 0|1|2, "domains": [DOMAIN...]}
//
//	DOMAIN  {"domain", "exit",
//	         "record": {"name", "cname_chain": [name], "records": [{"text", "sts", "counted", "error"}],
//	                    "id", "why", "error"},
//	         "fetch": {"url", "status", "media_type", "size", "tls_version", "redirect",
//	                   "certificates": [CERT], "error"},
//	         "policy": {"mode", "max_age", "mx": [pattern], "text", "problems": [{"line", "error"}]},
//	         "mx": [{"host", "preference", "pattern", "probe": PROBE}],
//	         "tlsrpt": {"name", "record", "rua": [uri], "error"},
//	         "cache": {"dir", "id", "mode", "fetched", "expires", "purged", "error"},
//	         "findings": [{"code", "severity", "message", "result_type", "reason"}],
//	         "verdict": {"action", "mode", "text", "reports": [{"result_type", "reason"}]}}
//	CERT    {"subject", "names": [name], "issuer", "not_after", "days_left"}
//	PROBE   {"connected", "banner", "starttls", "tls_version", "verified", "certificate": CERT, "error",
//	         "result_type", "reason"}
//
// verdict.action is one of "deliver-opportunistic" (no policy in force:
// STARTTLS when offered, any certificate), "deliver-testing" (a testing
// policy: delivered as without one, failures reported), "deliver-enforced"
// (an enforced policy allows at least one MX host), "defer" (an enforced
// policy allows no MX host: mail waits in the queue, RFC 8461 §5.1),
// "no-mail" (a null MX, RFC 7505) and "unknown" (the domain could not be
// checked).
//
// Finding codes. A failure of the policy's discovery or fetch, as the
// package's Lookup meets it, has Classify's reason code as its code, and its
// result type: record-syntax, multiple-records, http-status, http-redirect,
// media-type, policy-too-large, timeout, fetch-failed, policy-dns-failure,
// policy-syntax, certificate-host-mismatch, certificate-expired,
// certificate-not-trusted, certificate-invalid. The others:
//
//	invalid-domain, dns-failure, mx-dns-failure   could not check (exit 2)
//	no-record                      info: the domain has no MTA-STS
//	no-mx                          no MX records (info without a policy)
//	null-mx                        info: the domain accepts no mail (RFC 7505)
//	max-age-short                  max_age under a week (RFC 8461 §3.2)
//	testing-without-tlsrpt         mode testing and no TLSRPT record
//	tlsrpt-invalid, tlsrpt-multiple-records   no reports can be sent
//	public-suffix-wildcard         an mx pattern "*." and a public suffix
//	mx-not-covered                 an MX host no pattern matches (validation-failure)
//	pattern-unused                 a pattern no MX host matches
//	id-unchanged                   the policy differs from the cached one under the same id
//	policy-certificate-expiring    the policy host's certificate expires within 14 days
//	mx-unreachable                 --probe could not open a session
//	mx-starttls                    STARTTLS not offered or refused (starttls-not-supported)
//	mx-certificate                 the MX certificate does not verify for its name
//	mx-tls                         another TLS failure (validation-failure)
//	mx-certificate-expiring        the MX certificate expires within 14 days
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"
)

// config holds what main leaves at its zero value and tests point at
// loopback servers.
type config struct {
	Now   func() time.Time                                                  // nil: time.Now
	Roots *x509.CertPool                                                    // trusted roots for the policy host and the MX hosts; nil: the system's
	Dial  func(ctx context.Context, network, addr string) (net.Conn, error) // reaches the policy host; nil: net.Dialer
	// DialMX reaches an MX host's port 25; nil: net.Dialer.
	DialMX func(ctx context.Context, network, addr string) (net.Conn, error)
	Color  bool // colour the text output
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, config{Color: isTerminal(os.Stdout)}))
}

// isTerminal reports whether f is a character device, as a terminal is.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == ""
}

// options are the command-line flags.
type options struct {
	json       bool
	probe      bool
	nameserver string
	timeout    time.Duration
	cacheDir   string
	purge      bool
	ehlo       string
	noColor    bool
}

// run checks each domain of args and writes the report to stdout. It returns
// the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, cfg config) int {
	var o options
	fs := flag.NewFlagSet("mtasts-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.json, "json", false, "print JSON instead of text")
	fs.BoolVar(&o.probe, "probe", false, "probe each MX host with STARTTLS on port 25 (EHLO, STARTTLS, QUIT)")
	fs.StringVar(&o.nameserver, "nameserver", "", "DNS server `host[:port]` to ask (default: /etc/resolv.conf)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "bound on each DNS question, fetch and probe")
	fs.StringVar(&o.cacheDir, "cache", "", "policy cache `dir`ectory (a DirCache) to show and compare with")
	fs.BoolVar(&o.purge, "purge", false, "with --cache, delete each domain's cached entry first")
	fs.StringVar(&o.ehlo, "ehlo", "localhost", "`name` sent in EHLO by --probe")
	fs.BoolVar(&o.noColor, "no-color", false, "no colour, even on a terminal")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: mtasts-check [flags] DOMAIN...")
		fs.PrintDefaults()
	}
	// Flags may come before, between or after the domains.
	var domains []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return exitCannotCheck
		}
		if fs.NArg() == 0 {
			break
		}
		domains = append(domains, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case len(domains) == 0:
		fs.Usage()
		return exitCannotCheck
	case o.purge && o.cacheDir == "":
		fmt.Fprintln(stderr, "mtasts-check: --purge needs --cache DIR")
		return exitCannotCheck
	case o.timeout <= 0:
		fmt.Fprintln(stderr, "mtasts-check: --timeout must be positive")
		return exitCannotCheck
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if o.noColor {
		cfg.Color = false
	}
	c, err := newChecker(o, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "mtasts-check:", err)
		return exitCannotCheck
	}
	out := output{Schema: 1}
	for _, d := range domains {
		rep := c.check(ctx, d)
		out.Domains = append(out.Domains, rep)
		out.Exit = max(out.Exit, rep.Exit)
	}
	if o.json {
		err = writeJSON(stdout, out)
	} else {
		err = writeText(stdout, out, cfg.Color)
	}
	if err != nil {
		fmt.Fprintln(stderr, "mtasts-check:", err)
		return exitCannotCheck
	}
	return out.Exit
}

// Exit statuses.
const (
	exitOK          = 0
	exitProblems    = 1
	exitCannotCheck = 2
)
