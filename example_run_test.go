package mtasts_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// A long-running sender runs the Resolver's refresher beside its delivery
// loop, so that no cached policy lapses at a time an attacker can predict,
// and a new policy is learned even for a domain it seldom writes to. In
// production the Resolver also keeps what it learns on disk, bounds the
// memory it takes and logs what it does:
//
//	r := &mtasts.Resolver{
//		Cache:      mtasts.DirCache("/var/lib/mta-sts"), // survives restarts; Run refreshes what it holds
//		MaxEntries: 200_000,                             // past it, domains not looked up lately leave memory
//		Logger:     slog.Default(),
//	}
//	go r.Run(ctx) // refresh every cached policy about daily, and long before it expires
//
// Here a fake world on loopback and a Clock stand for the network and a day
// passing: fabrikam.com moves from testing to enforce, and Run, not a Lookup,
// fetches the new policy.
func ExampleResolver_Run() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "1", "version: STSv1\nmode: testing\nmx: mx.fabrikam.com\nmax_age: 86400\n")
	clock := mtaststest.NewClock(time.Now())
	r := world.Resolver()
	r.Now = clock.Now

	ctx, stop := context.WithCancel(context.Background())
	p, err := r.Lookup(ctx, "fabrikam.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("looked up:", p.ID, p.Mode)

	// Later that day the domain publishes an enforced policy, and no mail
	// goes there for 20 hours: past half the policy's max_age, Run fetches
	// it again.
	world.Publish("fabrikam.com", "2", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 86400\n")
	clock.Advance(20 * time.Hour)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }() // refreshes every cached policy about daily, until ctx ends

	// Wait for the refresh (Run looks at what is due as it starts).
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ce, _, _ := r.Inspect(ctx, "fabrikam.com"); ce.Policy != nil && ce.Policy.ID == "2" {
			break
		}
	}
	stop()
	fmt.Println("Run returned:", <-done)

	// The refreshed policy is in force for another max_age, whatever
	// happens to DNS and the policy host meanwhile.
	world.SetDNSFault("_mta-sts.fabrikam.com", mtaststest.DNSServFail)
	clock.Advance(23 * time.Hour)
	p, _ = r.Lookup(context.Background(), "fabrikam.com")
	fmt.Println("a day later, DNS blocked:", p.ID, p.Mode)
	s := r.Stats() // for a program to export, e.g. as Prometheus counters
	fmt.Printf("fetches %d, refreshes %d\n", s.Fetches, s.Refreshes)
	// Output:
	// looked up: 1 testing
	// Run returned: <nil>
	// a day later, DNS blocked: 2 enforce
	// fetches 2, refreshes 1
}

// An operator lists what a Resolver holds, and purges a domain that fixed a
// broken policy, so that the next Lookup fetches it at once rather than after
// the five-minute retry delay.
func ExampleResolver_Purge() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 86400\n")
	world.Publish("contoso.com", "1", "version: STSv1\nmode: enforce\nmx: mx.contoso.com\nmax_age: 86400\n")
	world.SetPolicyFault("contoso.com", mtaststest.PolicyServerError)

	r := world.Resolver()
	ctx := context.Background()
	r.Lookup(ctx, "fabrikam.com")
	r.Lookup(ctx, "contoso.com")
	for _, d := range []string{"contoso.com", "fabrikam.com"} {
		ce, _, _ := r.Inspect(ctx, d)
		if ce.Policy != nil {
			fmt.Printf("%s: id %s, mode %s, expires in %v\n", d, ce.Policy.ID, ce.Policy.Mode, time.Until(ce.Policy.Expires()).Round(time.Hour))
		} else {
			fmt.Printf("%s: no policy; last failure: %v\n", d, ce.LastFailure)
		}
	}

	// contoso.com fixes its policy host; the operator purges the domain.
	world.SetPolicyFault("contoso.com", mtaststest.PolicyOK)
	if err := r.Purge(ctx, "contoso.com"); err != nil {
		log.Fatal(err)
	}
	p, err := r.Lookup(ctx, "contoso.com")
	fmt.Println("contoso.com after purge:", p.Mode, err)
	// Output:
	// contoso.com: no policy; last failure: mtasts: policy fetch failed: mtasts: policy host status not 200: https://mta-sts.contoso.com/.well-known/mta-sts.txt: 500 Internal Server Error
	// fabrikam.com: id 1, mode enforce, expires in 24h0m0s
	// contoso.com after purge: enforce <nil>
}

// The Logger gets a record per policy fetched, changed or refreshed and per
// failure; Stats counts what the Resolver did, for a program to export.
func ExampleResolver_Stats() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.Publish("fabrikam.com", "1", "version: STSv1\nmode: enforce\nmx: mx.fabrikam.com\nmax_age: 86400\n")
	world.Publish("contoso.com", "1", "version: STSv1\nmode: enforce\nmx: mx.contoso.com\nmax_age: 86400\n")
	world.SetPolicyFault("contoso.com", mtaststest.PolicyNotFound)

	r := world.Resolver()
	r.Logger = slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "took" {
				return slog.Attr{} // vary from run to run
			}
			return a
		},
	}))
	ctx := context.Background()
	for _, d := range []string{"fabrikam.com", "fabrikam.com", "contoso.com", "example.net"} {
		r.Lookup(ctx, d)
	}
	s := r.Stats()
	fmt.Printf("lookups %d, from memory %d, fetches %d, fetch failures %d, domains %d, policies %d\n",
		s.Lookups, s.FromMemory, s.Fetches, s.FetchFailures, s.Entries, s.Policies)
	// Output:
	// level=INFO msg="mtasts: policy fetched" domain=fabrikam.com id=1 mode=enforce max_age=24h0m0s
	// level=WARN msg="mtasts: failure" domain=contoso.com error="mtasts: policy fetch failed: mtasts: policy host status not 200: https://mta-sts.contoso.com/.well-known/mta-sts.txt: 404 Not Found"
	// lookups 4, from memory 1, fetches 2, fetch failures 1, domains 3, policies 1
}
