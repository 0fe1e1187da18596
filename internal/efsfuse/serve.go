package efsfuse

// One mount is served by one helper process (`gantry efs-mount`, hidden),
// not by the agent's own process, for two reasons:
//
//   - A FUSE mount lives exactly as long as the process serving it. Tasks
//     keep running across a server restart (containerd holds them), and so
//     must their EFS volumes, as bind mounts do; a helper started in its
//     own session outlives the server, and a restarted agent finds the
//     mount alive and its helper by the pid file.
//   - Each mount serves one identity, so the whole helper process becomes
//     the access point's user (setgroups, setresgid, setresuid on every
//     thread) once the mount is made: no operation can run as root, and
//     the capabilities a per-thread setfsuid would leave (CAP_SYS_ADMIN,
//     ...) are gone too. The agent cannot do that to itself.
//
// The agent opens the access point's root directory (component by
// component, no symlinks followed) and passes the descriptor, so the
// helper never resolves a host path of the tree itself.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Subcommand is the hidden `gantry` subcommand that runs Main.
const Subcommand = "efs-mount"

// fsType is the mount's type in /proc/mounts: fuse.gantry-efs.
const fsType = "gantry-efs"

// Mount is one access point mounted for one task.
type Mount struct {
	Mountpoint string
	UID, GID   uint32
	Groups     []uint32
	// Source is shown as the mount's source in /proc/mounts (fs-...:fsap-...).
	Source string
	// Client is the container user of a gVisor sandbox the mount is made
	// for; nil for runc, whose containers reach the mount through the
	// host kernel, which leaves permissions to the server.
	Client *Client
	// Squash serves each request as its caller with root squashed
	// (squash.go) instead of as UID/GID, which are then unused.
	Squash bool
}

// Client is a container's user and primary group. Under a gVisor sandbox
// it stands for the access point's user on the mount: see tree.showUID.
type Client struct{ UID, GID uint32 }

func (c *Client) String() string { return fmt.Sprintf("%d:%d", c.UID, c.GID) }

// Cache lifetimes. Attributes are never cached: a file another task
// appended to must show its new size at once, as NFS's close-to-open
// consistency gives on EFS (a stale size would cut reads short). Names
// are kept a second, and a missing name not at all, so a file another
// task creates is visible on the next look.
var (
	entryTimeout    = time.Second
	attrTimeout     = time.Duration(0)
	negativeTimeout = time.Duration(0)
)

// Serve mounts the directory root at m.Mountpoint, becomes m's user,
// calls ready once the kernel has the mount, and serves until the mount
// is unmounted (nil) or ctx ends. Ending leaves a dead mount (ENOTCONN)
// that whoever unmounts it cleans up; the process must exit after, since
// it is no longer root.
func Serve(ctx context.Context, root *os.File, m Mount, ready func()) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(root.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("root directory descriptor: not a directory (%v)", err)
	}
	// Modes arrive with the container's umask applied by the kernel.
	unix.Umask(0)
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			// Containers run as any uid; access is decided by the host
			// kernel against the access point's user, not by the mount.
			AllowOther:        true,
			DirectMountStrict: true, // mount(2) as root: no fusermount
			FsName:            m.Source,
			Name:              fsType,
			MaxWrite:          1 << 20,
			EnableLocks:       true,
			// O_APPEND files are direct I/O (fopenFlags); without this
			// the kernel refuses to map them shared (ENODEV).
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			// EFS has no extended attributes.
			DisableXAttrs: true,
		},
		EntryTimeout:    &entryTimeout,
		AttrTimeout:     &attrTimeout,
		NegativeTimeout: &negativeTimeout,
	}
	t := &tree{root: int(root.Fd()), uid: m.UID, gid: m.GID, groups: m.Groups, client: m.Client}
	var raw fuse.RawFileSystem = PageWrites{fs.NewNodeFS(&node{t: t}, opts)}
	if m.Squash {
		sq, err := newSquashFS(raw)
		if err != nil {
			return err
		}
		raw = sq
	}
	server, err := fuse.NewServer(raw, m.Mountpoint, &opts.MountOptions)
	if err != nil {
		return fmt.Errorf("mount FUSE at %s: %w", m.Mountpoint, err)
	}
	go server.Serve()
	// As root still: WaitMount opens a file in the mount by its path
	// (go-fuse answers that one itself), which the user may not reach.
	if err := server.WaitMount(); err != nil {
		unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		return fmt.Errorf("FUSE mount at %s: %w", m.Mountpoint, err)
	}
	// A root-squashing mount's helper stays root: squashFS switches each
	// request's thread to its caller.
	if !m.Squash {
		if err := becomeUser(m); err != nil {
			unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
			return err
		}
	}
	t.user.Store(true)
	ready()
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	// The descriptor must stay open as long as requests may come.
	root.Close()
	return nil
}

// becomeUser switches every thread of the process to m's identity; from
// here on the host kernel checks each file operation against it.
func becomeUser(m Mount) error {
	gids := make([]int, len(m.Groups))
	for i, g := range m.Groups {
		gids[i] = int(g)
	}
	if err := syscall.Setgroups(gids); err != nil {
		return fmt.Errorf("setgroups %v: %w", gids, err)
	}
	if err := syscall.Setresgid(int(m.GID), int(m.GID), int(m.GID)); err != nil {
		return fmt.Errorf("setresgid %d: %w", m.GID, err)
	}
	if err := syscall.Setresuid(int(m.UID), int(m.UID), int(m.UID)); err != nil {
		return fmt.Errorf("setresuid %d: %w", m.UID, err)
	}
	return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
}

// Main is the helper: `gantry efs-mount --mountpoint DIR --uid U --gid G
// [--groups G1,G2] [--client UID:GID] [--source NAME]`, with the root
// directory open on descriptor 3 and a pipe on descriptor 4 that gets
// "ready" or the error.
func Main(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("gantry "+Subcommand, flag.ContinueOnError)
	var m Mount
	var uid, gid uint
	var groups, client string
	fl.StringVar(&m.Mountpoint, "mountpoint", "", "where to mount")
	fl.UintVar(&uid, "uid", 0, "the access point's POSIX uid")
	fl.UintVar(&gid, "gid", 0, "the access point's POSIX gid")
	fl.StringVar(&groups, "groups", "", "secondary gids, comma-separated")
	fl.StringVar(&client, "client", "", "the sandboxed container's uid:gid")
	fl.StringVar(&m.Source, "source", "efs", "the mount's source name")
	fl.BoolVar(&m.Squash, "squash", false, "act as each caller, root squashed to 65534")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if uid > math.MaxUint32 || gid > math.MaxUint32 {
		return fmt.Errorf("--uid %d / --gid %d: ids are 32-bit", uid, gid)
	}
	m.UID, m.GID = uint32(uid), uint32(gid)
	var err error
	if m.Groups, err = parseGroups(groups); err != nil {
		return err
	}
	if m.Client, err = parseClient(client); err != nil {
		return err
	}
	if m.Mountpoint == "" {
		return errors.New("--mountpoint is required")
	}
	root, status := os.NewFile(3, "root"), os.NewFile(4, "status")
	if root == nil || status == nil {
		return errors.New("descriptors 3 (root directory) and 4 (status pipe) must be open")
	}
	return ReportReady(status, func(ready func()) error { return Serve(ctx, root, m, ready) })
}

// ReportReady is the helper's side of StartHelper: it runs serve, says
// "ready" on the status pipe once serve calls ready, or says why serve
// failed before that.
func ReportReady(status *os.File, serve func(ready func()) error) error {
	readied := false
	err := serve(func() {
		readied = true
		fmt.Fprintln(status, "ready")
		status.Close()
	})
	if err != nil && !readied {
		fmt.Fprintln(status, err)
	}
	return err
}

func parseGroups(s string) ([]uint32, error) {
	var gids []uint32
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		g, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--groups: %q is not a gid", f)
		}
		gids = append(gids, uint32(g))
	}
	return gids, nil
}

// parseClient reads --client: "" (none) or UID:GID.
func parseClient(s string) (*Client, error) {
	if s == "" {
		return nil, nil
	}
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("--client: %q is not UID:GID", s)
	}
	return &Client{UID: uint32(uid), GID: uint32(gid)}, nil
}

// Start runs the helper (exe efs-mount ...) for m over the directory
// root, and returns its pid once the mount serves. The helper runs in a
// session of its own, so it outlives the caller; its output goes to
// logPath.
func Start(exe string, root *os.File, m Mount, logPath string) (int, error) {
	gids := make([]string, len(m.Groups))
	for i, g := range m.Groups {
		gids[i] = strconv.FormatUint(uint64(g), 10)
	}
	cmd := exec.Command(exe, Subcommand, "--mountpoint", m.Mountpoint,
		"--uid", strconv.FormatUint(uint64(m.UID), 10), "--gid", strconv.FormatUint(uint64(m.GID), 10),
		"--groups", strings.Join(gids, ","), "--source", m.Source)
	if m.Client != nil {
		cmd.Args = append(cmd.Args, "--client", m.Client.String())
	}
	if m.Squash {
		cmd.Args = append(cmd.Args, "--squash")
	}
	cmd.ExtraFiles = []*os.File{root}
	return StartHelper(cmd, m.Mountpoint, logPath, 20*time.Second)
}

// StartHelper starts a mount helper process (cmd, with its arguments and
// any descriptors of its own in ExtraFiles) and returns its pid once the
// helper says "ready" on the status pipe it gets as the next descriptor.
// The helper runs in a session of its own, so it outlives the caller; its
// output goes to logPath. A helper that says anything else, or nothing
// within timeout, is killed and its mount point detached, and what it said
// (or its log) is the error.
func StartHelper(cmd *exec.Cmd, mountpoint, logPath string, timeout time.Duration) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		w.Close()
		return 0, err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	logf.Close()
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", strings.Join(cmd.Args[:min(2, len(cmd.Args))], " "), err)
	}
	// Reaped here while this process lives; by init after.
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.SetReadDeadline(time.Now().Add(timeout))
	line, _ := bufio.NewReader(r).ReadString('\n')
	if line = strings.TrimSpace(line); line == "ready" {
		return cmd.Process.Pid, nil
	}
	cmd.Process.Kill()
	<-exited
	unix.Unmount(mountpoint, unix.MNT_DETACH)
	if line == "" {
		b, _ := os.ReadFile(logPath)
		line = "helper exited without a word: " + strings.TrimSpace(string(b))
	}
	return 0, errors.New(line)
}

// Serving reports whether a live helper serves the mount at dir: a FUSE
// file system is mounted there and answers (a dead one says ENOTCONN).
func Serving(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
		return false
	}
	var parent unix.Statfs_t
	return unix.Statfs(filepath.Dir(dir), &parent) == nil && parent.Fsid != st.Fsid
}

// Stop unmounts dir and makes sure the helper pid served it is gone: it
// exits by itself when its mount goes, and is killed if it has not within
// a few seconds. A pid that no longer runs a helper for dir is left alone.
// Safe to repeat.
func Stop(dir string, pid int) error {
	var errs []error
	for i := 0; ; i++ {
		err := unix.Unmount(dir, 0)
		if err == nil {
			continue // once more: nothing may be stacked below
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		if errors.Is(err, unix.EBUSY) && i < 50 {
			// Still in use: a container's mount namespace may be going
			// away. Detach it; the helper serves until the last user
			// leaves, then ends.
			if err := unix.Unmount(dir, unix.MNT_DETACH); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
		break
	}
	if pid > 0 {
		for deadline := time.Now().Add(5 * time.Second); helperRuns(pid, dir); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// helperRuns reports whether pid is a live (not zombie) helper for dir.
func helperRuns(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for i, a := range args {
		if a == "--mountpoint" && i+1 < len(args) && args[i+1] == dir {
			return len(args) > 1 && args[1] == Subcommand
		}
	}
	return false
}
