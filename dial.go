package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// dialDelay is how long a connection attempt to one of the policy host's
// addresses is given before the next address is tried as well: the
// Connection Attempt Delay of RFC 8305 §5.
const dialDelay = 250 * time.Millisecond

// dialPolicyHost connects to addr ("host:port") over network, as
// net.Dialer.DialContext does, but resolves the host through the Resolver's
// Nameservers when it has some, so that the names it looks up all come from
// the same servers (RFC 8461 §3.3 fetches the policy from the host that its
// DNS names). Without Nameservers it is net.Dialer.DialContext, with the
// system's resolver. An address literal is dialed as it is.
func (r *Resolver) dialPolicyHost(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: -1} // no keep-alive probes: a connection lasts one fetch
	if len(r.Nameservers) == 0 {
		return d.DialContext(ctx, network, addr)
	}
	host, service, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return d.DialContext(ctx, network, addr)
	}
	var family func(netip.Addr) bool
	switch network {
	case "tcp":
		family = func(netip.Addr) bool { return true }
	case "tcp4":
		family = netip.Addr.Is4
	case "tcp6":
		family = netip.Addr.Is6
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	port, err := net.DefaultResolver.LookupPort(ctx, network, service)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	found, err := r.lookupIP(ctx, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var addrs []netip.Addr
	for _, a := range found {
		if family(a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "no suitable address found", Addr: host}}
	}
	return dialParallel(ctx, network, addr, interleave(addrs), uint16(port))
}

// interleave orders addrs by alternating the address families, starting
// with the family of the first (RFC 8305 §4), each family in its own order.
func interleave(addrs []netip.Addr) []netip.Addr {
	var first, other []netip.Addr
	for _, a := range addrs {
		if a.Is4() == addrs[0].Is4() {
			first = append(first, a)
		} else {
			other = append(other, a)
		}
	}
	out := make([]netip.Addr, 0, len(addrs))
	for i := 0; i < len(first) || i < len(other); i++ {
		if i < len(first) {
			out = append(out, first[i])
		}
		if i < len(other) {
			out = append(out, other[i])
		}
	}
	return out
}

// dialParallel connects to one of addrs on port, in their order, starting
// the next attempt when the one before fails or has had dialDelay without
// succeeding (RFC 8305 §5). The first connection made wins; the attempts
// still under way are cancelled, and a connection one of them makes anyway
// is closed. name is the address asked for, for the error.
func dialParallel(ctx context.Context, network, name string, addrs []netip.Addr, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn net.Conn
		err  error
	}
	results := make(chan result, len(addrs))
	d := net.Dialer{KeepAlive: -1}
	next, pending := 0, 0
	timer := time.NewTimer(dialDelay)
	defer timer.Stop()
	start := func() {
		target := netip.AddrPortFrom(addrs[next], port).String()
		next++
		pending++
		go func() {
			conn, err := d.DialContext(ctx, network, target)
			results <- result{conn, err}
		}()
		timer.Reset(dialDelay)
	}
	start()
	var errs joinedErrors
	for pending > 0 {
		select {
		case res := <-results:
			pending--
			if res.err == nil {
				cancel()
				if pending > 0 {
					go func(n int) {
						for range n {
							if res := <-results; res.conn != nil {
								res.conn.Close()
							}
						}
					}(pending)
				}
				return res.conn, nil
			}
			errs = append(errs, res.err)
			if next < len(addrs) && ctx.Err() == nil {
				start()
			}
		case <-timer.C:
			if next < len(addrs) && ctx.Err() == nil {
				start()
			}
		}
	}
	tried := make([]string, next)
	for i, a := range addrs[:next] {
		tried[i] = a.String()
	}
	untried := ""
	if next < len(addrs) {
		untried = fmt.Sprintf(" (%d more not tried)", len(addrs)-next)
	}
	err := fmt.Errorf("no connection to %s%s: %w", strings.Join(tried, ", "), untried, errs)
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	return nil, &net.OpError{Op: "dial", Net: network, Addr: dialAddr(name), Err: err}
}

// dialAddr is a host name and port, as a net.Addr for net.OpError.
type dialAddr string

func (a dialAddr) Network() string { return "tcp" }
func (a dialAddr) String() string  { return string(a) }
