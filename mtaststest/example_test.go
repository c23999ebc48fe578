package mtaststest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// A test publishes a policy, looks it up through a Resolver wired to the
// Server, then breaks the policy host and looks again with a new Resolver.
func Example() {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("example.com", "20240101", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")

	ctx := context.Background()
	p, err := ts.Resolver().Lookup(ctx, "example.com")
	if err != nil {
		fmt.Println("lookup:", err)
		return
	}
	fmt.Println("mode:", p.Mode)
	fmt.Println("mx.example.com allowed:", p.Validate("mx.example.com") == nil)
	fmt.Println("mx.attacker.example refused:", errors.Is(p.Validate("mx.attacker.example"), mtasts.ErrMXNotAllowed))

	ts.SetPolicyFault("example.com", mtaststest.PolicyCertExpired)
	_, err = ts.Resolver().Lookup(ctx, "example.com")
	fmt.Println("expired certificate is a WebPKI failure:", errors.Is(err, mtasts.ErrWebPKI))
	fmt.Println("policy fetches:", ts.PolicyFetchesFor("example.com"))

	// Output:
	// mode: enforce
	// mx.example.com allowed: true
	// mx.attacker.example refused: true
	// expired certificate is a WebPKI failure: true
	// policy fetches: 1
}
