package efsnfs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/efsfuse"
	"github.com/gantry-dev/gantry/internal/efsfuse/maptest"
)

// serve exports dir under name on loopback, with e's options, and mounts
// it with the FUSE client; both go at cleanup.
func serve(t *testing.T, dir, name string, e Export) string {
	t.Helper()
	s := serveAt(t, "127.0.0.1:0", e, map[string]string{name: dir})
	return mount(t, s.Addr().String(), name)
}

// serveAt serves on addr ("127.0.0.1:0" for any port), until cleanup,
// each directory of dirs under its export name, with opts' options.
// Called again on the same address it serves them anew, as after a
// restart.
func serveAt(t *testing.T, addr string, opts Export, dirs map[string]string) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: FUSE mounts, open_by_handle_at and identity switches")
	}
	s, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for name, dir := range dirs {
		root, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		e := opts
		e.Root = root
		if err := s.Add(name, e); err != nil {
			t.Fatal(err)
		}
	}
	s.Serve()
	return s
}

// startAt serves dir as /fs on addr ("127.0.0.1:0" for any port).
func startAt(t *testing.T, dir, addr string) *Server {
	t.Helper()
	return serveAt(t, addr, Export{}, map[string]string{"/fs": dir})
}

// mount mounts the export name of the server at addr with the FUSE
// client until cleanup.
func mount(t *testing.T, addr, name string) string {
	t.Helper()
	return mountView(t, addr, name, nil)
}

// mountView is mount with the owners shown through view (a sandbox's).
func mountView(t *testing.T, addr, name string, view *efsfuse.IDView) string {
	t.Helper()
	mp := t.TempDir()
	os.Chmod(filepath.Dir(mp), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Mount(ctx, MountSpec{Mountpoint: mp, Addr: addr, Export: name, Source: "test", View: view}, func() { close(ready) })
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
	c, err := dial(newTransport(mustServer(t, dir)), "/x")
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
	return serveAt(t, "127.0.0.1:0", Export{}, map[string]string{"/x": dir}).Addr().String()
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
	c, err := dial(newTransport(mustServer(t, dir)), "/x")
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

// Handles outlive the server: a mount keeps working across a restart of
// its server (a new Server on the same address and export, with nothing
// of the old one's memory), through the files and directories it opened
// before, one renamed into another directory included; a writer
// appending all along loses no line and sees no error, its calls waiting
// while no server listens.
func TestServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, "127.0.0.1:0")
	addr := s.Addr().String()
	mp := mount(t, addr, "/fs")
	if err := os.MkdirAll(filepath.Join(mp, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	log, err := os.OpenFile(filepath.Join(mp, "d", "e", "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	moved, err := os.Create(filepath.Join(mp, "moved"))
	if err != nil {
		t.Fatal(err)
	}
	defer moved.Close()
	if err := os.Rename(filepath.Join(mp, "moved"), filepath.Join(mp, "d", "moved")); err != nil {
		t.Fatal(err)
	}
	dirf, err := os.Open(filepath.Join(mp, "d", "e"))
	if err != nil {
		t.Fatal(err)
	}
	defer dirf.Close()

	stop := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- result{i, nil}
				return
			default:
			}
			if _, err := fmt.Fprintf(log, "line %d\n", i); err != nil {
				done <- result{i, err}
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	s.Close()
	time.Sleep(700 * time.Millisecond) // nothing listens: calls wait
	s = startAt(t, dir, addr)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	r := <-done
	if r.err != nil {
		t.Fatalf("append %d across the restart: %v", r.n, r.err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "d", "e", "log"))
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != r.n {
		t.Errorf("%d lines on the server's tree, %d written", len(lines), r.n)
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	if r.n < 20 {
		t.Errorf("only %d lines written", r.n)
	}
	// Handles the client got before the restart: a file renamed into
	// another directory, and a directory.
	if _, err := moved.Write([]byte("after")); err != nil {
		t.Errorf("write through the renamed file after the restart: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "d", "moved")); string(b) != "after" {
		t.Errorf("renamed file holds %q", b)
	}
	if names, err := dirf.Readdirnames(-1); err != nil || len(names) != 1 || names[0] != "log" {
		t.Errorf("listing a directory opened before the restart: %v %v", names, err)
	}
}

// Two clients appending to one file at once lose no line and tear none:
// the client sends appends at appendOffset and the server writes them at
// the end as O_APPEND does (plain NFSv3 would let both land on one
// offset), and each write(2) is one WRITE even where it crosses a page
// of the file (lines of 26 bytes cross one every 158 lines). Half the
// writers open the file for each line, as `echo >> log` does, half keep
// it open.
func TestAppendsFromTwoMounts(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, "127.0.0.1:0")
	mps := []string{mount(t, s.Addr().String(), "/fs"), mount(t, s.Addr().String(), "/fs")}
	const writers, lines = 4, 150
	var wg sync.WaitGroup
	for i, mp := range mps {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var f *os.File
				for j := range lines {
					if f == nil {
						var err error
						if f, err = os.OpenFile(filepath.Join(mp, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
							t.Error(err)
							return
						}
					}
					if _, err := fmt.Fprintf(f, "mount-%d-writer-%d-line-%03d\n", i, w, j); err != nil {
						t.Error(err)
						return
					}
					if w%2 == 0 {
						f.Close()
						f = nil
					}
				}
				if f != nil {
					f.Close()
				}
			}()
		}
	}
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(dir, "log"))
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	seen := map[string]bool{}
	var wrong []string
	for _, l := range got {
		var i, w, j int
		if n, _ := fmt.Sscanf(l, "mount-%d-writer-%d-line-%03d", &i, &w, &j); n != 3 || len(l) != len("mount-0-writer-0-line-000") || seen[l] {
			wrong = append(wrong, l)
		}
		seen[l] = true
	}
	if want := len(mps) * writers * lines; len(got) != want || len(seen) != want || len(wrong) > 0 {
		t.Errorf("%d lines (%d distinct) of %d landed; torn or repeated: %q", len(got), len(seen), want, wrong)
	}
}

// Without an access point user, each call runs as its caller, as EFS
// applies an NFS client's own uid and gids: a file a uid-1234 process
// creates is 1234's, root's 0600 file is closed to it, a file of one of
// its supplementary groups is open to it, and root stays root.
func TestCallerIdentity(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	mp := serve(t, dir, "/fs", Export{})
	os.WriteFile(filepath.Join(dir, "secret"), []byte("root's"), 0o600)
	os.WriteFile(filepath.Join(dir, "group"), []byte("shared"), 0o640)
	os.Chown(filepath.Join(dir, "group"), 0, 3456)
	as := func(script string) error {
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1234, Gid: 1234, Groups: []uint32{3456}}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := as("echo mine > " + filepath.Join(mp, "mine") + " && mkdir " + filepath.Join(mp, "d")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"mine", "d"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, f), &st); err != nil || st.Uid != 1234 || st.Gid != 1234 {
			t.Errorf("%s made by uid 1234: owner %d:%d, %v", f, st.Uid, st.Gid, err)
		}
	}
	if err := as("cat " + filepath.Join(mp, "secret")); err == nil {
		t.Error("uid 1234 read root's 0600 file")
	}
	if err := as("echo x >> " + filepath.Join(mp, "secret")); err == nil {
		t.Error("uid 1234 wrote root's 0600 file")
	}
	if err := as("grep -q shared " + filepath.Join(mp, "group")); err != nil {
		t.Errorf("supplementary group 3456 not applied: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mp, "root-made"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(dir, "root-made"), &st); st.Uid != 0 {
		t.Errorf("root's file is %d's", st.Uid)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "secret")); err != nil || string(b) != "root's" {
		t.Errorf("root reading its own file: %q %v", b, err)
	}
}

// A file opened O_APPEND (direct I/O, openHandle) can still be mapped
// shared and written through the map; what the map writes lands at its
// place, not appended (efsfuse.PageWrites).
func TestMapAppendFile(t *testing.T) {
	dir := t.TempDir()
	mp := serve(t, dir, "/fs", Export{})
	maptest.AppendFile(t, filepath.Join(mp, "log"), filepath.Join(dir, "log"))
}

// A file another client moves to another directory stays the same file
// for a client that holds it open, as on EFS: it keeps writing and
// reading through its descriptor, and a stat by its old handle works,
// also after a server restart (nothing cached: the file is found by its
// own handle). Moved out of the access point's root it is stale to the
// access point's client, which never reaches the file outside.
func TestMovedByAnotherClient(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "ap", "a"), 0o777)
	os.MkdirAll(filepath.Join(dir, "ap", "b"), 0o777)
	dirs := map[string]string{"/fs": dir, "/fs-ap": filepath.Join(dir, "ap")}
	start := func(addr string) *Server { return serveAt(t, addr, Export{}, dirs) }
	s := start("127.0.0.1:0")
	addr := s.Addr().String()
	first, other := mount(t, addr, "/fs-ap"), mount(t, addr, "/fs")

	f, err := os.OpenFile(filepath.Join(first, "a", "file"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("one "), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(other, "ap", "a", "file"), filepath.Join(other, "ap", "b", "file")); err != nil {
		t.Fatal(err)
	}
	use := func(off int64, word string) {
		t.Helper()
		if _, err := f.WriteAt([]byte(word), off); err != nil {
			t.Fatalf("write %q through the moved file: %v", word, err)
		}
		buf := make([]byte, off+int64(len(word)))
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatalf("read through the moved file: %v", err)
		}
		if st, err := f.Stat(); err != nil || st.Size() != int64(len(buf)) {
			t.Fatalf("stat of the moved file: %v, %v", st, err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "ap", "b", "file")); string(b) != string(buf) {
			t.Fatalf("server's tree holds %q, the client read %q", b, buf)
		}
	}
	use(4, "two ")

	// A restart forgets every path: the handle alone must find b/file.
	s.Close()
	s = start(addr)
	use(8, "three ")

	// Out of the access point's root: stale, never the file outside.
	if err := os.Rename(filepath.Join(other, "ap", "b", "file"), filepath.Join(other, "out")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = start(addr)
	if _, err := f.WriteAt([]byte("leak"), 0); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("write after the file left the access point's root: %v, want ESTALE", err)
	}
	if _, err := f.ReadAt(make([]byte, 4), 0); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("read after the file left the access point's root: %v, want ESTALE", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "one two three " {
		t.Errorf("file outside the root holds %q", b)
	}
}
