package mtaststest_test

import (
	"context"
	"crypto/tls"
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

// A sender's test runs its own MX host on loopback with a certificate from a
// CA, here an expired one, and gives the sender the CA's Pool as its roots.
func ExampleCA() {
	ca := mtaststest.NewCA()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{ca.Issue("mx.example.com", mtaststest.CertExpired)},
	})
	if err != nil {
		fmt.Println("listen:", err)
		return
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.(*tls.Conn).Handshake()
	}()

	p := &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"mx.example.com"}}
	cfg, _ := p.TLSConfig("mx.example.com", &tls.Config{RootCAs: ca.Pool()})
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		conn.Close()
	}
	result, _ := mtasts.Classify(err)
	fmt.Println("STARTTLS to mx.example.com under enforce:", result)

	// Output:
	// STARTTLS to mx.example.com under enforce: certificate-expired
}
