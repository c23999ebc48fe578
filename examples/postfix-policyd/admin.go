package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves /metrics (Prometheus), /healthz, /inspect?domain=D
// and, on POST, /purge?domain=D.
func adminHandler(d *daemon, s *server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{d: d, s: s})
	reg.MustRegister(
		// With the GC's runtime metrics: go_gc_heap_live_bytes is the heap
		// the cache really holds, whatever garbage waits for collection.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		closing, n := s.closing, len(s.listeners)
		s.mu.Unlock()
		if closing || n == 0 {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /inspect", func(w http.ResponseWriter, r *http.Request) {
		domain := r.URL.Query().Get("domain")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := d.inspect(r.Context(), w, domain); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("POST /purge", func(w http.ResponseWriter, r *http.Request) {
		domain := r.URL.Query().Get("domain")
		if err := d.purge(r.Context(), domain); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "purged %s\n", domain)
	})
	return mux
}

// inspect writes what the daemon holds for domain, without asking the
// network.
func (d *daemon) inspect(ctx context.Context, w io.Writer, domain string) error {
	dom, bracketed, ok := parseKey(domain)
	if !ok {
		return fmt.Errorf("%q has no policy: an address or a parent domain", domain)
	}
	ce, held, err := d.r.Inspect(ctx, dom)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "domain: %s\n", dom)
	if d.dane != nil {
		res, _ := d.dane.cached(dom, bracketed)
		fmt.Fprintf(w, "dane: %s\n", [...]string{"not cached", "none", "some MX hosts (dane)", "every MX host (dane-only)", "failed"}[res])
	}
	if !held {
		fmt.Fprintln(w, "mta-sts: nothing held")
		return nil
	}
	fmt.Fprintf(w, "in memory: %v\n", ce.InMemory)
	if p := ce.Policy; p != nil {
		fmt.Fprintf(w, "policy id: %s\nfetched: %s\nexpires: %s\n", p.ID, p.Fetched.UTC().Format(time.RFC3339), p.Expires().UTC().Format(time.RFC3339))
		for line := range strings.SplitSeq(strings.TrimSuffix(p.String(), "\n"), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	} else {
		fmt.Fprintln(w, "policy: none")
	}
	if ce.Err != nil {
		fmt.Fprintf(w, "answer: %v\n", ce.Err)
	}
	if ce.LastFailure != nil {
		fmt.Fprintf(w, "last failure: %s: %v\nretry after: %s\n", ce.FailedAt.UTC().Format(time.RFC3339), ce.LastFailure, ce.RetryAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// purge forgets domain: its policy, in memory and in the cache, any fetch
// failure, and its DANE answer.
func (d *daemon) purge(ctx context.Context, domain string) error {
	dom, _, ok := parseKey(domain)
	if !ok {
		return fmt.Errorf("%q has no policy: an address or a parent domain", domain)
	}
	if err := d.r.Purge(ctx, dom); err != nil {
		return err
	}
	if d.dane != nil {
		d.dane.forget(dom)
	}
	d.log.Info("purged", "domain", dom)
	return nil
}

// adminRequest runs "inspect" or "purge" for each domain against a running
// daemon's admin listener.
func adminRequest(ctx context.Context, addr, cmd string, domains []string, out io.Writer) error {
	if addr == "" {
		return fmt.Errorf("%s needs the daemon's admin listener: set metrics in the file, or -metrics", cmd)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, dom := range domains {
		u := "http://" + addr + "/" + cmd + "?domain=" + url.QueryEscape(dom)
		method := http.MethodGet
		if cmd == "purge" {
			method = http.MethodPost
		}
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s", cmd, dom, strings.TrimSpace(string(body)))
		}
		out.Write(body)
	}
	return nil
}

// collector exports the daemon's counters and the Resolver's Stats.
type collector struct {
	d *daemon
	s *server
}

var (
	descReplies   = prometheus.NewDesc("mtasts_policyd_replies_total", "Socketmap replies sent, by kind.", []string{"reply"}, nil)
	descConns     = prometheus.NewDesc("mtasts_policyd_connections", "Socketmap connections open.", nil, nil)
	descAccepted  = prometheus.NewDesc("mtasts_policyd_connections_accepted_total", "Socketmap connections accepted.", nil, nil)
	descDropped   = prometheus.NewDesc("mtasts_policyd_connections_dropped_total", "Connections closed because of a malformed or oversized request.", nil, nil)
	descDANEQ     = prometheus.NewDesc("mtasts_policyd_dane_dns_queries_total", "DNS queries sent to check for DANE.", nil, nil)
	descDANECache = prometheus.NewDesc("mtasts_policyd_dane_cached", "Next hops whose DANE answer is cached.", nil, nil)

	descLookups    = prometheus.NewDesc("mtasts_lookups_total", "Policy lookups.", nil, nil)
	descFromMemory = prometheus.NewDesc("mtasts_lookups_from_memory_total", "Policy lookups answered from memory.", nil, nil)
	descDNSQueries = prometheus.NewDesc("mtasts_dns_queries_total", "DNS queries sent for MTA-STS records.", nil, nil)
	descFetches    = prometheus.NewDesc("mtasts_fetches_total", "Policy fetches started.", nil, nil)
	descShared     = prometheus.NewDesc("mtasts_shared_total", "Policies taken from the shared cache that another daemon fetched.", nil, nil)
	descRefreshes  = prometheus.NewDesc("mtasts_refreshes_total", "Policies fetched again ahead of expiry.", nil, nil)
	descRefreshErr = prometheus.NewDesc("mtasts_refresh_failures_total", "Refresh fetches that failed.", nil, nil)
	descFailures   = prometheus.NewDesc("mtasts_failures_total", "Failures met, by kind.", []string{"kind"}, nil)
	descEvictions  = prometheus.NewDesc("mtasts_evictions_total", "Domains that left memory because of the size bound.", nil, nil)
	descEntries    = prometheus.NewDesc("mtasts_entries", "Domains held in memory.", nil, nil)
	descPolicies   = prometheus.NewDesc("mtasts_policies", "Domains held in memory with a policy.", nil, nil)
	descUnderWay   = prometheus.NewDesc("mtasts_lookups_under_way", "Domains whose lookup is under way.", nil, nil)
	descFailing    = prometheus.NewDesc("mtasts_failing_domains", "Domains whose last fetch failed.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	for i := range c.d.replies {
		counter(descReplies, c.d.replies[i].Load(), replyNames[i])
	}
	gauge(descConns, c.s.connections())
	counter(descAccepted, c.s.served.Load())
	counter(descDropped, c.s.dropped.Load())
	if c.d.dane != nil {
		counter(descDANEQ, c.d.dane.queries.Load())
		gauge(descDANECache, c.d.dane.entries())
	}
	st := c.d.r.Stats()
	counter(descLookups, st.Lookups)
	counter(descFromMemory, st.FromMemory)
	counter(descDNSQueries, st.DNSQueries)
	counter(descFetches, st.Fetches)
	counter(descShared, st.Shared)
	counter(descRefreshes, st.Refreshes)
	counter(descRefreshErr, st.RefreshFailures)
	counter(descFailures, st.DNSFailures, "dns")
	counter(descFailures, st.RecordFailures, "record")
	counter(descFailures, st.FetchFailures, "fetch")
	counter(descFailures, st.PolicyFailures, "policy")
	counter(descFailures, st.CacheFailures, "cache")
	counter(descFailures, st.OtherFailures, "other")
	counter(descEvictions, st.Evictions)
	gauge(descEntries, st.Entries)
	gauge(descPolicies, st.Policies)
	gauge(descUnderWay, st.LookupsUnderWay)
	gauge(descFailing, st.FailuresInMemory)
}
