// Package redistest runs redis-server processes for tests: on a free
// loopback port, with persistence off, stopped when the tests end.
//
// A test binary starts one shared server from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }
//
// and its tests get it with Shared. Without redis-server on PATH the
// tests that need it skip, saying how to install it, except under CI
// (the environment variable CI is "true"), where the run fails.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Binary is the program Start runs, looked up on PATH.
const Binary = "redis-server"

// InstallHint says how to get Binary on Debian and Ubuntu.
const InstallHint = "apt-get install redis-server"

// readyTimeout bounds how long Start and Restart wait for the server to
// answer PING.
const readyTimeout = 20 * time.Second

// ErrNotInstalled is returned by Start when Binary is not on PATH.
var ErrNotInstalled = fmt.Errorf("redistest: %s not found on PATH (%s)", Binary, InstallHint)

// Server is a redis-server process listening on 127.0.0.1. Its port stays
// the same across Kill and Restart; its data does not survive either,
// since persistence is off.
type Server struct {
	bin  string
	port int
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer
	exit chan struct{} // closed when cmd has exited
}

// Start starts a server on a free loopback port.
func Start() (*Server, error) {
	bin, err := exec.LookPath(Binary)
	if err != nil {
		return nil, ErrNotInstalled
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, err
	}
	var last error
	for range 3 { // another process may take the port first
		port, err := freePort()
		if err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		s := &Server{bin: bin, port: port, dir: dir}
		if last = s.start(); last == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, last
}

// Addr returns the host:port to dial.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Kill kills the server with SIGKILL, as a crash would, and waits for it
// to exit. It is a no-op on a server that is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// Restart starts a killed server again on the same port, empty.
func (s *Server) Restart() error {
	s.mu.Lock()
	running := s.cmd != nil
	s.mu.Unlock()
	if running {
		return errors.New("redistest: server is running")
	}
	return s.start()
}

// Stop kills the server and removes its directory.
func (s *Server) Stop() {
	s.Kill()
	_ = os.RemoveAll(s.dir)
}

// start runs the server and waits until it answers PING.
func (s *Server) start() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--loglevel", "warning")
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.out, s.exit = cmd, out, exit
	s.mu.Unlock()
	if err := s.awaitReady(exit); err != nil {
		s.Kill()
		return fmt.Errorf("%w; output: %s", err, out.String())
	}
	return nil
}

// awaitReady polls the server with PING until it answers PONG, it exits
// or readyTimeout passes.
func (s *Server) awaitReady(exit <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return errors.New("redistest: redis-server exited at start")
		default:
		}
		if ping(s.Addr()) == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redistest: redis-server on %s not ready after %s", s.Addr(), readyTimeout)
}

// ping sends PING over a fresh connection and checks the answer.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("redistest: PING answered %q", line)
	}
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: pick a port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// shared is the server Main started, or nil.
var (
	shared    *Server
	sharedErr error
)

// Main starts the shared server, runs the tests and stops the server; it
// returns the exit code for os.Exit. Without redis-server under CI it
// fails the run at once; elsewhere the tests run and those that call
// Shared skip.
func Main(m *testing.M) int {
	shared, sharedErr = Start()
	if sharedErr != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "FAIL: %v (CI=true: the tests need it)\n", sharedErr)
			return 1
		}
		fmt.Fprintf(os.Stderr, "redistest: tests that need Redis will skip: %v\n", sharedErr)
	} else {
		defer shared.Stop()
	}
	return m.Run()
}

// Shared returns the server Main started. Without one it skips the test,
// or fails it under CI.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	if shared == nil {
		Unavailable(tb, sharedErr)
	}
	return shared
}

// Unavailable ends a test that cannot get a server because of err: it
// skips, saying how to install redis-server, or fails under CI.
func Unavailable(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		err = errors.New("redistest: no shared server: TestMain must call redistest.Main")
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%v", err)
	}
	tb.Skipf("needs %s (%s): %v", Binary, InstallHint, err)
}

// New starts a server of the test's own, stopped when the test ends, for
// a test that kills or restarts it.
func New(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		Unavailable(tb, err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Poll calls cond every 10ms until it holds or d passes, and reports
// whether it held. Tests use it to wait for something that happens in the
// background, with a deadline, instead of sleeping.
func Poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Eventually fails the test unless cond holds within d (see Poll).
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Poll(d, cond) {
		tb.Fatalf("gave up after %s waiting for %s", d, what)
	}
}
