package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the daemon's configuration: the YAML file of
// postfix-mta-sts-resolver's mta-sts-daemon, read as it reads it, with a few
// options of ours (nameservers, dane, metrics, and tlsrpt in a zone).
type Config struct {
	Host      string // TCP listener address; "" when only Path is served
	Port      int
	Path      string      // unix socket; when set, TCP is served only if host or port is given too
	Mode      os.FileMode // of the unix socket; 0: left as the umask makes it
	ReusePort bool        // SO_REUSEPORT on the TCP listener

	ShutdownTimeout time.Duration // how long in-flight requests are waited for on shutdown
	CacheGrace      time.Duration // least time between two DNS checks of a cached domain

	Refresh     bool          // proactive_policy_fetching.enabled (default: on, see load)
	RefreshSet  bool          // the file says whether
	RefreshInt  time.Duration // proactive_policy_fetching.interval
	RefreshConc int           // proactive_policy_fetching.concurrency_limit

	CacheType string // internal, sqlite or redis
	CacheSize int    // internal: cache_size; 0 for the library's default
	CacheFile string // sqlite: filename
	RedisURL  string // redis: url
	RedisPool int    // redis: max_connections; 0 for the client's default
	// redis: socket_timeout and socket_connect_timeout, for the client's
	// reads and writes and its dials; 0 for the client's defaults.
	RedisIOTimeout, RedisDialTimeout time.Duration
	DefaultZ                         Zone
	Zones                            map[string]*Zone
	DANE                             bool     // check for DANE before MTA-STS (ours; default true)
	Nameserver                       []string // DNS servers, "host:port" (ours; default: /etc/resolv.conf)
	Metrics                          string   // HTTP listener for /metrics, /healthz, /inspect, /purge (ours)
}

// Zone is the per-socketmap-name configuration: "postfix" in
// socketmap:inet:127.0.0.1:8461:postfix is a zone name; names not listed use
// default_zone.
type Zone struct {
	StrictTesting bool          // answer testing policies as enforced ones
	RequireSNI    bool          // add servername=hostname
	Timeout       time.Duration // budget of one request
	TLSRPT        bool          // add Postfix 3.10 TLSRPT attributes (ours)
}

// Defaults of mta-sts-daemon, kept so that a file that leaves an option out
// means what it meant there.
const (
	defaultHost            = "127.0.0.1"
	defaultPort            = 8461
	defaultShutdownTimeout = 20 * time.Second
	defaultCacheGrace      = 60 * time.Second
	defaultTimeout         = 4 * time.Second
	defaultRefreshInterval = 24 * time.Hour
)

func defaultZone() Zone {
	return Zone{RequireSNI: true, Timeout: defaultTimeout}
}

// loadConfig reads the file at path. It returns the configuration and a
// warning for every option it does not use, or uses differently from
// mta-sts-daemon; an option of the wrong type is an error.
func loadConfig(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return parseConfig(data)
}

// parseConfig parses a configuration file's contents; see loadConfig.
func parseConfig(data []byte) (*Config, []string, error) {
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	p := &cfgParser{}
	c := p.config(section{m: root})
	if p.err != nil {
		return nil, nil, p.err
	}
	sort.Strings(p.warnings)
	return c, p.warnings, nil
}

// cfgParser reads a decoded YAML tree, noting the first type error and a
// warning for each key left unread.
type cfgParser struct {
	err      error
	warnings []string
}

// section is one mapping of the file; path is where it is, for messages.
type section struct {
	path string
	m    map[string]any
	read map[string]bool
}

func (s *section) get(key string) (any, bool) {
	if s.read == nil {
		s.read = map[string]bool{}
	}
	s.read[key] = true
	v, ok := s.m[key]
	return v, ok && v != nil
}

func (s *section) name(key string) string {
	if s.path == "" {
		return key
	}
	return s.path + "." + key
}

// done warns about every key of s that was not read.
func (p *cfgParser) done(s *section) {
	for k := range s.m {
		if !s.read[k] {
			p.warnings = append(p.warnings, fmt.Sprintf("unknown option %s: ignored", s.name(k)))
		}
	}
}

func (p *cfgParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("config: "+format, args...)
	}
}

func (p *cfgParser) str(s *section, key, def string) string {
	v, ok := s.get(key)
	if !ok {
		return def
	}
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	}
	p.fail("%s: want a string, have %v", s.name(key), v)
	return def
}

func (p *cfgParser) boolean(s *section, key string, def bool) bool {
	v, ok := s.get(key)
	if !ok {
		return def
	}
	b, isBool := v.(bool)
	if !isBool {
		p.fail("%s: want true or false, have %v", s.name(key), v)
		return def
	}
	return b
}

func (p *cfgParser) integer(s *section, key string, def int) int {
	v, ok := s.get(key)
	if !ok {
		return def
	}
	n, isInt := v.(int)
	if !isInt {
		p.fail("%s: want an integer, have %v", s.name(key), v)
		return def
	}
	return n
}

// seconds reads a number of seconds, integer or not.
func (p *cfgParser) seconds(s *section, key string, def time.Duration) time.Duration {
	v, ok := s.get(key)
	if !ok {
		return def
	}
	var f float64
	switch v := v.(type) {
	case int:
		f = float64(v)
	case float64:
		f = v
	default:
		p.fail("%s: want a number of seconds, have %v", s.name(key), v)
		return def
	}
	if f < 0 || math.IsNaN(f) || f > 1e9 {
		p.fail("%s: %v seconds is out of range", s.name(key), v)
		return def
	}
	return time.Duration(f * float64(time.Second))
}

func (p *cfgParser) sub(s *section, key string) section {
	v, ok := s.get(key)
	if !ok {
		return section{path: s.name(key)}
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		p.fail("%s: want a mapping, have %v", s.name(key), v)
	}
	return section{path: s.name(key), m: m}
}

func (p *cfgParser) config(root section) *Config {
	c := &Config{Zones: map[string]*Zone{}, DANE: true}
	c.Path = p.str(&root, "path", "")
	_, hostSet := root.get("host")
	_, portSet := root.get("port")
	if c.Path == "" || hostSet || portSet {
		c.Host = p.str(&root, "host", defaultHost)
		c.Port = p.integer(&root, "port", defaultPort)
		if c.Port < 0 || c.Port > 65535 {
			p.fail("port %d out of range", c.Port)
		}
	}
	if mode, ok := root.get("mode"); ok {
		// YAML 1.1 reads 0666 as octal, as mta-sts-daemon does.
		switch m := mode.(type) {
		case int:
			c.Mode = os.FileMode(m) & os.ModePerm
		case string:
			n, err := strconv.ParseUint(strings.TrimPrefix(m, "0o"), 8, 32)
			if err != nil {
				p.fail("mode: %v", err)
			}
			c.Mode = os.FileMode(n) & os.ModePerm
		default:
			p.fail("mode: want a file mode such as 0666, have %v", mode)
		}
	}
	c.ReusePort = p.boolean(&root, "reuse_port", true)
	c.ShutdownTimeout = p.seconds(&root, "shutdown_timeout", defaultShutdownTimeout)
	c.CacheGrace = p.seconds(&root, "cache_grace", defaultCacheGrace)

	pf := p.sub(&root, "proactive_policy_fetching")
	if _, ok := pf.get("enabled"); ok {
		c.RefreshSet = true
	}
	c.Refresh = p.boolean(&pf, "enabled", true)
	c.RefreshInt = p.seconds(&pf, "interval", defaultRefreshInterval)
	c.RefreshConc = p.integer(&pf, "concurrency_limit", 0)
	if _, ok := pf.get("grace_ratio"); ok {
		p.warnings = append(p.warnings, "proactive_policy_fetching.grace_ratio: not used; a policy is fetched again every interval, and at most half its max_age after its last fetch")
	}
	p.done(&pf)

	cache := p.sub(&root, "cache")
	c.CacheType = p.str(&cache, "type", "internal")
	opts := p.sub(&cache, "options")
	switch c.CacheType {
	case "internal":
		c.CacheSize = p.integer(&opts, "cache_size", 0)
	case "sqlite":
		c.CacheFile = p.str(&opts, "filename", "")
		if c.CacheFile == "" {
			p.fail("cache.options.filename: required with cache type sqlite")
		}
		for _, k := range []string{"threads", "timeout"} {
			if _, ok := opts.get(k); ok {
				p.warnings = append(p.warnings, "cache.options."+k+": not used by the directory cache that serves type sqlite")
			}
		}
	case "redis":
		c.RedisURL = p.str(&opts, "url", "redis://localhost")
		c.RedisPool = p.integer(&opts, "max_connections", 0)
		c.RedisIOTimeout = p.seconds(&opts, "socket_timeout", 0)
		c.RedisDialTimeout = p.seconds(&opts, "socket_connect_timeout", 0)
		for k := range opts.m {
			switch k {
			case "url", "max_connections", "socket_timeout", "socket_connect_timeout":
			default:
				opts.get(k)
				p.warnings = append(p.warnings, "cache.options."+k+
					": not used by the redis cache (url, max_connections, socket_timeout and socket_connect_timeout are)")
			}
		}
	default:
		p.fail("cache.type %q: want internal, sqlite or redis", c.CacheType)
	}
	p.done(&opts)
	p.done(&cache)

	dz := p.sub(&root, "default_zone")
	c.DefaultZ = p.zone(&dz)
	zones := p.sub(&root, "zones")
	for name := range zones.m {
		z := p.sub(&zones, name)
		zc := p.zone(&z)
		c.Zones[name] = &zc
	}

	c.DANE = p.boolean(&root, "dane", true)
	if ns, ok := root.get("nameservers"); ok {
		list, isList := ns.([]any)
		if !isList {
			p.fail("nameservers: want a list of host:port, have %v", ns)
		}
		for _, v := range list {
			s, isStr := v.(string)
			if !isStr {
				p.fail("nameservers: want host:port, have %v", v)
				continue
			}
			c.Nameserver = append(c.Nameserver, withPort(s, "53"))
		}
	}
	c.Metrics = p.str(&root, "metrics", "")
	p.done(&root)
	return c
}

func (p *cfgParser) zone(s *section) Zone {
	z := defaultZone()
	z.StrictTesting = p.boolean(s, "strict_testing", z.StrictTesting)
	z.RequireSNI = p.boolean(s, "require_sni", z.RequireSNI)
	z.Timeout = p.seconds(s, "timeout", z.Timeout)
	if z.Timeout == 0 {
		z.Timeout = defaultTimeout
	}
	z.TLSRPT = p.boolean(s, "tlsrpt", false)
	p.done(s)
	return z
}

// withPort adds port to a host that has none; IPv6 addresses may be bare.
func withPort(s, port string) string {
	if strings.HasPrefix(s, "[") && strings.Contains(s, "]:") {
		return s
	}
	if strings.Count(s, ":") == 1 {
		return s
	}
	if strings.Contains(s, ":") {
		return "[" + s + "]:" + port
	}
	return s + ":" + port
}

// zone returns the configuration of the socketmap name.
func (c *Config) zone(name string) *Zone {
	if z, ok := c.Zones[name]; ok {
		return z
	}
	return &c.DefaultZ
}
