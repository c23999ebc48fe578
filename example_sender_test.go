package mtasts_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// The whole sending flow of RFC 8461 §5.1 for one message: look up the
// policy, try the MX hosts in order of preference, check each against the
// policy, STARTTLS with the configuration TLSConfig gives, and count each
// session once in a TLSRPT collector, with the first failure it met (RFC
// 8461 §4.1 before §4.2: an MX host the policy does not list before its
// certificate). Under enforce a failing MX is skipped; under testing the
// message goes on and the failure is only reported; without a policy TLS is
// opportunistic. If no MX takes the message, defer it: never bounce it
// because of MTA-STS.
func Example_sender() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const domain = "fabrikam.com"
	sendingIP := netip.MustParseAddr("192.0.2.25") // the address this MTA sends from
	collector := &mtasts.ReportCollector{OrganizationName: "Contoso", ContactInfo: "tlsrpt@contoso.com", Submitter: "mail.contoso.com"}
	// report counts one session. A nil policy is reported as
	// no-policy-found, with the lookup's failure if there was one.
	report := func(p *mtasts.Policy, mx string, err error) {
		if err := collector.Add(mtasts.SessionResult{Domain: domain, Policy: p, Err: err,
			MXHost: mx, SendingIP: sendingIP}); err != nil {
			log.Print(err) // not a failure of the domain's: not reported
		}
	}

	var r mtasts.Resolver // keep one per process: it is the policy cache
	// On failure, deliver as without a policy, and report the failure.
	p, lookupErr := r.Lookup(ctx, domain)
	mxs, err := net.DefaultResolver.LookupMX(ctx, domain+".")
	if err != nil {
		log.Fatalf("451 4.4.3 MX lookup: %v", err) // try again later
	}
	for _, rec := range mxs {
		mx := strings.TrimSuffix(rec.Host, ".")
		// One session, one report: the first failure met wins.
		failure := cmp.Or(lookupErr, p.CheckMX(mx))
		if p.Validate(mx) != nil {
			report(p, mx, failure)
			continue // enforce: skip an MX the policy does not list
		}
		c, err := smtp.Dial(net.JoinHostPort(mx, "25"))
		if err != nil {
			continue // no session: nothing to report
		}
		// Under no policy or none, opportunistic TLS: any certificate.
		cfg, check := p.TLSConfig(mx, nil)
		if ok, _ := c.Extension("STARTTLS"); !ok {
			err = fmt.Errorf("%w: %s", mtasts.ErrNoSTARTTLS, mx)
		} else if err = c.StartTLS(cfg); errors.As(err, new(*textproto.Error)) {
			err = mtasts.STARTTLSRefused(err) // 454: still usable in plain text
		} else if err == nil {
			err = check.Err() // testing: deliver, but report the certificate
		}
		report(p, mx, cmp.Or(failure, err))
		if err != nil && check.Mode() == mtasts.ModeEnforce {
			c.Close()
			continue // RFC 8461 §5.1: try the next MX
		}
		// c.Mail, c.Rcpt, c.Data and c.Quit as usual; a failure there
		// (the handshake's too) means trying the next MX.
		c.Quit()
		return
	}
	log.Print("451 4.4.0 no MX host could be used; try again later")
}

// TLSConfig gives the *tls.Config for STARTTLS to one MX host under the
// policy; the TLSCheck tells, after the handshake, what a testing policy must
// report.
func ExamplePolicy_TLSConfig() {
	p := &mtasts.Policy{Mode: mtasts.ModeTesting, MX: []string{"*.fabrikam.com"}}
	c, err := smtp.Dial("mx1.fabrikam.com:25")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// base may carry the sender's own settings: client certificates, roots...
	cfg, check := p.TLSConfig("mx1.fabrikam.com.", &tls.Config{})
	if err := c.StartTLS(cfg); err != nil {
		var reply *textproto.Error
		if errors.As(err, &reply) {
			err = mtasts.STARTTLSRefused(err) // such as 454: TLS not available
		}
		log.Fatal(err) // under enforce, a bad certificate ends here
	}
	if err := check.Err(); err != nil {
		typ, reason := mtasts.Classify(err)
		log.Printf("deliver, and report %s (%s): %v", typ, reason, err)
	}
}

// Classify gives the RFC 8460 result type and a reason code for any failure
// met on the way: here an MX host that an enforced policy does not list.
func ExampleClassify() {
	p, err := mtasts.ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: mx1.fabrikam.com\nmax_age: 86400\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	err = p.Validate("mx.attacker.com")
	typ, reason := mtasts.Classify(err)
	fmt.Println(typ, reason)

	typ, reason = mtasts.Classify(fmt.Errorf("%w: mx1.fabrikam.com", mtasts.ErrNoSTARTTLS))
	fmt.Println(typ, reason)
	// Output:
	// validation-failure mx-not-allowed
	// starttls-not-supported starttls-not-offered
}
