package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// The whole sending flow of RFC 8461 §5.1 for one message: look up the
// policy, try the MX hosts in order of preference, check each against the
// policy, STARTTLS with the configuration TLSConfig gives, and report each
// failure; Classify gives its RFC 8460 result type. Under enforce a failing
// MX is skipped; under testing the message goes on and the failure is only
// reported. If no MX takes the message, defer it: never bounce it because of
// MTA-STS.
func Example_sender() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const domain = "fabrikam.com"
	// report would feed a TLSRPT collector; with no policy, RFC 8460
	// reports failures under the policy type no-policy-found.
	report := func(mx string, err error) {
		typ, reason := mtasts.Classify(err)
		log.Printf("TLSRPT %s MX %q: %s (%s): %v", domain, mx, typ, reason, err)
	}

	var r mtasts.Resolver // keep one per process: it is the policy cache
	p, err := r.Lookup(ctx, domain)
	if err != nil {
		report("", err) // no policy to be had: deliver as without one
	}
	mxs, err := net.DefaultResolver.LookupMX(ctx, domain+".")
	if err != nil {
		log.Fatalf("451 4.4.3 MX lookup: %v", err) // try again later
	}
	for _, rec := range mxs {
		mx := strings.TrimSuffix(rec.Host, ".")
		if err := p.CheckMX(mx); err != nil {
			report(mx, err) // this MX is not in the policy
			if p.Validate(mx) != nil {
				continue // enforce: skip it; testing: use it anyway
			}
		}
		c, err := smtp.Dial(net.JoinHostPort(mx, "25"))
		if err != nil {
			continue
		}
		cfg, check := p.TLSConfig(mx, nil)
		if ok, _ := c.Extension("STARTTLS"); !ok {
			report(mx, fmt.Errorf("%w: %s", mtasts.ErrNoSTARTTLS, mx))
			if check.Mode() == mtasts.ModeEnforce {
				c.Close()
				continue // RFC 8461 §5.1: try the next MX
			}
		} else if err := c.StartTLS(cfg); err != nil {
			report(mx, err) // under enforce, a certificate not valid for mx
			c.Close()
			continue
		} else if err := check.Err(); err != nil {
			report(mx, err) // testing: deliver, but report the certificate
		}
		// c.Mail, c.Rcpt, c.Data and c.Quit as usual.
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
			err = fmt.Errorf("%w: %w", mtasts.ErrNoSTARTTLS, err)
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
