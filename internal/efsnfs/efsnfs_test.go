package efsnfs

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serve exports dir under name on loopback and mounts it with the FUSE
// client; both go at cleanup.
func serve(t *testing.T, dir, name string, e Export) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE mounts and identity switches")
	}
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.Root = root
	if err := s.Add(name, e); err != nil {
		t.Fatal(err)
	}
	mp := t.TempDir()
	os.Chmod(filepath.Dir(mp), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Mount(ctx, MountSpec{Mountpoint: mp, Addr: s.Addr().String(), Export: name, Source: "test"}, func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount(mp, unix.MNT_DETACH)
		cancel()
		<-done
	})
	return mp
}

func TestWriteReadSquashed(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	mp := serve(t, dir, "/fsap-1", Export{UID: 1234, GID: 2345, Groups: []uint32{3456}, Squash: true})
	if err := os.WriteFile(filepath.Join(mp, "a"), []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "a"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 2345 || st.Mode&0o777 != 0o640 {
		t.Fatalf("backing file uid %d gid %d mode %o, want 1234 2345 640", st.Uid, st.Gid, st.Mode&0o777)
	}
	b, err := os.ReadFile(filepath.Join(mp, "a"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q %v", b, err)
	}
	// A root-owned 0600 file stays closed to the squashed user.
	os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o600)
	if _, err := os.ReadFile(filepath.Join(mp, "secret")); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("read root's 0600 file: %v, want permission denied", err)
	}
	// chown to root is mapped back to the user.
	os.Chown(filepath.Join(mp, "a"), 0, 0)
	unix.Lstat(filepath.Join(dir, "a"), &st)
	if st.Uid != 1234 {
		t.Fatalf("chown gave the file to %d", st.Uid)
	}
	if err := os.Mkdir(filepath.Join(mp, "d"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mp, "a"), filepath.Join(mp, "d", "b")); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(mp, "d"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "b" {
		t.Fatalf("readdir %v %v", ents, err)
	}
	if err := os.RemoveAll(filepath.Join(mp, "d")); err != nil {
		t.Fatal(err)
	}
}

func TestConfinedToRoot(t *testing.T) {
	top := t.TempDir()
	os.WriteFile(filepath.Join(top, "outside"), []byte("host"), 0o644)
	dir := filepath.Join(top, "ap")
	os.Mkdir(dir, 0o777)
	mp := serve(t, dir, "/fsap-2", Export{})
	// The link is stored as written and followed by the client's kernel,
	// inside the mount: ../outside is above the root and names nothing.
	if err := os.Symlink("../outside", filepath.Join(mp, "up")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "up")); err == nil {
		t.Fatalf("read through ../ symlink: %q", b)
	}
	if err := os.Symlink("/", filepath.Join(mp, "abs")); err != nil {
		t.Fatal(err)
	}
	// A directory the server sees swapped for a symlink is refused, not
	// followed: ask the server directly for a name below the link.
	os.Symlink(top, filepath.Join(dir, "esc"))
	c, err := dial(mustServer(t, dir), "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	efh, _, err := c.lookup(c.root, "esc")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.lookup(efh, "outside"); err == nil {
		t.Fatal("lookup below a symlink reached the host's file")
	}
	// .. of the export's root is the root at most, never its parent.
	if up, _, err := c.lookup(c.root, ".."); err == nil {
		if _, _, err := c.lookup(up, "outside"); err == nil {
			t.Fatal(".. of the root reached above it")
		}
	}
}

func mustServer(t *testing.T, dir string) string {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root, _ := os.Open(dir)
	s.Add("/x", Export{Root: root})
	return s.Addr().String()
}

// Appends through one open file never overlap: NFSv3 has no append, so
// the client asks for the size and writes there, one write at a time per
// handle.
func TestAppendsThroughOneFile(t *testing.T) {
	dir := t.TempDir()
	mp := serve(t, dir, "/fs", Export{})
	f, err := os.OpenFile(filepath.Join(mp, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := f.Write([]byte{byte('a' + w), '\n'}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(dir, "log"))
	for w := range 4 {
		if n := strings.Count(string(b), string(rune('a'+w))+"\n"); n != 50 {
			t.Errorf("writer %c: %d of 50 lines landed", 'a'+w, n)
		}
	}
}

// A mount target that does not answer fails the mount within the dial
// timeout, not after the transport's minutes of retries.
func TestNoServerFailsMount(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepts nothing: the MOUNT call is never answered
	start := time.Now()
	c, err := dialTimeout(ln.Addr().String(), "/x", 2*time.Second)
	if err == nil {
		c.close()
		t.Fatal("mount of a server that never answers worked")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("dial gave up after %s: %v", d, err)
	}
}

// A CREATE of a name another client made meanwhile opens it as it is:
// two tasks starting `echo >> log` at once keep both lines.
func TestCreateExistingKeepsData(t *testing.T) {
	dir := t.TempDir()
	mp := serve(t, dir, "/fs", Export{})
	os.WriteFile(filepath.Join(dir, "log"), []byte("first\n"), 0o644)
	c, err := dial(mustServer(t, dir), "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if _, _, err := c.create(c.root, "log", 0o644, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(mp, "log")); string(b) != "first\n" {
		t.Errorf("after an unchecked CREATE of an existing file: %q", b)
	}
	if _, _, err := c.create(c.root, "log", 0o644, true); err == nil {
		t.Error("guarded CREATE of an existing file worked")
	}
}
