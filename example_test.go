package mtasts_test

import (
	"errors"
	"fmt"

	"github.com/seedc2a895ea/mtasts"
)

func ExampleParsePolicy() {
	// The policy file of RFC 8461 §3.2, as served at
	// https://mta-sts.example.com/.well-known/mta-sts.txt.
	body := []byte("version: STSv1\r\n" +
		"mode: enforce\r\n" +
		"mx: mail.example.com\r\n" +
		"mx: *.example.net\r\n" +
		"mx: backupmx.example.com\r\n" +
		"max_age: 604800\r\n")

	p, err := mtasts.ParsePolicy(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("mode:", p.Mode)
	fmt.Println("max_age:", p.MaxAge)
	fmt.Println("mx:", p.MX)

	// A policy that breaks the grammar is refused, and the error says where.
	_, err = mtasts.ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: bücher.example\nmax_age: 86400\n"))
	fmt.Println(errors.Is(err, mtasts.ErrInvalidPolicy))
	fmt.Println(err)
	// Output:
	// mode: enforce
	// max_age: 168h0m0s
	// mx: [mail.example.com *.example.net backupmx.example.com]
	// true
	// mtasts: invalid policy: line 3 "mx: bücher.example": mx is not a host name or "*." and a domain, in A-labels
}

func ExampleParseRecord() {
	// The TXT record at _mta-sts.example.com, its strings joined.
	r, err := mtasts.ParseRecord("v=STSv1; id=20160831085700Z;")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("id:", r.ID)

	// Records of other kinds share the TXT name space; they are not MTA-STS.
	_, err = mtasts.ParseRecord("v=spf1 -all")
	fmt.Println(errors.Is(err, mtasts.ErrInvalidRecord))
	// Output:
	// id: 20160831085700Z
	// true
}

func ExamplePolicy_Match() {
	p := &mtasts.Policy{
		Mode: mtasts.ModeTesting,
		MX:   []string{"mail.example.com", "*.example.net"},
	}
	for _, host := range []string{
		"mail.example.com",
		"MAIL.EXAMPLE.COM.", // case and a trailing dot do not matter
		"mx1.example.net",   // "*" is one whole label
		"example.net",       // not the bare suffix
		"a.mx1.example.net", // nor two labels
		"mx.attacker.example",
	} {
		fmt.Printf("%-20s %v\n", host, p.Match(host))
	}
	// Output:
	// mail.example.com     true
	// MAIL.EXAMPLE.COM.    true
	// mx1.example.net      true
	// example.net          false
	// a.mx1.example.net    false
	// mx.attacker.example  false
}

func ExamplePolicy_Validate() {
	p, err := mtasts.ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: *.example.net\nmax_age: 86400\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	// Before connecting to each MX host, in order of preference.
	for _, mx := range []string{"mx.attacker.example", "mx1.example.net"} {
		if err := p.Validate(mx); err != nil {
			var mxErr *mtasts.MXError
			if errors.As(err, &mxErr) {
				fmt.Println("skip", mxErr.Host, "not in", mxErr.Patterns)
			}
			continue // treat as unreachable; try the next MX
		}
		fmt.Println("deliver to", mx)
		break
	}
	// Output:
	// skip mx.attacker.example not in [*.example.net]
	// deliver to mx1.example.net
}
