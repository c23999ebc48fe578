package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// demoWorld starts a fake DNS and HTTPS world on loopback with one domain for
// each row of the reply table, for -demo: the daemon then runs offline.
func demoWorld() *mtaststest.Server {
	ts := mtaststest.NewServer()
	enforce := func(d string) string {
		return "version: STSv1\nmode: enforce\nmx: mx1." + d + "\nmx: *." + d + "\nmax_age: 86400\n"
	}
	ts.Publish("enforce.example", "1", enforce("enforce.example"))
	ts.Publish("testing.example", "1", strings.Replace(enforce("testing.example"), "enforce\n", "testing\n", 1))
	ts.Publish("none.example", "1", "version: STSv1\nmode: none\nmax_age: 86400\n")
	ts.Publish("broken.example", "1", enforce("broken.example"))
	ts.SetPolicyFault("broken.example", mtaststest.PolicyCertExpired)
	ts.Publish("dane.example", "1", enforce("dane.example"))
	ts.SetSigned("dane.example", true)
	ts.SetMX("dane.example", "mx1.dane.example")
	ts.SetTLSA("_25._tcp.mx1.dane.example", "3 1 1 8d02536c887482bc34ff54e41d2ba659bf85b341a0a20afadb5813dcfbcf286d")
	ts.SetSigned("danefail.example", true)
	ts.SetMX("danefail.example", "mx1.danefail.example")
	ts.SetDNSFault("_25._tcp.mx1.danefail.example", mtaststest.DNSServFail)
	return ts
}

// demoDomains are the domains of demoWorld, for the hint printed at start.
var demoDomains = []string{"enforce.example", "testing.example", "none.example", "norecord.example",
	"broken.example", "dane.example", "danefail.example", "[192.0.2.1]:25"}

func demoHint(w io.Writer, cfg *Config) {
	table := "socketmap:inet:" + cfg.Host + ":" + fmt.Sprint(cfg.Port) + ":postfix"
	fmt.Fprintln(w, "postfix-policyd: -demo: a loopback world of fake DNS and HTTPS serves these domains; try:")
	for _, d := range demoDomains {
		fmt.Fprintf(w, "  postmap -q '%s' %s\n", d, table)
	}
}
