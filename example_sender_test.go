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
	"github.com/seedc2a895ea/mtasts/mtaststest"
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
//
// Here fabrikam.com enforces a policy that lists mx1.fabrikam.com, and an
// attacker has put its own host first in the MX answer. The world is fake, on
// loopback: in production, use one zero mtasts.Resolver per process,
// net.DefaultResolver for the MX lookup, a net.Dialer to port 25, and the
// system roots (a nil base configuration).
func Example_sender() {
	world := mtaststest.NewServer()
	defer world.Close()
	const domain = "fabrikam.com"
	world.Publish(domain, "1", "version: STSv1\nmode: enforce\nmx: mx1.fabrikam.com\nmax_age: 86400\n")
	world.SetMX(domain, "mx.attacker.com", "mx1.fabrikam.com")
	attacker := world.StartMX("mx.attacker.com", mtaststest.CertGood, mtaststest.MXSTARTTLS)
	mx1 := world.StartMX("mx1.fabrikam.com", mtaststest.CertGood, mtaststest.MXSTARTTLS)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sendingIP := netip.MustParseAddr("127.0.0.1") // the address this MTA sends from
	collector := &mtasts.ReportCollector{OrganizationName: "Contoso", ContactInfo: "tlsrpt@contoso.com", Submitter: "mail.contoso.com"}
	// report counts one session, nil err for a success. A nil policy is
	// reported as no-policy-found, with the lookup's failure if there was one.
	report := func(p *mtasts.Policy, mx string, err error) {
		if err := collector.Add(mtasts.SessionResult{Domain: domain, Policy: p, Err: err,
			MXHost: mx, SendingIP: sendingIP}); err != nil {
			log.Print(err) // not a failure of the domain's: not reported
		}
	}

	r := world.Resolver()                         // keep one per process: it is the policy cache
	base := &tls.Config{RootCAs: world.RootCAs()} // the test CA signed the MX hosts' certificates
	// On failure, deliver as without a policy, and report the failure.
	p, lookupErr := r.Lookup(ctx, domain)
	mxs, err := world.NetResolver().LookupMX(ctx, domain+".")
	if err != nil {
		log.Fatalf("451 4.4.3 MX lookup: %v", err) // try again later
	}
	delivered := false
	for _, rec := range mxs {
		mx := strings.TrimSuffix(rec.Host, ".")
		// One session, one report: the first failure met wins.
		failure := cmp.Or(lookupErr, p.CheckMX(mx))
		if p.Validate(mx) != nil {
			fmt.Println("skipped", mx)
			report(p, mx, failure)
			continue // enforce: skip an MX the policy does not list
		}
		conn, err := world.DialMX(ctx, "tcp", net.JoinHostPort(mx, "25"))
		if err != nil {
			continue // no session: nothing to report
		}
		c, err := smtp.NewClient(conn, mx)
		if err != nil {
			conn.Close()
			continue
		}
		// Under no policy or none, opportunistic TLS: any certificate.
		cfg, check := p.TLSConfig(mx, base)
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
		// A failure from here on (the handshake's too) means trying the
		// next MX.
		if err := sendMail(c, "alice@contoso.com", "bob@fabrikam.com", "Subject: Hello\r\n\r\nHello, Bob.\r\n"); err != nil {
			c.Close()
			continue
		}
		fmt.Println("delivered to", mx)
		delivered = true
		break
	}
	if !delivered {
		fmt.Println("451 4.4.0 no MX host could be used; try again later")
	}

	// What each MX host received, and the day's report for fabrikam.com.
	for _, m := range []*mtaststest.MX{attacker, mx1} {
		for _, msg := range m.Messages() {
			fmt.Printf("%s received mail for %v, over TLS %v, SNI %s\n", m.Host, msg.To, msg.TLS, msg.ServerName)
		}
	}
	for _, rep := range collector.TakeAll() {
		for _, pr := range rep.Policies {
			fmt.Printf("report for %s (%s): %d successful, %d failed\n", pr.Policy.Domain, pr.Policy.Type,
				pr.Summary.TotalSuccessfulSessionCount, pr.Summary.TotalFailureSessionCount)
			for _, fd := range pr.FailureDetails {
				fmt.Printf("  %s %s: %s\n", fd.ReceivingMXHostname, fd.ResultType, fd.FailureReasonCode)
			}
		}
	}
	// Output:
	// skipped mx.attacker.com
	// delivered to mx1.fabrikam.com
	// mx1.fabrikam.com received mail for [bob@fabrikam.com], over TLS true, SNI mx1.fabrikam.com
	// report for fabrikam.com (sts): 1 successful, 1 failed
	//   mx.attacker.com validation-failure: mx-not-allowed
}

// sendMail sends one message on an SMTP session: MAIL, RCPT, DATA and QUIT.
func sendMail(c *smtp.Client, from, to, msg string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TLSConfig gives the *tls.Config for STARTTLS to one MX host under the
// policy; the TLSCheck tells, after the handshake, what a testing policy must
// report. Here mx1.fabrikam.com presents an expired certificate: under
// testing the message goes over TLS anyway and the failure is reported; under
// enforce the handshake fails, and the sender tries the next MX host.
func ExamplePolicy_TLSConfig() {
	world := mtaststest.NewServer()
	defer world.Close()
	mx := world.StartMX("mx1.fabrikam.com", mtaststest.CertExpired, mtaststest.MXSTARTTLS)
	ctx := context.Background()

	for _, mode := range []mtasts.Mode{mtasts.ModeTesting, mtasts.ModeEnforce} {
		p := &mtasts.Policy{Mode: mode, MX: []string{"*.fabrikam.com"}}
		conn, err := world.DialMX(ctx, "tcp", "mx1.fabrikam.com:25") // in production: a net.Dialer
		if err != nil {
			log.Fatal(err)
		}
		c, err := smtp.NewClient(conn, "mx1.fabrikam.com")
		if err != nil {
			log.Fatal(err)
		}
		// base carries the sender's own settings: client certificates,
		// roots (here the test CA; nil for the system roots)...
		cfg, check := p.TLSConfig("mx1.fabrikam.com.", &tls.Config{RootCAs: world.RootCAs()})
		if err := c.StartTLS(cfg); err != nil {
			var reply *textproto.Error
			if errors.As(err, &reply) {
				err = mtasts.STARTTLSRefused(err) // such as 454: TLS not available
			}
			typ, reason := mtasts.Classify(err)
			fmt.Printf("%s: handshake refused, report %s (%s); try the next MX\n", mode, typ, reason)
			c.Close()
			continue
		}
		if err := check.Err(); err != nil {
			typ, reason := mtasts.Classify(err)
			fmt.Printf("%s: deliver over TLS, and report %s (%s)\n", mode, typ, reason)
		}
		if err := sendMail(c, "alice@contoso.com", "bob@fabrikam.com", "Subject: Hello\r\n\r\nHello, Bob.\r\n"); err != nil {
			log.Fatal(err)
		}
	}
	for _, msg := range mx.Messages() {
		fmt.Println("mx1.fabrikam.com received one message, over TLS:", msg.TLS)
	}
	// Output:
	// testing: deliver over TLS, and report certificate-expired (certificate-expired)
	// enforce: handshake refused, report certificate-expired (certificate-expired); try the next MX
	// mx1.fabrikam.com received one message, over TLS: true
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
