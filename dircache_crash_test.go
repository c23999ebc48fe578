package mtasts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crashDirEnv names the directory that TestDirCacheCrash's child process
// writes to; the test runs as that child when it is set.
const crashDirEnv = "MTASTS_DIRCACHE_CRASH_DIR"

var crashKeys = []string{"a.example", "b.example", "c.example", "d.example", "e.example"}

// A process killed mid-Put leaves temporary files, never a torn entry: every
// file under a key decodes to one whole policy, and Keys removes the temporary
// files once they are old enough that no live Put can own them.
func TestDirCacheCrash(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()

	const kills = 10
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDirCacheCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		if !crashChildWriting(stdout) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child %d did not start writing: %s", i, stderr.String())
		}
		time.Sleep(time.Duration(5+rand.IntN(45)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		io.Copy(io.Discard, stdout)
		err = cmd.Wait()
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "child %d: %v: %s", i, err, stderr.String())
		require.False(t, exit.Exited(), "child %d exited before the kill: %s", i, stderr.String())
	}

	temps := crashTemps(t, dir)
	require.NotEmpty(t, temps, "no kill landed mid-Put")
	t.Logf("%d kills left %d temporary files", kills, len(temps))

	// Just after the crash, the files might be a live Put's: Keys keeps them.
	_, err := keys(ctx, DirCache(dir))
	require.NoError(t, err)
	assert.ElementsMatch(t, temps, crashTemps(t, dir), "Keys removed temporary files that a live Put could own")

	// Once they are older than any Put takes, Keys removes them.
	old := time.Now().Add(-tmpMaxAge - time.Minute)
	for _, name := range temps {
		require.NoError(t, os.Chtimes(filepath.Join(dir, name), old, old))
	}
	got, err := keys(ctx, DirCache(dir))
	require.NoError(t, err)
	assert.Empty(t, crashTemps(t, dir), "temporary files left after Keys")

	require.NotEmpty(t, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	assert.ElementsMatch(t, files, got, "Keys lists every file left")
	for _, key := range got {
		assert.Contains(t, crashKeys, key)
		data, err := DirCache(dir).Get(ctx, key)
		require.NoError(t, err)
		p, err := decodePolicy(key, data)
		require.NoError(t, err, "%s does not decode", key)
		assert.Equal(t, crashPolicy(key, p.ID).String(), p.String(), "%s mixes writes", key)
	}
}

// crashChild Puts policies from several goroutines into dir until it is
// killed, and says "writing" on stdout once the first Put is done. It exits
// on its own after a minute, should its parent be gone.
func crashChild(dir string) {
	time.AfterFunc(time.Minute, func() { os.Exit(3) })
	c := DirCache(dir)
	var seq atomic.Int64
	var once sync.Once
	for range 4 {
		go func() {
			for {
				n := seq.Add(1)
				key := crashKeys[n%int64(len(crashKeys))]
				p := crashPolicy(key, fmt.Sprint(n))
				data, err := encodePolicy(p)
				if err == nil {
					err = c.Put(context.Background(), key, data)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				once.Do(func() { fmt.Println("writing") })
			}
		}()
	}
	select {}
}

// crashPolicy is the policy that the child writes under key with id: every
// MX pattern carries the id, so that a file mixing two writes does not
// decode to it.
func crashPolicy(key, id string) *Policy {
	p := &Policy{Mode: ModeEnforce, MaxAge: 86400 * time.Second, Domain: key, ID: id,
		Fetched: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	for i := range 1000 {
		p.MX = append(p.MX, fmt.Sprintf("mx%d-%s.%s", i, id, key))
	}
	return p
}

// crashChildWriting reports whether the child said it is writing.
func crashChildWriting(stdout io.Reader) bool {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "writing" {
			return true
		}
	}
	return false
}

// crashTemps returns the names of the temporary files in dir.
func crashTemps(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			names = append(names, e.Name())
		}
	}
	return names
}
