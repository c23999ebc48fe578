module github.com/seedc2a895ea/mtasts/examples/sender

go 1.26.0

require (
	github.com/emersion/go-smtp v0.25.1
	github.com/seedc2a895ea/mtasts v0.0.0
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	github.com/miekg/dns v1.1.73 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)

replace github.com/seedc2a895ea/mtasts => ../..
