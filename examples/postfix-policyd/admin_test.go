package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestAdmin: metrics count what was served, health says whether it serves,
// inspect shows a held policy and purge forgets it.
func TestAdmin(t *testing.T) {
	ts := mtaststest.NewServer()
	defer ts.Close()
	ts.Publish("enforce.example", "1", enforcePolicy)
	in := startDaemon(t, ts, "metrics: 127.0.0.1:0\n")
	base := "http://" + in.adminLn.Addr().String()

	assert.Equal(t, netstring("OK "+secureEnforce), rawExchangeOne(t, in.tcpAddr(), netstring("postfix enforce.example")))
	assert.Equal(t, netstring("NOTFOUND "), rawExchangeOne(t, in.tcpAddr(), netstring("postfix norecord.example")))

	code, body := get(t, "GET", base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`mtasts_policyd_replies_total{reply="secure"} 1`,
		`mtasts_policyd_replies_total{reply="notfound"} 1`,
		`mtasts_policyd_replies_total{reply="temp"} 0`,
		"mtasts_fetches_total 1",
		"mtasts_shared_total 0",
		"mtasts_policies 1",
		"mtasts_entries 2",
		"mtasts_policyd_connections_accepted_total 2",
		"go_goroutines ",
	} {
		assert.Contains(t, body, want)
	}
	assert.Regexp(t, `mtasts_policyd_dane_dns_queries_total [1-9]`, body)

	code, body = get(t, "GET", base+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)

	code, body = get(t, "GET", base+"/inspect?domain=Enforce.Example.")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "domain: enforce.example\ndane: none\nin memory: true\npolicy id: 1\n")
	assert.Contains(t, body, "  mode: enforce\n  mx: mx1.enforce.example\n")

	code, _ = get(t, "GET", base+"/purge?domain=enforce.example")
	assert.Equal(t, http.StatusMethodNotAllowed, code, "purge changes state: POST only")
	code, body = get(t, "POST", base+"/purge?domain=enforce.example")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "purged enforce.example\n", body)
	_, body = get(t, "GET", base+"/inspect?domain=enforce.example")
	assert.True(t, strings.HasSuffix(body, "dane: not cached\nmta-sts: nothing held\n"), body)

	// The next request fetches the policy again.
	assert.Equal(t, netstring("OK "+secureEnforce), rawExchangeOne(t, in.tcpAddr(), netstring("postfix enforce.example")))
	assert.Equal(t, 2, ts.PolicyFetchesFor("enforce.example"))

	code, _ = get(t, "GET", base+"/inspect?domain=192.0.2.1")
	assert.Equal(t, http.StatusBadRequest, code)

	in.s.shutdown(0)
	code, _ = get(t, "GET", base+"/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not serving once shut down")
}
