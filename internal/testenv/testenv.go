// Package testenv starts real Gantry servers for integration tests and drives
// them with the real clients (the aws CLI, boto3, aws-sdk-go-v2).
package testenv

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/server"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/gantry once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "gantry-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gantry")
		// Static, as install.sh builds it: sandboxed tasks run the binary
		// itself for ECS Exec terminals (`gantry exec-tty`).
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/gantry")
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// ModuleRoot is the repository's top directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Server is a running `gantry server`.
type Server struct {
	t        testing.TB
	Endpoint string
	Listen   string
	// RegistryListen is the image registry's address, kept across restarts
	// so repository URIs stay valid.
	RegistryListen string
	DataDir        string
	Creds          *server.Credentials
	Args           []string // extra server flags
	cmd            *exec.Cmd
	exited         chan struct{}
	vpcCIDR        string
	logPath        string
}

// Start runs a server on a free loopback port with a fresh data directory
// and stops it (and its containerd) when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	dataDir, err := os.MkdirTemp("", "gantry-test-")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, DataDir: dataDir, Listen: freePort(t), Args: args}
	s.Endpoint = "http://" + s.Listen
	s.start()
	t.Cleanup(func() {
		if !s.stopTasks(2 * time.Minute) {
			t.Logf("some tasks did not reach STOPPED through the API; reaping them")
		}
		s.Stop()
		StopContainerd(dataDir)
		reap(dataDir)
		if t.Failed() {
			if b, err := os.ReadFile(s.logPath); err == nil {
				t.Logf("server log:\n%s", lastLines(string(b), 80))
			}
		}
		os.RemoveAll(dataDir)
	})
	return s
}

func (s *Server) start() {
	s.t.Helper()
	bin := Binary(s.t)
	s.logPath = filepath.Join(s.DataDir, "server.log")
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	if s.vpcCIDR == "" {
		s.vpcCIDR = freeVPCRange()
	}
	if s.RegistryListen == "" {
		s.RegistryListen = freePort(s.t)
	}
	args := append([]string{"server", "--data-dir", s.DataDir, "--listen", s.Listen, "--containerd", "/nonexistent/containerd.sock",
		"--default-vpc-cidr", s.vpcCIDR, "--registry-listen", s.RegistryListen}, isolationArgs()...)
	args = append(args, s.Args...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() { s.cmd.Wait(); logf.Close(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(s.Endpoint); err == nil {
			resp.Body.Close()
			break
		}
		if isClosed(exited) || time.Now().After(deadline) {
			b, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("gantry server did not come up:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Creds, err = server.LoadCredentials(s.DataDir)
	if err != nil {
		s.t.Fatal(err)
	}
}

// Stop ends the server process (SIGTERM, as a user's Ctrl-C would).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart stops and starts the server on the same data directory and port.
func (s *Server) Restart() {
	s.Stop()
	s.start()
}

// Env is the environment `eval "$(gantry env)"` would set.
func (s *Server) Env() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_ENDPOINT_URL="+s.Endpoint,
		"AWS_ACCESS_KEY_ID="+s.Creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+s.Creds.SecretAccessKey,
		"AWS_DEFAULT_REGION="+s.Creds.Region,
		"AWS_REGION="+s.Creds.Region,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_MAX_ATTEMPTS=1",
		"AWS_PAGER=",
	)
}

// AWS runs the aws CLI against the server and returns stdout, stderr and
// the exit code.
func (s *Server) AWS(args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "aws", append(args, "--output", "json")...)
	cmd.Env = s.Env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		s.t.Fatalf("aws %v: %v", args, err)
	}
	return o.String(), e.String(), 0
}

// MustAWS runs the aws CLI, fails the test on a non-zero exit, and decodes
// its JSON output into out (when out is not nil).
func (s *Server) MustAWS(out any, args ...string) {
	s.t.Helper()
	stdout, stderr, code := s.AWS(args...)
	if code != 0 {
		s.t.Fatalf("aws %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	if out != nil && strings.TrimSpace(stdout) != "" {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			s.t.Fatalf("aws %s: decode %q: %v", strings.Join(args, " "), stdout, err)
		}
	}
}

// AWSError runs the aws CLI expecting failure and returns the error code
// the CLI printed ("An error occurred (CODE) ...") and the whole message.
func (s *Server) AWSError(args ...string) (code, message string) {
	s.t.Helper()
	_, stderr, exit := s.AWS(args...)
	if exit == 0 {
		s.t.Fatalf("aws %s: succeeded, want an error", strings.Join(args, " "))
	}
	if i := strings.Index(stderr, "An error occurred ("); i >= 0 {
		rest := stderr[i+len("An error occurred ("):]
		if j := strings.Index(rest, ")"); j >= 0 {
			return rest[:j], strings.TrimSpace(stderr)
		}
	}
	return "", strings.TrimSpace(stderr)
}

// Python runs a python3 script (boto3 available) with the server's env.
func (s *Server) Python(script string) (string, error) {
	cmd := exec.Command("python3", "-c", script)
	cmd.Env = s.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// StopContainerd kills the containerd a test server started for dataDir.
func StopContainerd(dataDir string) { containerd.Stop(dataDir) }

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// PID is the server process's id (0 when stopped).
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// ContainerdAddress is the socket of the containerd the server uses.
func (s *Server) ContainerdAddress() string { return containerd.OwnSocket(s.DataDir) }

// LoadImage runs `gantry image load` for a tarball into the server's containerd.
func (s *Server) LoadImage(path string) {
	s.t.Helper()
	out, err := exec.Command(Binary(s.t), "image", "load", "--data-dir", s.DataDir, "--containerd", "/nonexistent/containerd.sock", path).CombinedOutput()
	if err != nil {
		s.t.Fatalf("gantry image load %s: %v\n%s", path, err, out)
	}
}

// DefaultSubnet returns the id of a default subnet, as a user finds it.
func (s *Server) DefaultSubnet() string {
	s.t.Helper()
	var out struct {
		Subnets []struct{ SubnetId string }
	}
	s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	if len(out.Subnets) == 0 {
		s.t.Fatal("no default subnets")
	}
	return out.Subnets[0].SubnetId
}

// freeVPCRange picks a default-VPC range no route on this host uses yet.
// Every AWS account's default VPC is 172.31.0.0/16, but servers of tests
// that run side by side on one host each make a bridge for theirs, and the
// host can route a range to only one of them.
func freeVPCRange() string {
	out, _ := exec.Command("ip", "-4", "-o", "route").Output()
	routes := string(out)
	var b [1]byte
	for {
		crand.Read(b[:])
		n := 100 + int(b[0])%150
		if !strings.Contains(routes, fmt.Sprintf("10.%d.", n)) {
			return fmt.Sprintf("10.%d.0.0/16", n)
		}
	}
}

// isolationArgs runs the suite under another default isolation than the
// server's own (sandbox): GANTRY_TEST_ISOLATION=container (or auto,
// sandbox) makes every cluster a test creates without the setting run its
// tasks that way. A test's own server flags come after, so they win.
func isolationArgs() []string {
	if v := os.Getenv("GANTRY_TEST_ISOLATION"); v != "" {
		return []string{"--default-isolation", v}
	}
	return nil
}

// LogPath is the server's log file (it goes with the data directory).
func (s *Server) LogPath() string { return s.logPath }
