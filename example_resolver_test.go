package mtasts_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// A sender looks up the recipient domain's policy once per message and checks
// each MX host before connecting. Lookup has three outcomes: a policy; no
// policy and no error, for a domain without one; or an error, when a policy
// could not be had, to deliver as without one and report. Here the domains
// are on a fake world on loopback; in production the zero Resolver, with the
// system's name servers and certificate roots, does the same.
func ExampleResolver_Lookup() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "1", "version: STSv1\nmode: enforce\nmx: mx1.fabrikam.com\nmax_age: 86400\n")
	world.Publish("northwind.example", "1", "version: STSv1\nmode: enforce\nmx: mx1.northwind.example\nmax_age: 86400\n")
	world.SetPolicyFault("northwind.example", mtaststest.PolicyCertExpired)

	r := world.Resolver() // in production: var r mtasts.Resolver, one per process
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, domain := range []string{"fabrikam.com", "contoso.com", "northwind.example"} {
		p, err := r.Lookup(ctx, domain)
		switch {
		case err != nil:
			// No policy could be had: deliver as without MTA-STS, and report.
			typ, reason := mtasts.Classify(err)
			fmt.Printf("%s: no policy to be had, report %s (%s)\n", domain, typ, reason)
		case p == nil:
			fmt.Printf("%s: no policy\n", domain)
		default:
			fmt.Printf("%s: %s policy\n", domain, p.Mode)
		}
		// A nil policy allows every MX host.
		for _, mx := range []string{"mx.attacker.com", "mx1." + domain} {
			if err := p.Validate(mx); err != nil {
				if errors.Is(err, mtasts.ErrMXNotAllowed) {
					fmt.Printf("  skip %s: not in the policy\n", mx)
				}
				continue
			}
			// Connect to mx, STARTTLS, and require a certificate valid for
			// mx: see Policy.TLSConfig.
			fmt.Printf("  try %s\n", mx)
		}
	}
	// Output:
	// fabrikam.com: enforce policy
	//   skip mx.attacker.com: not in the policy
	//   try mx1.fabrikam.com
	// contoso.com: no policy
	//   try mx.attacker.com
	//   try mx1.contoso.com
	// northwind.example: no policy to be had, report sts-webpki-invalid (certificate-expired)
	//   try mx.attacker.com
	//   try mx1.northwind.example
}

// A Resolver with a durable cache keeps enforcing what it learned across
// restarts, even while DNS and the policy host are down, and reports the
// failures that a cached policy hides.
func ExampleDirCache() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 604800\n")
	dir, err := os.MkdirTemp("", "mta-sts")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	r := world.Resolver()
	r.Cache = mtasts.DirCache(dir) // in production: "/var/lib/mta-sts"
	r.Lookup(context.Background(), "fabrikam.com")

	// The process restarts while an attacker blocks DNS and the policy host.
	world.SetDNSFault("_mta-sts.fabrikam.com", mtaststest.DNSServFail)
	world.SetPolicyFault("fabrikam.com", mtaststest.PolicyServerError)
	restarted := world.Resolver()
	restarted.Cache = mtasts.DirCache(dir)
	restarted.OnError = func(domain string, err error) {
		fmt.Println("reported:", errors.Is(err, mtasts.ErrDNSTemporary))
	}
	p, err := restarted.Lookup(context.Background(), "fabrikam.com")
	fmt.Println(p.Mode, err)
	fmt.Println("mx.attacker.com refused:", p.Validate("mx.attacker.com") != nil)
	// Output:
	// reported: true
	// enforce <nil>
	// mx.attacker.com refused: true
}

// The MX rewrite attack against a fake world on loopback: the enforced policy
// refuses the attacker's host.
func ExampleResolver_Lookup_enforce() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "20240601", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 86400\n")

	r := world.Resolver()
	p, err := r.Lookup(context.Background(), "fabrikam.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("mode:", p.Mode)
	fmt.Println("mx.fabrikam.com:", p.Validate("mx.fabrikam.com"))
	err = p.Validate("mx.attacker.com")
	fmt.Println("mx.attacker.com refused:", errors.Is(err, mtasts.ErrMXNotAllowed))
	// Output:
	// mode: enforce
	// mx.fabrikam.com: <nil>
	// mx.attacker.com refused: true
}
