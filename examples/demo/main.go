// Command demo plays, fully offline, the attack MTA-STS exists to stop.
//
// Contoso's mail server sends a message to bob@fabrikam.com. An attacker who
// can change DNS answers on the way rewrites fabrikam.com's MX record to
// mx.attacker.com. Without MTA-STS, Contoso delivers to the attacker. With an
// enforced policy listing fabrikam's real MX hosts, Contoso refuses the
// attacker's host. With a testing policy, Contoso delivers anyway but has a
// failure to report.
//
// DNS and the policy host are fakes on 127.0.0.1 (package mtaststest); no
// mail is sent. Run it with:
//
//	go run ./examples/demo
//
// It exits with status 1 if the library does not behave as described.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

const (
	domain     = "fabrikam.com"
	honestMX   = "mx.fabrikam.com"
	backupMX   = "relay.backup.fabrikam.com"
	attackerMX = "mx.attacker.com"
)

func policy(mode mtasts.Mode) string {
	return "version: STSv1\nmode: " + string(mode) + "\nmx: " + honestMX + "\nmx: *.backup." + domain + "\nmax_age: 604800\n"
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run plays the three scenes, writing what happens to w. It returns an error
// if the library does not behave as MTA-STS requires.
func run(w io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	world := mtaststest.NewServer()
	defer world.Close()

	// Contoso's MTA keeps one Resolver, and so one cache, for all its mail.
	// Its clock is moved on between scenes so that cached DNS answers expire
	// without the demo having to wait.
	clock := &clock{t: time.Now()}
	var (
		failuresMu sync.Mutex
		failures   []error
	)
	sts := world.Resolver()
	sts.Now = clock.now
	sts.OnError = func(domain string, err error) {
		failuresMu.Lock()
		defer failuresMu.Unlock()
		failures = append(failures, err)
	}
	contoso := &sender{out: w, world: world, sts: sts}

	fmt.Fprintf(w, "Contoso sends a message to bob@%s, whose MX is %s.\n", domain, honestMX)
	fmt.Fprintf(w, "An attacker rewrites the DNS answer for %s MX to %s.\n", domain, attackerMX)

	// Scene 1: no MTA-STS. The forged MX answer wins.
	fmt.Fprintf(w, "\n1. %s publishes no MTA-STS policy\n", domain)
	world.SetMX(domain, attackerMX)
	res, err := contoso.send(ctx)
	if err != nil {
		return err
	}
	if res.policy != nil || res.deliveredTo != attackerMX {
		return fmt.Errorf("scene 1: want no policy and delivery to %s, got policy %v and delivery to %q", attackerMX, res.policy, res.deliveredTo)
	}
	fmt.Fprintf(w, "   The attacker now has the message.\n")

	// Scene 2: an enforced policy. The forged MX is refused.
	clock.advance(time.Hour)
	fmt.Fprintf(w, "\n2. An hour later %s publishes an enforce policy (mx: %s, mx: *.backup.%s)\n", domain, honestMX, domain)
	world.Publish(domain, "20240601", policy(mtasts.ModeEnforce))
	res, err = contoso.send(ctx)
	if err != nil {
		return err
	}
	if res.policy == nil || res.policy.Mode != mtasts.ModeEnforce {
		return fmt.Errorf("scene 2: want an enforce policy, got %v", res.policy)
	}
	if res.deliveredTo != "" || len(res.refused) != 1 || !errors.Is(res.refused[0], mtasts.ErrMXNotAllowed) {
		return fmt.Errorf("scene 2: want %s refused with ErrMXNotAllowed, got delivery to %q and refusals %v", attackerMX, res.deliveredTo, res.refused)
	}
	fmt.Fprintf(w, "   No MX is allowed: the message stays queued.\n")

	fmt.Fprintf(w, "   The attacker gives up; DNS answers honestly again.\n")
	world.SetMX(domain, honestMX, backupMX)
	res, err = contoso.send(ctx)
	if err != nil {
		return err
	}
	if res.deliveredTo != honestMX {
		return fmt.Errorf("scene 2: want delivery to %s once DNS is honest, got %q", honestMX, res.deliveredTo)
	}

	// Scene 3: a testing policy. Delivery goes ahead; the mismatch is reported.
	clock.advance(time.Hour)
	fmt.Fprintf(w, "\n3. An hour later %s switches to a testing policy, and the attacker is back\n", domain)
	world.Publish(domain, "20240602", policy(mtasts.ModeTesting))
	world.SetMX(domain, attackerMX)
	res, err = contoso.send(ctx)
	if err != nil {
		return err
	}
	if res.policy == nil || res.policy.Mode != mtasts.ModeTesting {
		return fmt.Errorf("scene 3: want a testing policy, got %v", res.policy)
	}
	if res.deliveredTo != attackerMX || len(res.reports) != 1 {
		return fmt.Errorf("scene 3: want delivery to %s and one report, got delivery to %q and reports %q", attackerMX, res.deliveredTo, res.reports)
	}
	fmt.Fprintf(w, "   Testing mode never blocks delivery; the report tells %s's owner.\n", domain)

	failuresMu.Lock()
	defer failuresMu.Unlock()
	if len(failures) > 0 {
		return fmt.Errorf("unexpected MTA-STS failures: %w", errors.Join(failures...))
	}
	return nil
}

// sender is the part of Contoso's MTA that picks an MX for fabrikam.com.
type sender struct {
	out   io.Writer
	world *mtaststest.Server
	sts   *mtasts.Resolver
}

// result is what happened to one delivery attempt.
type result struct {
	policy      *mtasts.Policy
	deliveredTo string   // the MX the message went to, or "" if none was allowed
	refused     []error  // Validate's error for each MX refused
	reports     []string // TLSRPT failures a testing policy asks for
}

// send looks up the MX hosts and the MTA-STS policy of the domain, then walks
// the MX hosts in order of preference as RFC 8461 §5 says: under enforce, an
// MX that the policy does not list is skipped; under testing, it is used and
// the failure is reported.
func (s *sender) send(ctx context.Context) (result, error) {
	var res result
	mxs, err := s.world.NetResolver().LookupMX(ctx, domain+".")
	if err != nil {
		return res, fmt.Errorf("MX lookup: %w", err)
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	var hosts []string
	for _, mx := range mxs {
		hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
	}
	fmt.Fprintf(s.out, "   DNS: %s MX %s\n", domain, strings.Join(hosts, ", "))

	p, err := s.sts.Lookup(ctx, domain)
	if err != nil {
		// RFC 8461 §3.3: without a policy, deliver as usual; but this demo
		// publishes nothing broken, so a failure means something is wrong.
		return res, fmt.Errorf("MTA-STS lookup: %w", err)
	}
	res.policy = p
	if p == nil {
		fmt.Fprintf(s.out, "   MTA-STS: no policy\n")
	} else {
		fmt.Fprintf(s.out, "   MTA-STS: %s policy, id %s, mx %s\n", p.Mode, p.ID, strings.Join(p.MX, ", "))
	}

	for _, host := range hosts {
		if err := p.Validate(host); err != nil {
			fmt.Fprintf(s.out, "   Contoso refuses %s: %v\n", host, err)
			res.refused = append(res.refused, err)
			continue
		}
		if p != nil && p.Mode == mtasts.ModeTesting && !p.Match(host) {
			report := fmt.Sprintf("validation-failure: %s matches no mx pattern of %s's policy", host, domain)
			fmt.Fprintf(s.out, "   Contoso delivers to %s, and would report: %s\n", host, report)
			res.reports = append(res.reports, report)
		} else {
			// A real MTA would now connect, require STARTTLS and check that
			// the certificate is valid for host (RFC 8461 §4.2).
			fmt.Fprintf(s.out, "   Contoso delivers to %s\n", host)
		}
		res.deliveredTo = host
		return res, nil
	}
	return res, nil
}

// clock is a clock the demo moves on by hand.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
