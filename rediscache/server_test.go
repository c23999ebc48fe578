package rediscache_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server process of a test's own, on a free port of
// 127.0.0.1, with nothing saved to disk.
type redisServer struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string // more arguments for redis-server

	sentinel string // if set, a Sentinel's configuration: it runs as one

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// startRedis starts a redis-server for t and stops it at t's end. Without
// redis-server on PATH, it skips t, unless MTASTS_REQUIRE_REDIS=1, when it
// fails it.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	return startRedisWith(t)
}

// startRedisWith is startRedis with more arguments for redis-server; args
// may use the placeholders {port} and {dir}.
func startRedisWith(t testing.TB, args ...string) *redisServer {
	t.Helper()
	return startServer(t, "", args)
}

// startSentinel starts a Sentinel that monitors master under the name
// "mymaster".
func startSentinel(t testing.TB, master *redisServer) *redisServer {
	t.Helper()
	return startServer(t, "sentinel monitor mymaster 127.0.0.1 "+strconv.Itoa(master.port)+" 1\n", nil)
}

func startServer(t testing.TB, sentinel string, args []string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MTASTS_REQUIRE_REDIS") == "1" {
			t.Fatalf("MTASTS_REQUIRE_REDIS=1 and no redis-server: %v", err)
		}
		t.Skipf("no redis-server on PATH (%v); set MTASTS_REQUIRE_REDIS=1 to fail instead", err)
	}
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), args: args, sentinel: sentinel}
	t.Cleanup(s.Kill)
	var last error
	for range 5 { // the free port found may be taken before redis-server binds it
		s.port = freePort(t)
		if last = s.start(); last == nil {
			return s
		}
	}
	t.Fatalf("starting redis-server: %v", last)
	return nil
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr is the server's host:port.
func (s *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &bytes.Buffer{}
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir}
	if s.sentinel != "" {
		// A Sentinel reads its configuration from a file it may rewrite.
		conf := filepath.Join(s.dir, "sentinel-"+strconv.Itoa(s.port)+".conf")
		if err := os.WriteFile(conf, []byte(s.sentinel), 0o600); err != nil {
			return err
		}
		args = []string{conf, "--sentinel", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir}
	}
	for _, a := range s.args {
		a = strings.ReplaceAll(a, "{port}", strconv.Itoa(s.port))
		args = append(args, strings.ReplaceAll(a, "{dir}", s.dir))
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return &startError{out.String()}
		default:
		}
		if ping(s.Addr()) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	return &startError{"no PONG within 10s: " + out.String()}
}

type startError struct{ log string }

func (e *startError) Error() string { return "redis-server did not start: " + e.log }

// ping reports whether a PING to addr is answered with PONG.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it.
func (s *redisServer) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-exited
	}
}

// Restart starts the server again on the same port, empty.
func (s *redisServer) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restarting redis-server: %v", err)
}

// Client returns a new client of the server, closed at the test's end.
func (s *redisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop freezes the server with SIGSTOP: it keeps its connections and its
// port, and answers nothing, as a server stuck or cut off would.
func (s *redisServer) Stop() { s.signal(syscall.SIGSTOP) }

// Continue resumes a server that Stop froze.
func (s *redisServer) Continue() { s.signal(syscall.SIGCONT) }

func (s *redisServer) signal(sig os.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}
