#!/usr/bin/env bash
# The project's test command: formatting, vet, the race-enabled tests of every
# package, and a short run of each fuzz target. FUZZTIME=1000000x ./test.sh fuzzes longer.
set -euo pipefail
cd "$(dirname "$0")"

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 ./...

# A count, not a duration: with a duration, Go 1.26's fuzzing coordinator can
# report "context deadline exceeded" at the end of the run without having
# found anything (go.dev/issue/75804, fixed in Go 1.27).
fuzztime=${FUZZTIME:-100000x}
for target in $(go test -list '^Fuzz' . | grep '^Fuzz'); do
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" .
done

# examples/sender is a module of its own: its tests need an SMTP server package
# that the library does not depend on.
(cd examples/sender && go vet ./... && go test -race -count=1 ./...)

# rediscache is a module of its own (the Redis client); its tests start
# redis-server on loopback.
(cd rediscache && go vet ./... && go test -race -count=1 ./...)

# examples/postfix-policyd is a module of its own (Prometheus client, YAML);
# its tests drive a real postmap against the daemon.
(cd examples/postfix-policyd && go vet ./... && go test -race -count=1 ./... &&
	go test -run '^$' -fuzz '^FuzzRequest$' -fuzztime "$fuzztime" .)
