package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// TestSocketActivation runs the built binary as systemd would with the
// .socket unit: the listening socket passed as fd 3, LISTEN_FDS=1 and
// LISTEN_PID its own pid. It serves that socket (not the file's port), and
// stops cleanly on SIGTERM.
func TestSocketActivation(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "postfix-policyd")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	ts := mtaststest.NewServer()
	defer ts.Close()
	conf := filepath.Join(t.TempDir(), "mta-sts-daemon.yml")
	// The port in the file is one nothing listens on: the passed socket is used.
	require.NoError(t, os.WriteFile(conf, []byte("port: 1\nnameservers: [\""+ts.DNSAddr()+"\"]\n"), 0o644))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	ln.Close()
	defer f.Close()

	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -c "$1"`, bin, conf)
	cmd.ExtraFiles = []*os.File{f}
	logs, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	logged := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(logs)
		logged <- string(b)
	}()

	var c net.Conn
	require.Eventually(t, func() bool {
		c, err = net.Dial("tcp", ln.Addr().String())
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	defer c.Close()
	// The socket accepts even before the daemon runs; the reply shows it serves.
	_, err = io.WriteString(c, netstring("postfix 192.0.2.1"))
	require.NoError(t, err)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	reply, err := readNetstring(bufio.NewReader(c), nil)
	require.NoError(t, err)
	assert.Equal(t, "NOTFOUND ", string(reply))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	out := <-logged // all of it: the pipe closes when the process exits
	require.NoError(t, cmd.Wait(), "exit status 0 after SIGTERM")
	assert.Contains(t, out, "serving the sockets systemd passed")
	assert.Contains(t, out, "msg=stopped")
}
