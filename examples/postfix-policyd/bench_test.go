package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// BenchmarkAnswer is the daemon's work for one request on a warm cache,
// without the network: parsing, the DANE cache, the policy from memory and
// the reply.
func BenchmarkAnswer(b *testing.B) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	const domains = 100
	for i := range domains {
		d := fmt.Sprintf("e%d.example", i)
		ts.Publish(d, "1", "version: STSv1\nmode: enforce\nmx: mx1."+d+"\nmx: *."+d+"\nmax_age: 86400\n")
	}
	cfg, _, err := parseConfig([]byte(fmt.Sprintf("host: 127.0.0.1\nport: 0\nnameservers: [%q]\n", ts.DNSAddr())))
	require.NoError(b, err)
	in, err := start(context.Background(), cfg, discardLogger(), ts.Client())
	require.NoError(b, err)
	defer in.shutdown()
	reqs := make([][]byte, domains)
	out := make([]byte, 0, 512)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "postfix e%d.example", i)
		out = in.d.answer(reqs[i], out[:0])
		require.Contains(b, string(out), "OK secure")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		out = in.d.answer(reqs[i%domains], out[:0])
	}
}
