package efsnfs

// The mount helper, `gantry efs-nfs-mount` (hidden): one process per
// task and volume, as with the local FUSE helper (internal/efsfuse), so
// the mount outlives a server restart as the task does. The agent starts
// it through nsenter in the task's network namespace: the NFS connection
// (and every reconnection) then leaves from the task's ENI address, and
// the mount target's security groups decide whether it gets through. The
// mount itself is made in the host's mount namespace, at the path the
// agent binds into the containers.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// Subcommand is the hidden `gantry` subcommand that runs Main.
const Subcommand = "efs-nfs-mount"

// fsType is the mount's type in /proc/mounts: fuse.gantry-efs-nfs.
const fsType = "gantry-efs-nfs"

// MountSpec is one export mounted for one task.
type MountSpec struct {
	Mountpoint string
	Addr       string // mount target address, host:port
	Export     string // the export's name on the server
	Source     string // shown in /proc/mounts
	// View, for a mount a gVisor sandbox's container uses, shows the
	// access point's user as the container's (efsfuse.IDView); nil
	// shows owners as they are.
	View *efsfuse.IDView
}

// Mount dials the server, mounts the export at m.Mountpoint, calls ready,
// and serves until unmounted or ctx ends.
func Mount(ctx context.Context, m MountSpec, ready func()) error {
	c, err := dialTimeout(m.Addr, m.Export, 20*time.Second)
	if err != nil {
		return err
	}
	defer c.close()
	c.view = m.View
	a, err := c.getattr(c.root)
	if err != nil {
		return fmt.Errorf("export %s: %w", m.Export, err)
	}
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        true, // the server decides access, as the user it serves as
			DirectMountStrict: true,
			FsName:            m.Source,
			Name:              fsType,
			MaxWrite:          1 << 20,
			MaxReadAhead:      1 << 20,
			// Close-to-open: page cache is dropped at each open (no
			// keep-cache), not before every read, which with attributes
			// never cached cost a GETATTR per read(2). Reads past the
			// size the kernel knows still ask for it.
			ExplicitDataCacheControl: true,
			DisableXAttrs:            true,
			// O_APPEND files are direct I/O (openHandle); without this
			// the kernel refuses to map them shared (ENODEV).
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		},
		EntryTimeout:    &entryTimeout,
		AttrTimeout:     &attrTimeout,
		NegativeTimeout: &negativeTimeout,
		RootStableAttr:  &fs.StableAttr{Ino: a.FileID, Mode: syscall.S_IFDIR},
	}
	server, err := fuse.NewServer(efsfuse.PageWrites{RawFileSystem: fs.NewNodeFS(newNode(c, c.root), opts)}, m.Mountpoint, &opts.MountOptions)
	if err != nil {
		return fmt.Errorf("mount FUSE at %s: %w", m.Mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		return fmt.Errorf("FUSE mount at %s: %w", m.Mountpoint, err)
	}
	raise(m.Mountpoint)
	ready()
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// raise sets the mount's readahead to 1 MiB, NFS's usual rsize: the
// kernel gives FUSE file systems 128 KiB, and each READ is a round trip
// to the server. Best effort: a read-only /sys keeps the default.
func raise(mountpoint string) {
	var st unix.Stat_t
	if unix.Stat(mountpoint, &st) != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	os.WriteFile(p, []byte("1024"), 0)
}

// dialTimeout bounds the first connection: the transport retries for as
// long as it takes (a hard mount), but a mount that nothing answers (a
// security group dropping the SYN) must fail the task instead.
func dialTimeout(addr, export string, d time.Duration) (*client, error) {
	type res struct {
		c   *client
		err error
	}
	t := newTransport(addr)
	ch := make(chan res, 1)
	go func() {
		c, err := dial(t, export)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.close()
		}
		return r.c, r.err
	case <-time.After(d):
		t.close()
		return nil, fmt.Errorf("connect to %s: timed out after %s", addr, d)
	}
}

// Main is the helper: `gantry efs-nfs-mount --mountpoint DIR --addr
// IP:2049 --export NAME [--source NAME]` with a pipe on descriptor 3 that
// gets "ready" or the error.
func Main(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("gantry "+Subcommand, flag.ContinueOnError)
	var m MountSpec
	fl.StringVar(&m.Mountpoint, "mountpoint", "", "where to mount")
	fl.StringVar(&m.Addr, "addr", "", "the mount target's address, host:port")
	fl.StringVar(&m.Export, "export", "", "the export's name")
	fl.StringVar(&m.Source, "source", "efs", "the mount's source name")
	var view string
	fl.StringVar(&view, "view", "", "for a sandbox: the access point's UID:GID[:G1,G2...] shown as the container's, as UID:GID")
	if err := fl.Parse(args); err != nil {
		return err
	}
	var err error
	if m.View, err = parseView(view); err != nil {
		return err
	}
	if m.Mountpoint == "" || m.Addr == "" || m.Export == "" {
		return errors.New("--mountpoint, --addr and --export are required")
	}
	status := os.NewFile(3, "status")
	if status == nil {
		return errors.New("descriptor 3 (status pipe) must be open")
	}
	return efsfuse.ReportReady(status, func(ready func()) error { return Mount(ctx, m, ready) })
}

// Start runs exe's helper for m in the network namespace netns (a path,
// through nsenter; "" for the caller's) and returns its pid once the
// mount serves.
func Start(exe, netns string, m MountSpec, logPath string) (int, error) {
	args := []string{exe, Subcommand, "--mountpoint", m.Mountpoint, "--addr", m.Addr, "--export", m.Export, "--source", m.Source}
	if m.View != nil {
		args = append(args, "--view", formatView(m.View))
	}
	if netns != "" {
		args = append([]string{"nsenter", "--net=" + netns, "--"}, args...)
	}
	return efsfuse.StartHelper(exec.Command(args[0], args[1:]...), m.Mountpoint, logPath, 30*time.Second)
}

// Runs reports whether pid is a live helper serving dir.
func Runs(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	sub := false
	for i, a := range args {
		sub = sub || a == Subcommand
		if a == "--mountpoint" && i+1 < len(args) && args[i+1] == dir {
			return sub
		}
	}
	return false
}
