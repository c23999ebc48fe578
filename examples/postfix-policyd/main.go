// Command postfix-policyd is an MTA-STS (RFC 8461) TLS policy server for
// Postfix: a socketmap server for smtp_tls_policy_maps, a drop-in for
// postfix-mta-sts-resolver's mta-sts-daemon that reads the same YAML file and
// sends the same replies, over the mtasts library.
//
//	smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix
//
// For an enforced policy it answers "OK secure match=mx1.example.com:.example.com
// servername=hostname"; NOTFOUND for no policy, mode none, and testing (unless
// the zone sets strict_testing); "OK dane-only" or "OK dane" when the next hop
// is protected by DANE, which MTA-STS must not override (RFC 8461 §2); TEMP
// when a DNS failure leaves that unknown. See README.md for the whole table.
//
// Usage:
//
//	postfix-policyd [-c /etc/mta-sts-daemon.yml] [-v info] [-l FILE] [-metrics ADDR] [-demo]
//	postfix-policyd [-c FILE] [-metrics ADDR] inspect DOMAIN...
//	postfix-policyd [-c FILE] [-metrics ADDR] purge DOMAIN...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/redis/go-redis/v9"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

const defaultConfig = "/etc/mta-sts-daemon.yml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command: it parses args, then serves until ctx is done, or runs
// inspect or purge. It returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("postfix-policyd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var config, verbosity, logfile, metrics string
	for _, name := range []string{"c", "config"} {
		flags.StringVar(&config, name, defaultConfig, "configuration `file` (mta-sts-daemon's YAML)")
	}
	for _, name := range []string{"v", "verbosity"} {
		flags.StringVar(&verbosity, name, "info", "log `level`: debug, info, warn, error, fatal")
	}
	for _, name := range []string{"l", "logfile"} {
		flags.StringVar(&logfile, name, "", "log to `file` instead of stderr")
	}
	flags.StringVar(&metrics, "metrics", "", "admin HTTP listener `host:port` for /metrics, /healthz, /inspect, /purge (overrides metrics in the file)")
	demo := flags.Bool("demo", false, "serve a loopback world of fake DNS and HTTPS instead of the network, to try the daemon offline")
	flags.Bool("disable-uvloop", false, "accepted for mta-sts-daemon's command line; no effect")
	if err := flags.Parse(args); err != nil {
		return 2
	}

	configSet := false
	flags.Visit(func(f *flag.Flag) { configSet = configSet || f.Name == "c" || f.Name == "config" })
	cfg, warnings, err := loadConfig(config)
	if *demo && !configSet {
		cfg, warnings, err = parseConfig(nil) // the demo does not touch the system's cache
	} else if errors.Is(err, os.ErrNotExist) && !configSet {
		cfg, warnings, err = parseConfig(nil) // mta-sts-daemon runs on defaults without a file
	}
	if err != nil {
		fmt.Fprintln(stderr, "postfix-policyd:", err)
		return 2
	}
	if metrics != "" {
		cfg.Metrics = metrics
	}

	if cmd := flags.Arg(0); cmd != "" {
		if (cmd != "inspect" && cmd != "purge") || flags.NArg() < 2 {
			fmt.Fprintln(stderr, "usage: postfix-policyd [-c FILE] [-metrics ADDR] inspect|purge DOMAIN...")
			return 2
		}
		if err := adminRequest(ctx, cfg.Metrics, cmd, flags.Args()[1:], stdout); err != nil {
			fmt.Fprintln(stderr, "postfix-policyd:", err)
			return 1
		}
		return 0
	}

	var level slog.Level
	switch verbosity {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	case "error", "fatal", "crit":
		level = slog.LevelError
	default:
		fmt.Fprintf(stderr, "postfix-policyd: -v %q: want debug, info, warn, error or fatal\n", verbosity)
		return 2
	}
	out := stderr
	if logfile != "" {
		f, err := os.OpenFile(logfile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			fmt.Fprintln(stderr, "postfix-policyd:", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	for _, w := range warnings {
		log.Warn("config: " + w)
	}

	var httpClient *http.Client
	if *demo {
		ts := demoWorld()
		defer ts.Close()
		cfg.Nameserver, httpClient = []string{ts.DNSAddr()}, ts.Client()
		demoHint(stderr, cfg)
	}
	inst, err := start(ctx, cfg, log, httpClient)
	if err != nil {
		log.Error("not started", "err", err)
		return 1
	}
	notify("READY=1")
	<-ctx.Done()
	notify("STOPPING=1")
	if !inst.shutdown() {
		return 1
	}
	return 0
}

// instance is a running daemon.
type instance struct {
	d       *daemon
	s       *server
	addrs   []net.Addr // socketmap listeners
	admin   *http.Server
	adminLn net.Listener
	stopRun context.CancelFunc
	wg      sync.WaitGroup
	cfg     *Config
	log     *slog.Logger
}

// start makes the Resolver and the listeners that cfg says and serves them.
// httpClient, if not nil, fetches policies (tests give one that trusts their
// own authority).
func start(ctx context.Context, cfg *Config, log *slog.Logger, httpClient *http.Client) (*instance, error) {
	cache, err := newCache(cfg, log)
	if err != nil {
		return nil, err
	}
	r := &mtasts.Resolver{
		Nameservers:        cfg.Nameserver,
		HTTPClient:         httpClient,
		Cache:              cache,
		Logger:             log,
		MinTXTTTL:          cfg.CacheGrace,
		MaxEntries:         cfg.CacheSize,
		RefreshInterval:    cfg.RefreshInt,
		RefreshConcurrency: cfg.RefreshConc,
	}
	d := &daemon{cfg: cfg, r: r, log: log}
	if cfg.DANE {
		servers := cfg.Nameserver
		if len(servers) == 0 {
			servers = systemNameservers()
		}
		d.dane = newDANEChecker(servers, max(cfg.CacheSize, mtasts.DefaultMaxEntries))
		log.Info("checking DANE before MTA-STS", "nameservers", servers)
	}
	lns, err := listen(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	in := &instance{d: d, s: newServer(d, log), cfg: cfg, log: log}
	if cfg.Metrics != "" {
		in.adminLn, err = net.Listen("tcp", cfg.Metrics)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		in.admin = &http.Server{Handler: adminHandler(d, in.s), ReadHeaderTimeout: 10 * time.Second}
		go in.admin.Serve(in.adminLn)
		log.Info("admin listener", "addr", in.adminLn.Addr().String())
	}
	for _, ln := range lns {
		in.addrs = append(in.addrs, ln.Addr())
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			if err := in.s.serve(ln); err != nil {
				log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
			}
		}()
		log.Info("serving socketmap", "network", ln.Addr().Network(), "addr", ln.Addr().String())
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	in.stopRun = stopRun
	if cfg.Refresh {
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			r.Run(runCtx)
		}()
	} else {
		log.Warn("proactive_policy_fetching.enabled is false: cached policies are not fetched again before they expire (RFC 8461 §10.2)")
	}
	return in, nil
}

// shutdown stops serving: the requests sent so far are answered within
// shutdown_timeout. It reports whether they all were.
func (in *instance) shutdown() bool {
	in.log.Info("shutting down", "timeout", in.cfg.ShutdownTimeout)
	ok := in.s.shutdown(in.cfg.ShutdownTimeout)
	if !ok {
		in.log.Warn("shutdown timeout: closed connections with requests under way")
	}
	in.stopRun()
	if in.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		in.admin.Shutdown(ctx)
		cancel()
	}
	in.wg.Wait()
	in.log.Info("stopped")
	return ok
}

// newCache returns the durable cache the file asks for, nil for internal
// (memory only).
func newCache(cfg *Config, log *slog.Logger) (mtasts.Cache, error) {
	switch cfg.CacheType {
	case "internal", "":
		return nil, nil
	case "sqlite":
		dir := cfg.CacheFile + ".d"
		log.Info("cache type sqlite is served by a directory cache of our own, one file per domain; the sqlite file is not read",
			"sqlite_file", cfg.CacheFile, "directory", dir)
		return mtasts.DirCache(dir), nil
	case "redis":
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("cache.options.url: %w", err)
		}
		if cfg.RedisPool > 0 {
			opt.PoolSize = cfg.RedisPool
		}
		if cfg.RedisIOTimeout > 0 {
			opt.ReadTimeout, opt.WriteTimeout = cfg.RedisIOTimeout, cfg.RedisIOTimeout
		}
		if cfg.RedisDialTimeout > 0 {
			opt.DialTimeout = cfg.RedisDialTimeout
		}
		// Whatever these say, no request waits on Redis for more than
		// rediscache.DefaultTimeout: past it, the daemon answers without Redis.
		log.Info("cache type redis: policies, fetch leases and refreshes shared with every daemon on this Redis; "+
			"keys under "+rediscache.DefaultPrefix+", so entries that postfix-mta-sts-resolver wrote are not read",
			"addr", opt.Addr, "db", opt.DB)
		return rediscache.New(redis.NewClient(opt), nil), nil
	}
	return nil, fmt.Errorf("cache type %q unknown", cfg.CacheType)
}

// systemNameservers returns the name servers of /etc/resolv.conf, or the
// local resolver.
func systemNameservers() []string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return []string{"127.0.0.1:53"}
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out
}

// notify tells systemd the daemon's state when it runs the daemon with
// Type=notify (sd_notify(3)); it does nothing otherwise.
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
