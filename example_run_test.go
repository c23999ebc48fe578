package mtasts_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// A long-running sender runs the Resolver's refresher beside its delivery
// loop, so that no cached policy lapses while its policy host is blocked,
// bounds the memory the cache takes, keeps what it learns on disk, and logs
// what the Resolver does.
func ExampleResolver_Run() {
	r := &mtasts.Resolver{
		Cache:      mtasts.DirCache("/var/lib/mta-sts"), // a restart keeps enforcing
		MaxEntries: 100_000,                             // past it, what Cache holds leaves memory
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go r.Run(ctx) // refreshes every cached policy about daily, until ctx ends

	// ... deliver mail with r.Lookup, as in the Lookup example ...

	// Export the counters, e.g. as Prometheus gauges and counters, every minute.
	for range time.Tick(time.Minute) {
		s := r.Stats()
		log.Printf("mta-sts: %d lookups, %d from memory, %d fetches, %d fetch failures, %d domains held",
			s.Lookups, s.FromMemory, s.Fetches, s.FetchFailures, s.Entries)
	}
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
