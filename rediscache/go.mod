module github.com/seedc2a895ea/mtasts/rediscache

go 1.26.0

replace github.com/seedc2a895ea/mtasts => ../

require (
	github.com/redis/go-redis/v9 v9.23.0
	github.com/seedc2a895ea/mtasts v0.0.0
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/miekg/dns v1.1.73 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
