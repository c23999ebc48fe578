// Command socketmap-load measures a socketmap server the way Postfix uses
// one: each connection keeps one request in flight, and sends the next when
// the reply is in. It prints the rate and the latency percentiles.
//
//	socketmap-load -addr 127.0.0.1:8461 -conns 16 -keys 'e%d.test' -n 1000 -duration 5s
//	socketmap-load -echo 127.0.0.1:9461   # a bare netstring echo server, the loopback's limit
//
// -warm first asks for every key once, one after the other, so that the
// measurement sees a warm cache.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8461", "socketmap server, host:port or unix:/path")
	name := flag.String("name", "postfix", "socketmap name, the first word of each request")
	keys := flag.String("keys", "e%d.test", "key pattern; %d is replaced by 0..n-1")
	n := flag.Int("n", 1000, "distinct keys, cycled")
	conns := flag.Int("conns", 1, "connections, each with one request in flight")
	duration := flag.Duration("duration", 5*time.Second, "how long to measure")
	warm := flag.Bool("warm", false, "ask for every key once before measuring")
	echo := flag.String("echo", "", "instead, serve a netstring echo server on this host:port until interrupted")
	flag.Parse()
	if *echo != "" {
		if err := serveEcho(*echo); err != nil {
			fmt.Fprintln(os.Stderr, "socketmap-load:", err)
			os.Exit(1)
		}
		return
	}
	reqs := make([][]byte, *n)
	for i := range reqs {
		k := strings.ReplaceAll(*keys, "%d", strconv.Itoa(i))
		reqs[i] = []byte(netstring(*name + " " + k))
	}
	if *warm {
		if _, err := load(*addr, reqs, *conns, 0, reqs); err != nil {
			fmt.Fprintln(os.Stderr, "socketmap-load: warming:", err)
			os.Exit(1)
		}
	}
	res, err := load(*addr, reqs, *conns, *duration, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "socketmap-load:", err)
		os.Exit(1)
	}
	fmt.Println(res)
}

// result is one measurement.
type result struct {
	conns    int
	requests int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	replies  map[string]int  // by first word
}

func (r result) String() string {
	pct := func(p float64) time.Duration {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
	}
	return fmt.Sprintf("conns=%d requests=%d rate=%.0f/s p50=%v p99=%v replies=%v",
		r.conns, r.requests, float64(r.requests)/r.elapsed.Seconds(), pct(0.50), pct(0.99), r.replies)
}

// load runs conns connections for d, cycling through reqs. With once set, it
// instead sends each of once, spread over the connections, then returns.
func load(addr string, reqs [][]byte, conns int, d time.Duration, once [][]byte) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	if once == nil {
		ctx, cancel = context.WithTimeout(context.Background(), d)
	}
	defer cancel()
	var (
		mu      sync.Mutex
		all     result
		firstEr error
		wg      sync.WaitGroup
	)
	all.conns, all.replies = conns, map[string]int{}
	start := time.Now()
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine [][]byte
			for i := c; i < len(once); i += conns {
				mine = append(mine, once[i])
			}
			lat, replies, err := client(ctx, addr, reqs, c, mine, once != nil)
			mu.Lock()
			defer mu.Unlock()
			all.lat = append(all.lat, lat...)
			for k, v := range replies {
				all.replies[k] += v
			}
			if err != nil && firstEr == nil {
				firstEr = err
			}
		}()
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	all.requests = len(all.lat)
	slices.Sort(all.lat)
	return all, firstEr
}

// client runs one connection: it cycles through reqs from offset until ctx
// is done or, if onceMode, sends each of once.
func client(ctx context.Context, addr string, reqs [][]byte, offset int, once [][]byte, onceMode bool) ([]time.Duration, map[string]int, error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	lat := make([]time.Duration, 0, 1<<16)
	replies := map[string]int{}
	buf := make([]byte, 0, 512)
	for i := offset * 7919; ; i++ {
		var req []byte
		if onceMode {
			if i-offset*7919 >= len(once) {
				return lat, replies, nil
			}
			req = once[i-offset*7919]
		} else {
			if ctx.Err() != nil {
				return lat, replies, nil
			}
			req = reqs[i%len(reqs)]
		}
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			return lat, replies, err
		}
		buf, err = readNetstring(br, buf[:0])
		if err != nil {
			return lat, replies, err
		}
		lat = append(lat, time.Since(t0))
		word, _, _ := strings.Cut(string(buf), " ")
		replies[word]++
	}
}

func netstring(s string) string { return strconv.Itoa(len(s)) + ":" + s + "," }

func readNetstring(br *bufio.Reader, buf []byte) ([]byte, error) {
	head, err := br.ReadSlice(':')
	if err != nil {
		return buf, err
	}
	n, err := strconv.Atoi(string(head[:len(head)-1]))
	if err != nil || n < 0 || n > 1<<20 {
		return buf, errors.New("bad netstring length")
	}
	buf = slices.Grow(buf, n+1)[:n+1]
	if _, err := io.ReadFull(br, buf); err != nil {
		return buf, err
	}
	if buf[n] != ',' {
		return buf, errors.New("netstring not ended by ','")
	}
	return buf[:n], nil
}

// serveEcho answers each netstring with itself: the same framing, reads and
// writes as a socketmap server, and no work.
func serveEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "socketmap-load: echo server on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			br := bufio.NewReaderSize(c, 4096)
			bw := bufio.NewWriterSize(c, 4096)
			buf := make([]byte, 0, 512)
			for {
				buf, err = readNetstring(br, buf[:0])
				if err != nil {
					return
				}
				bw.WriteString(strconv.Itoa(len(buf)))
				bw.WriteByte(':')
				bw.Write(buf)
				bw.WriteByte(',')
				if br.Buffered() == 0 && bw.Flush() != nil {
					return
				}
			}
		}()
	}
}
