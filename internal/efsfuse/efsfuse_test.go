package efsfuse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/efsfuse/maptest"
)

// The test binary is its own helper, as `gantry efs-mount` is gantry's.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Subcommand {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := Main(ctx, os.Args[2:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// mountTree serves dir at a new mount point as uid:gid (+groups, for a
// sandbox's client if not nil) and
// stops it at the end of the test; it returns the mount point.
func mountTree(t *testing.T, dir string, uid, gid uint32, groups []uint32, client *Client) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	work := t.TempDir()
	mp := filepath.Join(work, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	pid, err := Start(exe, root, Mount{Mountpoint: mp, UID: uid, GID: gid, Groups: groups, Source: "fs-test:fsap-test", Client: client}, filepath.Join(work, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if !Serving(mp) {
		t.Fatalf("%s: not served after Start", mp)
	}
	t.Cleanup(func() {
		if err := Stop(mp, pid); err != nil {
			t.Error(err)
		}
		if helperRuns(pid, mp) {
			t.Errorf("helper %d still runs after Stop", pid)
		}
		if Serving(mp) {
			t.Errorf("%s still mounted after Stop", mp)
		}
		if err := os.Remove(mp); err != nil {
			t.Errorf("mount point after Stop: %v", err)
		}
	})
	return mp
}

func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// Every operation is the access point user's, whoever asks (this test
// runs as root): new files get its uid and gid, root's private files stay
// closed, a secondary group opens what it should, and giving a file away
// is refused as it is to any user.
func TestIdentity(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	if err := os.Chown(dir, 1001, 1001); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "root-only"), []byte("secret"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "group-2000"), []byte("shared"), 0o640))
	must(t, os.Chown(filepath.Join(dir, "group-2000"), 0, 2000))
	must(t, os.WriteFile(filepath.Join(dir, "group-3000"), []byte("other"), 0o640))
	must(t, os.Chown(filepath.Join(dir, "group-3000"), 0, 3000))
	mp := mountTree(t, dir, 1001, 1001, []uint32{2000}, nil)

	must(t, os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644))
	must(t, os.MkdirAll(filepath.Join(mp, "a", "b"), 0o755))
	for _, p := range []string{"new", "a", "a/b"} {
		if u, g := owner(t, filepath.Join(dir, p)); u != 1001 || g != 1001 {
			t.Errorf("%s created through the mount is owned by %d:%d on the host, want 1001:1001", p, u, g)
		}
	}
	if _, err := os.ReadFile(filepath.Join(mp, "root-only")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("reading root's 0600 file as root through the mount: %v, want permission denied", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "root-only"), []byte("x"), 0o600); !errors.Is(err, os.ErrPermission) {
		t.Errorf("writing root's 0600 file: %v, want permission denied", err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "group-2000")); err != nil || string(b) != "shared" {
		t.Errorf("file of secondary group 2000: %q, %v", b, err)
	}
	if _, err := os.ReadFile(filepath.Join(mp, "group-3000")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("file of group 3000 (not the user's): %v, want permission denied", err)
	}
	// A chown is the access point user's, as from an NFS client EFS
	// squashes to it: giving its file away is EPERM, as is taking root's;
	// chown to itself and chgrp to its own groups work.
	if err := os.Chown(filepath.Join(mp, "new"), 0, 0); !errors.Is(err, os.ErrPermission) {
		t.Errorf("chown of the user's file to root: %v, want EPERM", err)
	} else if u, g := owner(t, filepath.Join(dir, "new")); u != 1001 || g != 1001 {
		t.Errorf("after chown 0:0 the file is %d:%d, want 1001:1001 still", u, g)
	}
	if err := os.Chown(filepath.Join(mp, "new"), 4321, -1); !errors.Is(err, os.ErrPermission) {
		t.Errorf("chown of the user's file to 4321: %v, want EPERM", err)
	}
	must(t, os.Chown(filepath.Join(mp, "new"), 1001, 1001))
	must(t, os.Chown(filepath.Join(mp, "new"), -1, 2000))
	if _, g := owner(t, filepath.Join(dir, "new")); g != 2000 {
		t.Errorf("chgrp to secondary group 2000: group %d", g)
	}
	if err := os.Chown(filepath.Join(mp, "new"), -1, 3000); !errors.Is(err, os.ErrPermission) {
		t.Errorf("chgrp to group 3000 (not the user's): %v, want EPERM", err)
	}
	must(t, os.Chown(filepath.Join(mp, "new"), -1, 1001))
	if err := os.Chown(filepath.Join(mp, "root-only"), 1001, 1001); !errors.Is(err, os.ErrPermission) {
		t.Errorf("chown of root's file: %v, want EPERM", err)
	}
	if err := os.Remove(filepath.Join(mp, "root-only")); err != nil {
		// The directory is the user's: removing a name in it is allowed.
		t.Errorf("unlink in the user's own directory: %v", err)
	}
	// The usual file operations work.
	must(t, os.Rename(filepath.Join(mp, "new"), filepath.Join(mp, "a", "renamed")))
	must(t, os.Symlink("../renamed", filepath.Join(mp, "a", "b", "link")))
	if target, err := os.Readlink(filepath.Join(dir, "a", "b", "link")); err != nil || target != "../renamed" {
		t.Errorf("symlink stored as %q, %v", target, err)
	}
	must(t, os.Link(filepath.Join(mp, "a", "renamed"), filepath.Join(mp, "hard")))
	must(t, os.Chmod(filepath.Join(mp, "hard"), 0o600))
	must(t, os.Truncate(filepath.Join(mp, "hard"), 5))
	if st, err := os.Stat(filepath.Join(dir, "a", "renamed")); err != nil || st.Mode().Perm() != 0o600 || st.Size() != 5 {
		t.Errorf("chmod/truncate through a hard link: %v %v", st, err)
	}
	ents, err := os.ReadDir(filepath.Join(mp, "a"))
	if err != nil || len(ents) != 2 {
		t.Errorf("readdir: %v %v", ents, err)
	}
	must(t, os.RemoveAll(filepath.Join(mp, "a")))

	// Touching a file the user may write but does not own sets the time
	// to now (write permission suffices); an explicit time needs the owner.
	must(t, os.WriteFile(filepath.Join(dir, "group-rw"), nil, 0o600))
	must(t, os.Chown(filepath.Join(dir, "group-rw"), 0, 1001))
	must(t, os.Chmod(filepath.Join(dir, "group-rw"), 0o664))
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(mp, "group-rw"), now, 0); err != nil {
		t.Errorf("touch of a group-writable file: %v", err)
	}
	if err := os.Chtimes(filepath.Join(mp, "group-rw"), time.Unix(1, 0), time.Unix(1, 0)); !errors.Is(err, os.ErrPermission) {
		t.Errorf("explicit times on a file the user does not own: %v, want EPERM", err)
	}
	// An open file keeps working after its name is gone. (Not fchmod:
	// the kernel sends it by inode, without the open file, and the name
	// is gone; NFS clients rename such files instead, EFS's too.)
	f, err := os.OpenFile(filepath.Join(mp, "tmp"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must(t, os.Remove(filepath.Join(mp, "tmp")))
	must(t, f.Truncate(3))
	if _, err := f.WriteAt([]byte("abcdef"), 2); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 8 {
		t.Errorf("unlinked open file after truncate and write: %v %v", st, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Blocks == 0 {
		t.Errorf("statfs: %+v %v", sfs, err)
	}
}

// A mount made for a sandboxed container's user (1234:1234) shows the
// access point user's files as that user's and the access point's groups
// as its group, the user's real files as nobody's, and everything else
// as it is; a chown to the container's ids is a chown to the access
// point's (what gVisor's gofer does to each file it creates), keeping a
// group a set-gid directory gave; any other chown is the host's to
// decide, as the access point's user. A root client sees the real
// owners.
func TestSandboxClient(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	must(t, os.Chown(dir, 1001, 1001))
	for name, ids := range map[string][2]int{"ap": {1001, 1001}, "group-2000": {0, 2000}, "real-1234": {1234, 1234}, "root": {0, 0}} {
		must(t, os.WriteFile(filepath.Join(dir, name), nil, 0o644))
		must(t, os.Chown(filepath.Join(dir, name), ids[0], ids[1]))
	}
	must(t, os.Mkdir(filepath.Join(dir, "sgid"), 0o775))
	must(t, os.Chown(filepath.Join(dir, "sgid"), 1001, 2000))
	must(t, os.Chmod(filepath.Join(dir, "sgid"), os.ModeSetgid|0o775))
	mp := mountTree(t, dir, 1001, 1001, []uint32{2000}, &Client{UID: 1234, GID: 1234})
	for name, want := range map[string][2]uint32{
		".": {1234, 1234}, "ap": {1234, 1234}, "group-2000": {0, 1234}, "real-1234": {65534, 65534}, "root": {0, 0}, "sgid": {1234, 1234},
	} {
		if u, g := owner(t, filepath.Join(mp, name)); u != want[0] || g != want[1] {
			t.Errorf("%s shows as %d:%d, want %d:%d", name, u, g, want[0], want[1])
		}
	}
	// What the gofer does after creating a file: chown to the container's
	// user. It succeeds, and the file is the access point's on the host.
	// Its open descriptor's stat (answered from the open file) shows the
	// container's user too.
	f, err := os.OpenFile(filepath.Join(mp, "new"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	must(t, f.Chown(1234, 1234))
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Uid != 1234 || st.Gid != 1234 {
		t.Errorf("fstat of a file just made: %d:%d %v, want 1234:1234", st.Uid, st.Gid, err)
	}
	f.Close()
	if u, g := owner(t, filepath.Join(dir, "new")); u != 1001 || g != 1001 {
		t.Errorf("new after chown 1234:1234 is %d:%d on the host, want 1001:1001", u, g)
	}
	must(t, os.Mkdir(filepath.Join(mp, "sgid", "sub"), 0o755))
	must(t, os.Chown(filepath.Join(mp, "sgid", "sub"), 1234, 1234))
	if u, g := owner(t, filepath.Join(dir, "sgid", "sub")); u != 1001 || g != 2000 {
		t.Errorf("directory made in a set-gid directory of group 2000, chowned to 1234:1234: %d:%d on the host, want 1001:2000", u, g)
	}
	for name, ids := range map[string][2]int{"new": {0, -1}, "root": {1234, 1234}, "real-1234": {1234, -1}} {
		if err := os.Chown(filepath.Join(mp, name), ids[0], ids[1]); !errors.Is(err, os.ErrPermission) {
			t.Errorf("chown %s to %v: %v, want EPERM", name, ids, err)
		}
	}
	// Root needs no stand-in: it passes gVisor's checks by its capabilities.
	rootMP := mountTree(t, dir, 1001, 1001, []uint32{2000}, &Client{UID: 0, GID: 0})
	if u, g := owner(t, filepath.Join(rootMP, "ap")); u != 1001 || g != 1001 {
		t.Errorf("a root client sees ap as %d:%d, want the real 1001:1001", u, g)
	}
	must(t, os.WriteFile(filepath.Join(rootMP, "by-root"), nil, 0o644))
	must(t, os.Chown(filepath.Join(rootMP, "by-root"), 0, 0))
	if u, g := owner(t, filepath.Join(dir, "by-root")); u != 1001 || g != 1001 {
		t.Errorf("by-root after chown 0:0 through a root client's mount: %d:%d, want 1001:1001", u, g)
	}
}

// Nothing above the root is reachable, even when a directory the kernel
// already knows is swapped for a symlink behind its back (another task on
// the same tree can do that): a server resolving host paths would follow
// it out of the root.
func TestConfinedToRoot(t *testing.T) {
	needFUSE(t)
	top := t.TempDir()
	must(t, os.WriteFile(filepath.Join(top, "secret"), []byte("above the root"), 0o644))
	dir := filepath.Join(top, "ap")
	must(t, os.MkdirAll(filepath.Join(dir, "d"), 0o777))
	must(t, os.Chmod(dir, 0o777))
	must(t, os.WriteFile(filepath.Join(dir, "d", "secret"), []byte("inside"), 0o644))
	mp := mountTree(t, dir, 1001, 1001, nil, nil)

	d, err := os.Open(filepath.Join(mp, "d"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The route the escape would take works before the swap.
	if fd, err := unix.Openat(int(d.Fd()), "secret", unix.O_RDONLY, 0); err != nil {
		t.Fatalf("d/secret through the open directory: %v", err)
	} else {
		unix.Close(fd)
	}
	must(t, os.Remove(filepath.Join(dir, "d", "secret")))
	must(t, os.Rename(filepath.Join(dir, "d"), filepath.Join(dir, "d.old")))
	must(t, os.Symlink("..", filepath.Join(dir, "d"))) // d/secret would be top/secret
	fd, err := unix.Openat(int(d.Fd()), "secret", unix.O_RDONLY, 0)
	if err == nil {
		b := make([]byte, 64)
		k, _ := unix.Read(fd, b)
		unix.Close(fd)
		t.Fatalf("read %q above the root through a swapped directory", b[:k])
	}
	must(t, os.Remove(filepath.Join(dir, "d")))
	must(t, os.Symlink(filepath.Join(top), filepath.Join(dir, "d"))) // absolute, too
	if _, err := unix.Openat(int(d.Fd()), "secret", unix.O_RDONLY, 0); err == nil {
		t.Fatal("read above the root through an absolute symlink swapped in")
	}

	// A symlink is the container's kernel's to follow: stored and read
	// back as written, and its target resolves in the caller's namespace,
	// never through the server.
	must(t, os.Symlink("../secret", filepath.Join(mp, "up")))
	if target, err := os.Readlink(filepath.Join(mp, "up")); err != nil || target != "../secret" {
		t.Errorf("readlink: %q %v", target, err)
	}
	if _, err := os.ReadFile(filepath.Join(mp, "up")); !errors.Is(err, os.ErrNotExist) {
		// mp/../secret is the test's work directory's, which has none.
		t.Errorf("following ../secret from the mount's root: %v, want not found", err)
	}
	if _, err := os.Stat(filepath.Join(mp, "..", "ap")); err == nil {
		t.Error("the mount's parent is the tree's parent")
	}
}

// Two mounts of one tree (two tasks) appending to one file at once lose
// no line and tear none: O_APPEND reaches the backing file, which appends
// at its real end instead of at a size either mount saw, and each write
// is one request even where it crosses a page of the file (lines of 22
// bytes cross one every 187 lines).
func TestConcurrentAppend(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777))
	mps := []string{mountTree(t, dir, 1001, 1001, nil, nil), mountTree(t, dir, 1001, 1001, nil, nil)}
	const lines = 500
	var wg sync.WaitGroup
	for i, mp := range mps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range lines {
				f, err := os.OpenFile(filepath.Join(mp, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
				if err != nil {
					t.Error(err)
					return
				}
				fmt.Fprintf(f, "mount-%d line-%04d\n", i, j)
				f.Close()
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 2*lines {
		t.Errorf("%d lines after two mounts appended %d each", n, lines)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var i, j int
		if n, _ := fmt.Sscanf(l, "mount-%d line-%04d", &i, &j); n != 2 || len(l) != len("mount-0 line-0000") || seen[l] {
			t.Errorf("line %q torn or repeated", l)
		}
		seen[l] = true
	}
	// And each mount sees the other's writes at once.
	for _, mp := range mps {
		if c, err := os.ReadFile(filepath.Join(mp, "log")); err != nil || len(c) != len(b) {
			t.Errorf("%s reads %d bytes (%v), the file has %d", mp, len(c), err, len(b))
		}
	}
}

// A page written through a shared mapping of a file opened O_APPEND goes
// in place, as on a local file system (PageWrites), not at the end.
func TestMapAppendFile(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777))
	mp := mountTree(t, dir, 1001, 1001, nil, nil)
	maptest.AppendFile(t, filepath.Join(mp, "log"), filepath.Join(dir, "log"))
}

// A helper whose mount is gone ends, and Stop on a dead mount (helper
// killed) cleans it up.
func TestStopDeadHelper(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	exe, _ := os.Executable()
	root, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	mp := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mp, 0o755))
	pid, err := Start(exe, root, Mount{Mountpoint: mp, UID: 1001, GID: 1001, Source: "x"}, filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, syscall.Kill(pid, syscall.SIGKILL))
	for helperRuns(pid, mp) {
	}
	if Serving(mp) {
		t.Error("a mount whose helper died still counts as served")
	}
	if err := Stop(mp, pid); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mp); err != nil {
		t.Errorf("mount point after Stop: %v", err)
	}
}

// Bad helper arguments are errors, not a mount.
func TestMainArgs(t *testing.T) {
	for _, args := range [][]string{{}, {"--mountpoint", "/x", "--groups", "1,a"}, {"--uid", "-1"},
		{"--mountpoint", "/x", "--uid", "4294967296"}, {"--mountpoint", "/x", "--client", "1234"}} {
		if err := Main(context.Background(), args); err == nil {
			t.Errorf("Main(%q) succeeded", args)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// parseGroups takes what the agent writes and refuses the rest, never
// panicking; what it accepts prints back to the same gids.
func FuzzParseGroups(f *testing.F) {
	for _, s := range []string{"", "2000", "1,2,3", ",,", "4294967295", "4294967296", "-1", "1,a", " 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		gids, err := parseGroups(s)
		if err != nil {
			return
		}
		strs := make([]string, len(gids))
		for i, g := range gids {
			strs[i] = fmt.Sprint(g)
		}
		again, err := parseGroups(strings.Join(strs, ","))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(gids) {
			t.Errorf("%q -> %v -> %v, %v", s, gids, again, err)
		}
	})
}

// parseClient takes "" or UID:GID and refuses the rest, never panicking;
// what it accepts prints back to itself.
func FuzzParseClient(f *testing.F) {
	for _, s := range []string{"", "1234:1234", "0:0", "1234", ":", "1:", "4294967295:1", "4294967296:1", "-1:0", "1:2:3", " 1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseClient(s)
		if err != nil || c == nil {
			if err == nil && s != "" {
				t.Errorf("%q: no client and no error", s)
			}
			return
		}
		again, err := parseClient(c.String())
		if err != nil || *again != *c {
			t.Errorf("%q -> %v -> %v, %v", s, c, again, err)
		}
	})
}
