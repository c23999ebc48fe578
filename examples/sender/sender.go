package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/seedc2a895ea/mtasts"
)

// A Sender delivers messages over SMTP to the MX hosts of the recipient's
// domain, applying the domain's MTA-STS policy as RFC 8461 §5.1 says. The
// zero value is ready to use, with the system's resolver, name servers and
// certificate roots.
//
// A Sender is safe for concurrent use by multiple goroutines. Its fields must
// not be changed after the first call to Send.
type Sender struct {
	// Hostname is the name the Sender gives in EHLO. If empty, "localhost".
	Hostname string

	// MX looks up the recipient domain's MX records. If nil,
	// net.DefaultResolver is used.
	MX *net.Resolver

	// STS finds the recipient domain's MTA-STS policy. If nil, a zero
	// mtasts.Resolver, made on first use, is used. Its OnError sees the
	// failures that a cached policy hides; report those as well.
	STS *mtasts.Resolver

	// Dial connects to an MX host; addr is "<MX host>:25". If nil, a
	// net.Dialer with a 30-second timeout is used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// RootCAs verifies the MX hosts' certificates under a policy. If nil, the
	// system roots are used.
	RootCAs *x509.CertPool

	// Report, if not nil, is called once for each session with an MX host
	// that met a failure RFC 8460 wants reported to the domain (TLSRPT), as it
	// happens, whether or not the message went there anyway (testing mode,
	// or a missing STARTTLS without a policy). A session that meets several
	// failures is reported with the first, in the order of validation: a
	// policy that could not be had (the session then runs as without one),
	// an MX host the policy does not list (RFC 8461 §4.1), then a missing or
	// refused STARTTLS or a certificate not valid for the MX host (§4.2). It
	// must not block.
	Report func(Failure)

	// Collector, if not nil, counts every session with an MX host for the
	// domain's TLSRPT reports (RFC 8460): each one Report sees, with its
	// failure, and each one that negotiated TLS without a failure, as a
	// success. A session is counted under the policy that applied, or as
	// no-policy-found. Set its SendingIP: an MX host the policy does not
	// list is refused before any connection, so the session has no local
	// address of its own. What the collector refuses is listed in
	// Delivery.Uncounted.
	Collector *mtasts.ReportCollector

	stsOnce     sync.Once // sets stsResolver
	stsResolver *mtasts.Resolver
}

// A Failure is one thing that went wrong with MTA-STS for a domain, with the
// RFC 8460 result type and reason code that Classify gives it.
type Failure struct {
	Domain string // the policy domain: the recipient's
	MX     string // the MX host of the session
	Result mtasts.ResultType
	Reason string
	Err    error
}

func (f Failure) String() string {
	where := f.Domain
	if f.MX != "" {
		where += " MX " + f.MX
	}
	return fmt.Sprintf("%s: %s (%s): %v", where, f.Result, f.Reason, f.Err)
}

// Delivery is what Send did: where the message went, under which policy,
// and the failures it reported on the way.
type Delivery struct {
	Domain   string
	Policy   *mtasts.Policy // the policy applied; nil if none
	MX       string         // the MX host that accepted the message; empty if none did
	TLS      bool           // whether the message went over TLS
	Failures []Failure      // as passed to Report, in order

	// Uncounted are the errors of the Collector's Add for the sessions it
	// refused, such as ErrCollectorConfig for an incomplete collector.
	Uncounted []error
}

// TempError means the message could not be delivered now: queue it and try
// again later (an SMTP 4xx; sendmail's EX_TEMPFAIL). Every MX host failing,
// whatever the policy, is a TempError: RFC 8461 §5.1 forbids failing a
// message for good because of MTA-STS, since the domain may publish a new
// policy meanwhile.
type TempError struct {
	Domain string
	Err    error // why each MX host failed, joined
}

func (e *TempError) Error() string {
	return fmt.Sprintf("451 4.4.0 temporary failure delivering to %s, try again later: %v", e.Domain, e.Err)
}

func (e *TempError) Unwrap() error { return e.Err }

// PermError means an MX host refused the message for good (a 5xx reply to
// MAIL, RCPT or DATA), or the domain accepts no mail (RFC 7505 null MX).
// Return the message to its sender.
type PermError struct {
	Domain string
	MX     string // empty for a null MX
	Err    error
}

func (e *PermError) Error() string {
	if e.MX == "" {
		return fmt.Sprintf("550 5.1.10 %s accepts no mail: %v", e.Domain, e.Err)
	}
	return fmt.Sprintf("550 5.0.0 %s (MX %s) refused the message: %v", e.Domain, e.MX, e.Err)
}

func (e *PermError) Unwrap() error { return e.Err }

// errNullMX is the cause of the PermError for a domain with a null MX.
var errNullMX = errors.New("null MX (RFC 7505)")

// Send delivers msg, a message with its header, from the address from to the
// address to. It looks up the policy of to's domain and its MX hosts, and
// tries them in order of preference:
//
//   - enforce: an MX host that the policy does not list, that does not offer
//     STARTTLS, or whose certificate is not valid for its name is skipped and
//     reported; the next is tried. If that leaves none, Send asks DNS for a
//     new policy at once and, if there is one, tries again under it.
//   - testing: every check is made and every failure reported, but the
//     message goes to the first MX host that takes it, over TLS when offered.
//   - none, no policy, or none to be had (reported): opportunistic TLS,
//     unverified, as senders did before MTA-STS; an MX host without STARTTLS
//     gets the message in plain text, and is reported.
//
// It returns a *TempError if no MX host took the message, and a *PermError if
// one refused it for good. The Delivery is never nil.
func (s *Sender) Send(ctx context.Context, from, to string, msg []byte) (*Delivery, error) {
	at := strings.LastIndexByte(to, '@')
	if at < 0 || at == len(to)-1 {
		return &Delivery{}, fmt.Errorf("recipient %q has no domain", to)
	}
	domain := strings.ToLower(strings.TrimSuffix(to[at+1:], "."))
	d := &Delivery{Domain: domain}

	// RFC 8461 §3.3, §5: with no policy to be had and nothing cached,
	// deliver as though the domain had none, and report the failure with
	// each session.
	p, lookupErr := s.sts().Lookup(ctx, domain)
	mxs, err := s.lookupMX(ctx, domain)
	if err != nil {
		var perm *PermError
		if errors.As(err, &perm) {
			return d, err
		}
		return d, &TempError{Domain: domain, Err: err}
	}

	errs, refused, err := s.tryAll(ctx, d, p, lookupErr, mxs, from, to, msg)
	if err != nil || d.MX != "" {
		return d, err
	}
	if refused {
		// RFC 8461 §5.1: before failing a message because of a policy,
		// check whether the domain has published a new one.
		np, rerr := s.sts().Refresh(ctx, domain)
		// A policy still in force comes back as the same *Policy.
		if rerr == nil && np != p {
			var more []error
			more, _, err = s.tryAll(ctx, d, np, nil, mxs, from, to, msg)
			if err != nil || d.MX != "" {
				return d, err
			}
			errs = append(errs, more...)
		}
	}
	return d, &TempError{Domain: domain, Err: errors.Join(errs...)}
}

// tryAll tries each MX host in turn under p until one takes the message,
// which it records in d; lookupErr is why there is no policy, if the lookup
// failed. It returns why the others failed, whether an enforced policy
// refused any of them, and a *PermError if one refused the message for good.
func (s *Sender) tryAll(ctx context.Context, d *Delivery, p *mtasts.Policy, lookupErr error, mxs []string, from, to string, msg []byte) (errs []error, refused bool, err error) {
	d.Policy = p
	for _, mx := range mxs {
		if err := ctx.Err(); err != nil {
			return append(errs, err), refused, nil
		}
		usedTLS, policyErr, err := s.tryMX(ctx, d, p, lookupErr, mx, from, to, msg)
		if err == nil {
			d.MX, d.TLS = mx, usedTLS
			return errs, refused, nil
		}
		var perm *PermError
		if errors.As(err, &perm) {
			return errs, refused, err
		}
		refused = refused || policyErr
		errs = append(errs, fmt.Errorf("MX %s: %w", mx, err))
	}
	return errs, refused, nil
}

// tryMX delivers to one MX host under p. It reports whether the message went
// over TLS and, on failure, whether the policy is why. It reports the session
// once, with the first failure it met.
func (s *Sender) tryMX(ctx context.Context, d *Delivery, p *mtasts.Policy, lookupErr error, mx, from, to string, msg []byte) (usedTLS, policyErr bool, err error) {
	// RFC 8461 §4.1, §5: under enforce, an MX host that matches none of the
	// policy's patterns is not used. Under testing it is, and reported with
	// the session, in place of any failure that follows.
	failure := cmp.Or(lookupErr, p.CheckMX(mx))
	if err := p.Validate(mx); err != nil {
		s.report(d, p, mx, nil, failure)
		return false, true, err
	}

	conn, err := s.dial(ctx, "tcp", net.JoinHostPort(mx, "25"))
	if err != nil {
		return false, false, err // no session: nothing to report
	}
	defer conn.Close()
	// net/smtp has no contexts: ctx ending ends the session through the
	// connection's deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c, err := smtp.NewClient(conn, mx)
	if err != nil {
		return false, false, err
	}
	defer c.Close()
	if err := c.Hello(s.hostname()); err != nil {
		return false, false, err
	}

	// Without a policy, or under none, TLSConfig gives opportunistic TLS,
	// which takes any certificate (RFC 7435); under testing and enforce it
	// verifies the certificate for mx.
	cfg, check := p.TLSConfig(mx, &tls.Config{RootCAs: s.RootCAs})
	enforce := check.Mode() == mtasts.ModeEnforce
	verify := enforce || check.Mode() == mtasts.ModeTesting
	var tlsErr error // what enforce refuses: no STARTTLS, or no valid certificate
	if ok, _ := c.Extension("STARTTLS"); !ok {
		// Under testing, or with no policy, deliver in plain text.
		tlsErr = fmt.Errorf("%w: %s", mtasts.ErrNoSTARTTLS, mx)
	} else if err := c.StartTLS(cfg); err != nil {
		var reply *textproto.Error
		if !errors.As(err, &reply) {
			// The handshake failed, which ends the session: under enforce,
			// because the certificate is not valid for mx.
			if verify {
				s.report(d, p, mx, conn, cmp.Or(failure, err))
			} else if failure != nil {
				s.report(d, p, mx, conn, failure)
			}
			return false, enforce, err
		}
		// The STARTTLS command itself failed (RFC 3207 §4: 454), and the
		// session is still usable in plain text.
		tlsErr = mtasts.STARTTLSRefused(fmt.Errorf("%s: %w", mx, err))
	} else {
		usedTLS = true
		tlsErr = check.Err() // testing: the message goes on over TLS
	}
	// Without a policy, or under none, a missing or refused STARTTLS is
	// reported too, but the message goes on in plain text. A nil failure
	// counts the session as a success.
	s.report(d, p, mx, conn, cmp.Or(failure, tlsErr))
	if enforce && tlsErr != nil {
		return false, true, tlsErr
	}

	if err := s.transfer(c, mx, d.Domain, from, to, msg); err != nil {
		return usedTLS, false, err
	}
	return usedTLS, false, nil
}

// transfer sends the envelope and message on an established session. A 5xx
// reply is a *PermError.
func (s *Sender) transfer(c *smtp.Client, mx, domain, from, to string, msg []byte) error {
	err := func() error {
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
		if _, err := w.Write(msg); err != nil {
			return err
		}
		return w.Close()
	}()
	if err != nil {
		var reply *textproto.Error
		if errors.As(err, &reply) && reply.Code >= 500 {
			return &PermError{Domain: domain, MX: mx, Err: err}
		}
		return err
	}
	c.Quit() // the message is accepted; a failed QUIT changes nothing
	return nil
}

// lookupMX returns the domain's MX hosts in order of preference, without
// trailing dots. A domain without MX records is its own MX (RFC 5321 §5.1).
func (s *Sender) lookupMX(ctx context.Context, domain string) ([]string, error) {
	r := s.MX
	if r == nil {
		r = net.DefaultResolver
	}
	// Fully qualified, so that no search domain is tried.
	recs, err := r.LookupMX(ctx, domain+".")
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return []string{domain}, nil
	case err != nil:
		return nil, err
	}
	// LookupMX sorts by preference, shuffling equal ones (RFC 5321 §5.1).
	var hosts []string
	for _, rec := range recs {
		host := strings.TrimSuffix(rec.Host, ".")
		if host == "" {
			if len(recs) == 1 {
				return nil, &PermError{Domain: domain, Err: errNullMX}
			}
			continue
		}
		hosts = append(hosts, host)
	}
	return hosts, nil
}

// report records one session with mx under p, which failed with err or, if
// err is nil, succeeded: a failure goes to Report and d.Failures, and either
// to the Collector. conn is the session's connection, nil if mx was refused
// before one.
func (s *Sender) report(d *Delivery, p *mtasts.Policy, mx string, conn net.Conn, err error) {
	if err != nil {
		typ, reason := mtasts.Classify(err)
		f := Failure{Domain: d.Domain, MX: mx, Result: typ, Reason: reason, Err: err}
		d.Failures = append(d.Failures, f)
		if s.Report != nil {
			s.Report(f)
		}
	}
	if s.Collector == nil {
		return
	}
	res := mtasts.SessionResult{Domain: d.Domain, Policy: p, Err: err, MXHost: mx}
	if conn != nil {
		res.SendingIP, res.ReceivingIP = addrOf(conn.LocalAddr()), addrOf(conn.RemoteAddr())
	}
	if err := s.Collector.Add(res); err != nil {
		d.Uncounted = append(d.Uncounted, fmt.Errorf("MX %s: %w", mx, err))
	}
}

// addrOf returns the IP address of a TCP address, or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func (s *Sender) sts() *mtasts.Resolver {
	s.stsOnce.Do(func() {
		s.stsResolver = s.STS
		if s.stsResolver == nil {
			s.stsResolver = &mtasts.Resolver{}
		}
	})
	return s.stsResolver
}

func (s *Sender) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, network, addr)
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	return d.DialContext(ctx, network, addr)
}

func (s *Sender) hostname() string {
	if s.Hostname != "" {
		return s.Hostname
	}
	return "localhost"
}
