// Package containerd finds or starts the containerd that runs Gantry's
// containers: the host's if its socket answers, else one of our own,
// configured under the data directory and supervised while the server runs.
//
// Our own daemon is started in its own process group and left running when
// the server exits: its shims hold the running tasks, and the next server
// start adopts it by its socket. Stop it with the pid in DataDir/containerd/containerd.pid.
package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
)

// Namespace is the containerd namespace all of Gantry's objects live in.
const Namespace = "gantry"

// Options say where to look for and where to keep containerd.
type Options struct {
	DataDir string // our own daemon keeps root and config below DataDir/containerd
	Socket  string // a host socket to try first; empty: /run/containerd/containerd.sock
	Binary  string // containerd binary; empty: from PATH
	Log     *slog.Logger
}

// Daemon is a containerd Gantry can talk to.
type Daemon struct {
	Address string // the socket to dial
	Owned   bool   // true when Gantry started it

	opts   Options
	cancel context.CancelFunc
	done   chan struct{}
}

// Ensure returns a containerd that answers, starting one if needed.
func Ensure(ctx context.Context, opts Options) (*Daemon, error) {
	if opts.Socket == "" {
		opts.Socket = "/run/containerd/containerd.sock"
	}
	if opts.Binary == "" {
		opts.Binary = "containerd"
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if answers(ctx, opts.Socket) {
		opts.Log.Info("using the host's containerd", "socket", opts.Socket)
		return &Daemon{Address: opts.Socket}, nil
	}
	d := &Daemon{Address: OwnSocket(opts.DataDir), Owned: true, opts: opts}
	if answers(ctx, d.Address) {
		opts.Log.Info("adopting Gantry's containerd from an earlier run", "socket", d.Address)
	} else {
		if err := d.start(); err != nil {
			return nil, err
		}
		if err := d.wait(ctx, 30*time.Second); err != nil {
			return nil, err
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go d.supervise(sctx)
	return d, nil
}

// OwnSocket is where Gantry's own containerd listens for a data directory.
// It lives under /run (unix socket paths are limited to 108 bytes) and is
// named by a hash of the data directory so several servers can share a host.
func OwnSocket(dataDir string) string {
	return filepath.Join(runDir(dataDir), "containerd.sock")
}

func runDir(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs))
	return filepath.Join("/run/gantry", hex.EncodeToString(h[:6]))
}

// PIDFile is where the pid of Gantry's own containerd is kept.
func PIDFile(dataDir string) string { return filepath.Join(dataDir, "containerd", "containerd.pid") }

func answers(ctx context.Context, socket string) bool {
	if _, err := os.Stat(socket); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := containerd.New(socket, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

// config keeps the daemon to what Gantry uses: no CRI plugin (we are not a
// kubelet), runc v2 shim with the cgroupfs driver (no systemd on these hosts).
const config = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[plugins."io.containerd.runtime.v1.linux"]
  shim_debug = false
`

func (d *Daemon) start() error {
	base := filepath.Join(d.opts.DataDir, "containerd")
	run := runDir(d.opts.DataDir)
	for _, dir := range []string{base, filepath.Join(base, "root"), run} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(base, "config.toml")
	cfg := fmt.Sprintf(config, filepath.Join(base, "root"), filepath.Join(run, "state"), d.Address)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(base, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	bin, err := exec.LookPath(d.opts.Binary)
	if err != nil {
		return fmt.Errorf("containerd is not installed (%v): install it with `apt-get install containerd runc`, or run the README's install command", err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C to the server must not take the tasks down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	os.WriteFile(PIDFile(d.opts.DataDir), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go cmd.Wait() // reap it if it dies while we run
	d.opts.Log.Info("started containerd", "pid", cmd.Process.Pid, "socket", d.Address, "log", filepath.Join(base, "containerd.log"))
	return nil
}

func (d *Daemon) wait(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if answers(ctx, d.Address) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("containerd did not answer on %s within %s: see %s", d.Address, limit, filepath.Join(d.opts.DataDir, "containerd", "containerd.log"))
}

// supervise restarts our containerd if it stops answering.
func (d *Daemon) supervise(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		if answers(ctx, d.Address) || ctx.Err() != nil {
			continue
		}
		d.opts.Log.Warn("containerd stopped answering; restarting it", "socket", d.Address)
		if err := d.start(); err != nil {
			d.opts.Log.Error("restart containerd", "err", err)
		} else if err := d.wait(ctx, 30*time.Second); err != nil {
			d.opts.Log.Error("restart containerd", "err", err)
		}
	}
}

// Close stops supervising. The daemon itself keeps running (see the package
// comment); the host's is never touched.
func (d *Daemon) Close() error {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	return nil
}

// Stop kills the containerd Gantry started for dataDir (tests and
// uninstalls; a server never does, see the package comment) and removes
// its socket directory. The host's containerd is never touched.
func Stop(dataDir string) {
	b, err := os.ReadFile(PIDFile(dataDir))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	os.Remove(PIDFile(dataDir))
	os.RemoveAll(runDir(dataDir))
}
