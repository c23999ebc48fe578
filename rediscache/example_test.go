package rediscache_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

// Each MTA of a fleet runs a Resolver whose Cache is the fleet's Redis. The
// example needs a Redis server, so it is compiled but not run (it has no
// Output comment); the package's tests run the same code against a
// redis-server of their own.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// A single node; redis.NewFailoverClient (Sentinel) and
	// redis.NewClusterClient work the same way.
	client := redis.NewClient(&redis.Options{Addr: "redis.internal:6379"})
	defer client.Close()

	r := &mtasts.Resolver{
		Cache: rediscache.New(client, nil), // keys under "mtasts:"
		OnError: func(domain string, err error) {
			log.Printf("MTA-STS %s: %v", domain, err) // Redis failures too
		},
	}
	go r.Run(ctx) // refreshes the fleet's policies, about once a day each

	p, err := r.Lookup(ctx, "fabrikam.com")
	if err != nil {
		log.Printf("MTA-STS: %v", err) // deliver as without MTA-STS, and report
	}
	if err := p.Validate("mx.fabrikam.com"); err != nil {
		log.Printf("MTA-STS forbids this MX: %v", err)
	}
}

// Options, for a Redis shared with other programs or other fleets.
func ExampleNew_options() {
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{"redis-1.internal:6379", "redis-2.internal:6379", "redis-3.internal:6379"},
	})
	cache := rediscache.New(client, &rediscache.Options{
		Prefix:  "mail:mtasts:", // policies under mail:mtasts:policy:<domain>
		Timeout: 100 * time.Millisecond,
		Grace:   7 * 24 * time.Hour,
	})
	_ = &mtasts.Resolver{Cache: cache}
}
