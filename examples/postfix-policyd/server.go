package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxRequest bounds a request: a socketmap name and a domain fit with room
// to spare (mta-sts-daemon takes 1024 bytes too).
const maxRequest = 1024

// server serves the socketmap protocol on its listeners: netstrings, each
// request "name key", each reply "OK data", "NOTFOUND ", "TEMP reason" or
// "PERM reason", in the order of the requests on a connection.
type server struct {
	d   *daemon
	log *slog.Logger

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]bool // true while a request is being answered
	closing   bool
	wg        sync.WaitGroup // connection handlers
	served    atomic.Uint64  // connections accepted
	dropped   atomic.Uint64  // connections closed for a malformed request
}

func newServer(d *daemon, log *slog.Logger) *server {
	return &server{d: d, log: log, conns: map[net.Conn]bool{}}
}

// serve accepts connections on ln until shutdown; it returns nil then.
func (s *server) serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = false
		s.wg.Add(1)
		s.mu.Unlock()
		s.served.Add(1)
		go s.handle(c)
	}
}

// connections returns how many connections are open.
func (s *server) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// shutdown stops accepting, lets every connection finish the requests it has
// sent, and closes it; after timeout it closes what is left. It returns
// whether every connection finished in time.
func (s *server) shutdown(timeout time.Duration) bool {
	s.mu.Lock()
	s.closing = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	// A handler waiting for a request reads no more than it has; one
	// answering a request finishes it, and those buffered behind it.
	now := time.Now()
	for c := range s.conns {
		c.SetReadDeadline(now)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return false
}

func (s *server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	req := make([]byte, 0, 256)
	out := make([]byte, 0, 512)
	for {
		var err error
		req, err = readNetstring(br, req[:0])
		if err != nil {
			bw.Flush() // the replies to the requests before
			var perr *protocolError
			switch {
			case errors.As(err, &perr):
				s.dropped.Add(1)
				s.log.Warn("closing a connection: malformed request", "remote", remote(c), "reason", perr.msg)
			case errors.Is(err, io.EOF), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
			default:
				s.log.Debug("connection read failed", "remote", remote(c), "err", err)
			}
			return
		}
		out = s.d.answer(req, out[:0])
		writeNetstring(bw, out)
		if !hasRequest(br) {
			// No whole request is buffered: the client waits for these replies.
			if err := bw.Flush(); err != nil {
				s.log.Debug("connection write failed", "remote", remote(c), "err", err)
				return
			}
		}
	}
}

func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "unix"
}

// hasRequest reports whether br holds a whole netstring, so that the replies
// so far can wait to go out with the next one.
func hasRequest(br *bufio.Reader) bool {
	avail := br.Buffered()
	if avail == 0 {
		return false
	}
	b, _ := br.Peek(min(avail, 8))
	n := 0
	for i, c := range b {
		if c == ':' {
			return i > 0 && avail >= i+1+n+1
		}
		if c < '0' || c > '9' {
			return true // malformed: read it, and fail
		}
		n = n*10 + int(c-'0')
	}
	return false
}

// protocolError is a request that breaks the netstring framing or the size
// limit: the connection cannot be read any further.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

// readNetstring reads one netstring, "LEN:DATA,", appending DATA to buf.
func readNetstring(br *bufio.Reader, buf []byte) ([]byte, error) {
	n, digits := 0, 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				return buf, &protocolError{"connection closed within a request"}
			}
			return buf, err
		}
		if b == ':' {
			break
		}
		if b < '0' || b > '9' {
			return buf, &protocolError{fmt.Sprintf("netstring length has %q", b)}
		}
		if digits > 0 && n == 0 {
			return buf, &protocolError{"netstring length has a leading zero"}
		}
		n = n*10 + int(b-'0')
		digits++
		if n > maxRequest {
			return buf, &protocolError{"request longer than " + strconv.Itoa(maxRequest) + " bytes"}
		}
	}
	if digits == 0 {
		return buf, &protocolError{"netstring without a length"}
	}
	start := len(buf)
	buf = slices.Grow(buf, n)[:start+n]
	if _, err := io.ReadFull(br, buf[start:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return buf, &protocolError{"connection closed within a request"}
		}
		return buf, err
	}
	b, err := br.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return buf, &protocolError{"connection closed within a request"}
		}
		return buf, err
	}
	if b != ',' {
		return buf, &protocolError{fmt.Sprintf("netstring ends with %q, not ','", b)}
	}
	return buf, nil
}

func writeNetstring(bw *bufio.Writer, data []byte) {
	var num [20]byte
	bw.Write(strconv.AppendInt(num[:0], int64(len(data)), 10))
	bw.WriteByte(':')
	bw.Write(data)
	bw.WriteByte(',')
}

// listeners opens what cfg says to serve, or takes the sockets systemd
// passed (socket activation: LISTEN_PID, LISTEN_FDS).
func listen(ctx context.Context, cfg *Config, log *slog.Logger) ([]net.Listener, error) {
	if lns, err := activated(); err != nil || lns != nil {
		if err == nil {
			log.Info("serving the sockets systemd passed; host, port and path are not used", "sockets", len(lns))
		}
		return lns, err
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	if cfg.Host != "" || cfg.Port != 0 {
		lc := net.ListenConfig{}
		if cfg.ReusePort {
			lc.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
				})
				return errors.Join(err, serr)
			}
		}
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
	}
	if cfg.Path != "" {
		if fi, err := os.Lstat(cfg.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(cfg.Path) // left by a process that did not close it
		}
		ln, err := net.Listen("unix", cfg.Path)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
		if cfg.Mode != 0 {
			if err := os.Chmod(cfg.Path, cfg.Mode); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	if len(lns) == 0 {
		return nil, errors.New("nothing to listen on: set host and port, or path")
	}
	return lns, nil
}

// activated returns the listeners systemd passed to this process, nil if
// none.
func activated() ([]net.Listener, error) {
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	var lns []net.Listener
	for fd := 3; fd < 3+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket %d from systemd: %w", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
