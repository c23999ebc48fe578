package rediscache_test

import (
	"context"
	"log"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/rediscache"
)

// readmeFleet is the code block of the repository README's "Running a
// fleet", word for word, so that it compiles. It is not run: it names a
// Redis that tests do not have; the fleet tests run the same configuration.
func readmeFleet(ctx context.Context) {
	client := redis.NewClient(&redis.Options{Addr: "redis.internal:6379"}) // or NewFailoverClient, NewClusterClient
	r := &mtasts.Resolver{
		Cache:      rediscache.New(client, nil), // keys under "mtasts:"
		MaxEntries: 200_000,                     // memory per MTA; Redis holds the rest
		OnError:    func(domain string, err error) { log.Printf("MTA-STS %s: %v", domain, err) },
	}
	go r.Run(ctx)
}

func TestREADMEFleetBlock(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Running a fleet\n")
	require.True(t, ok, "README.md has no section \"Running a fleet\"")
	_, block, ok := strings.Cut(section, "\n```go\n")
	require.True(t, ok, "no Go block in \"Running a fleet\"")
	block, _, ok = strings.Cut(block, "\n```\n")
	require.True(t, ok)

	src, err := os.ReadFile("readme_test.go")
	require.NoError(t, err)
	_, body, ok := strings.Cut(string(src), "func readmeFleet(ctx context.Context) {\n")
	require.True(t, ok)
	body, _, ok = strings.Cut(body, "\n}\n")
	require.True(t, ok)
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	assert.Equal(t, strings.Join(lines, "\n"), block)
}
