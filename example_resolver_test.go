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
// each MX before connecting. The zero Resolver uses the system's name servers
// and certificate roots.
func ExampleResolver_Lookup() {
	var r mtasts.Resolver
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := r.Lookup(ctx, "fabrikam.com")
	if err != nil {
		// No policy could be had: deliver as without MTA-STS, and report.
		log.Printf("MTA-STS for fabrikam.com: %v", err)
	}
	for _, mx := range []string{"mx1.fabrikam.com", "mx2.fabrikam.com"} {
		if err := p.Validate(mx); err != nil {
			log.Printf("skipping %s: %v", mx, err)
			continue
		}
		// Connect to mx, STARTTLS, and require a certificate valid for mx.
	}
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
