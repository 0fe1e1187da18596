package efsfuse

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A root-squashing mount: root's requests are nobody's (65534), every
// other caller keeps its uid, gid and supplementary groups, and the host
// kernel decides each request for that identity.
func TestSquashRoot(t *testing.T) {
	needFUSE(t)
	base, err := os.MkdirTemp("", "efsfuse-squash-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Everyone must reach the mount point: the callers below are not root.
	must(os.Chmod(base, 0o755))
	tree := filepath.Join(base, "tree")
	must(os.Mkdir(tree, 0o777))
	must(os.Chmod(tree, 0o777))
	must(os.WriteFile(filepath.Join(tree, "secret"), []byte("root's"), 0o600))
	must(os.WriteFile(filepath.Join(tree, "group-2000"), []byte("shared"), 0o640))
	must(os.Chown(filepath.Join(tree, "group-2000"), 0, 2000))
	must(os.Mkdir(filepath.Join(tree, "home"), 0o700))
	must(os.Chown(filepath.Join(tree, "home"), 1234, 1234))

	exe, err := os.Executable()
	must(err)
	root, err := os.OpenFile(tree, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	must(err)
	defer root.Close()
	mp := filepath.Join(base, "mnt")
	must(os.Mkdir(mp, 0o755))
	pid, err := Start(exe, root, Mount{Mountpoint: mp, Squash: true, Source: "fs-test:/"}, filepath.Join(base, "log"))
	must(err)
	t.Cleanup(func() {
		if err := Stop(mp, pid); err != nil {
			t.Error(err)
		}
	})

	// Root, squashed.
	must(os.WriteFile(filepath.Join(mp, "by-root"), []byte("x"), 0o644))
	if u, g := owner(t, filepath.Join(tree, "by-root")); u != Anonymous || g != Anonymous {
		t.Errorf("root's new file is %d:%d on the host, want 65534:65534", u, g)
	}
	must(os.Mkdir(filepath.Join(mp, "dir-by-root"), 0o755))
	if u, _ := owner(t, filepath.Join(tree, "dir-by-root")); u != Anonymous {
		t.Errorf("root's new directory is owned by %d, want 65534", u)
	}
	if _, err := os.ReadFile(filepath.Join(mp, "secret")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("root read root's 0600 file through the squashed mount: %v", err)
	}
	if _, err := os.ReadDir(filepath.Join(mp, "home")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("root listed 1234's 0700 directory: %v", err)
	}
	if err := os.Chown(filepath.Join(mp, "by-root"), 0, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown to root: %v, want EPERM", err)
	}

	// Another user keeps its identity and its groups.
	as := func(script string) error {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 1234, Groups: []uint32{2000}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("%s: %s", script, out)
		}
		return err
	}
	if err := as("echo y > " + filepath.Join(mp, "home", "mine") + " && cat " + filepath.Join(mp, "group-2000")); err != nil {
		t.Errorf("1234 (groups 2000) could not write in its directory or read its group's file: %v", err)
	}
	if u, g := owner(t, filepath.Join(tree, "home", "mine")); u != 1234 || g != 1234 {
		t.Errorf("1234's file is %d:%d on the host, want 1234:1234", u, g)
	}
	if err := as("cat " + filepath.Join(mp, "secret")); err == nil {
		t.Errorf("1234 read root's 0600 file")
	}
}
