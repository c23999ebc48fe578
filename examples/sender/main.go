// Command sender delivers one message over SMTP the way RFC 8461 §5.1 says a
// sender that implements MTA-STS must: it looks up the recipient domain's
// MTA-STS policy and MX hosts, tries the MX hosts in order of preference,
// checks each against the policy, and uses STARTTLS with a certificate
// verified for the MX host.
//
// Under an enforced policy an MX host that fails a check is skipped; when
// none is left the message is not failed for good but deferred (exit status
// 75, EX_TEMPFAIL), as RFC 8461 §5.1 requires. Under a testing policy the
// message is delivered anyway. Either way each failure is printed as an RFC
// 8460 result type, as a TLSRPT reporter would count it.
//
// Usage:
//
//	sender -from alice@contoso.com -to bob@fabrikam.com [-hostname mail.contoso.com] < message.eml
//
// Exit status: 0 delivered; 64 usage error; 69 refused for good (a 5xx
// reply, or a null MX); 75 not delivered now, try again later.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// Exit statuses, from sendmail's sysexits.h.
const (
	exitOK          = 0
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE
	exitTempFail    = 75 // EX_TEMPFAIL
)

func main() {
	s := &Sender{STS: &mtasts.Resolver{}}
	s.STS.OnError = func(domain string, err error) {
		// Failures a cached policy hides (RFC 8461 §6: report them too).
		fmt.Fprintf(os.Stderr, "sender: MTA-STS %s: %v\n", domain, err)
	}
	os.Exit(run(context.Background(), s, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run parses args, reads the message from stdin, sends it with s and returns
// the exit status.
func run(ctx context.Context, s *Sender, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("sender", flag.ContinueOnError)
	flags.SetOutput(stderr)
	from := flags.String("from", "", "envelope sender `address`")
	to := flags.String("to", "", "recipient `address`")
	flags.StringVar(&s.Hostname, "hostname", s.hostname(), "the `name` to give in EHLO")
	timeout := flags.Duration("timeout", 10*time.Minute, "give up, and defer the message, after this long")
	if err := flags.Parse(args); err != nil {
		return exitUsage
	}
	if *to == "" || flags.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: sender -from address -to address [-hostname name] < message")
		return exitUsage
	}
	msg, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "sender: reading the message:", err)
		return exitTempFail
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	report := s.Report
	s.Report = func(f Failure) {
		fmt.Fprintln(stderr, "sender: report:", f)
		if report != nil {
			report(f)
		}
	}
	d, err := s.Send(ctx, *from, *to, msg)
	var (
		temp *TempError
		perm *PermError
	)
	switch {
	case err == nil:
		tls := "without TLS"
		if d.TLS {
			tls = "over TLS"
		}
		fmt.Fprintf(stdout, "delivered to %s %s\n", d.MX, tls)
		return exitOK
	case errors.As(err, &perm):
		fmt.Fprintln(stderr, "sender:", err)
		return exitUnavailable
	case errors.As(err, &temp):
		fmt.Fprintln(stderr, "sender:", err)
		return exitTempFail
	default:
		fmt.Fprintln(stderr, "sender:", err)
		return exitUsage
	}
}
