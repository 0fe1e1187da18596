package efsnfs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// A mount made for a sandboxed container of 1234:1234 on an access point
// of 1001:1001 (secondary 2000) shows the access point's files as the
// container's, the container's own ids as nobody and others as they are;
// takes the gofer's create-then-chown to the container's user as a chown
// to the access point's user (a no-op on the server), and makes regular
// files by mknod, as gVisor's gofer does. The server still decides, as
// the access point's user.
func TestSandboxView(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("/fsap-1", Export{Root: root, UID: 1001, GID: 1001, Groups: []uint32{2000}, Squash: true}); err != nil {
		t.Fatal(err)
	}
	s.Serve()
	view := &efsfuse.IDView{UID: 1001, GID: 1001, Groups: []uint32{2000}, Client: &efsfuse.Client{UID: 1234, GID: 1234}}
	mp := mountView(t, s.Addr().String(), "/fsap-1", view)

	owner := func(p string) (uint32, uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid, st.Gid
	}
	// Made through the mount: the access point's on the server, the
	// container's as shown; the gofer's chown to the container's user
	// succeeds and changes nothing on the server.
	if err := os.WriteFile(filepath.Join(mp, "made"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(mp, "made"), 1234, 1234); err != nil {
		t.Errorf("chown to the container's user: %v", err)
	}
	if u, g := owner(filepath.Join(dir, "made")); u != 1001 || g != 1001 {
		t.Errorf("made on the server: %d:%d, want 1001:1001", u, g)
	}
	if u, g := owner(filepath.Join(mp, "made")); u != 1234 || g != 1234 {
		t.Errorf("made as shown: %d:%d, want 1234:1234", u, g)
	}
	// A chown to anyone else gives nothing away: the server takes every
	// id of an access point's client as its user's (ident.mapIDs).
	if err := os.Chown(filepath.Join(mp, "made"), 0, 0); err != nil {
		t.Errorf("chown to root: %v", err)
	}
	if u, g := owner(filepath.Join(dir, "made")); u != 1001 || g != 1001 {
		t.Errorf("made on the server after a chown to root: %d:%d, want 1001:1001", u, g)
	}
	// Files of others as they are; the container's own ids as nobody; a
	// secondary group of the access point as the container's group.
	for name, ids := range map[string][2]int{"roots": {0, 0}, "theirs": {1234, 1234}, "group": {1001, 2000}} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, ids[0], ids[1])
	}
	for name, want := range map[string][2]uint32{"roots": {0, 0}, "theirs": {65534, 65534}, "group": {1234, 1234}} {
		if u, g := owner(filepath.Join(mp, name)); u != want[0] || g != want[1] {
			t.Errorf("%s (%v on the server) shown as %d:%d, want %d:%d", name, want, u, g, want[0], want[1])
		}
	}
	// mknod makes regular files; device files are refused, FIFOs not
	// carried.
	if err := unix.Mknod(filepath.Join(mp, "node"), unix.S_IFREG|0o600, 0); err != nil {
		t.Errorf("mknod of a regular file: %v", err)
	} else if u, _ := owner(filepath.Join(dir, "node")); u != 1001 {
		t.Errorf("mknod's file on the server: uid %d, want 1001", u)
	}
	if err := unix.Mknod(filepath.Join(mp, "node"), unix.S_IFREG|0o600, 0); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mknod over an existing file: %v, want EEXIST", err)
	}
	if err := unix.Mknod(filepath.Join(mp, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mknod of a device: %v, want EPERM", err)
	}
}

func TestViewFlag(t *testing.T) {
	for _, v := range []*efsfuse.IDView{
		{UID: 1001, GID: 1001, Client: &efsfuse.Client{UID: 1234, GID: 1234}},
		{UID: 0, GID: 7, Groups: []uint32{1, 4294967295}, Client: &efsfuse.Client{UID: 0, GID: 0}},
	} {
		got, err := parseView(formatView(v))
		if err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("%q read back as %+v, %v", formatView(v), got, err)
		}
	}
	for _, bad := range []string{"1", "1:2", "1:2=3", "1:2=3:", "a:2=3:4", "1:2:=3:4", "1:2:3:4=5:6", "1:4294967296=1:1", "-1:2=3:4"} {
		if v, err := parseView(bad); err == nil {
			t.Errorf("parseView(%q) = %+v, want an error", bad, v)
		}
	}
}

// FuzzParseView: whatever the flag says, parseView answers a view or an
// error, and a view it answers writes back to what reads the same.
func FuzzParseView(f *testing.F) {
	for _, s := range []string{"1001:1001=1234:1234", "0:7:1,2=0:0", "1:2=3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseView(s)
		if err != nil || v == nil {
			return
		}
		again, err := parseView(formatView(v))
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("%q: %+v written as %q reads %+v, %v", s, v, formatView(v), again, err)
		}
	})
}

// SETATTR's attributes follow the handle, which go-nfs reads without its
// XDR padding: an unaligned handle had chmod read as a chown to a
// garbage uid and truncate fail (padHandle). Through a mount without an
// access point user, as root, every setattr does what it says.
func TestSetattr(t *testing.T) {
	dir := t.TempDir()
	mp := serve(t, dir, "/fs-1", Export{})
	p := filepath.Join(mp, "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Errorf("chmod: %v", err)
	}
	if err := os.Truncate(p, 2); err != nil {
		t.Errorf("truncate: %v", err)
	}
	if err := os.Chown(p, 4321, 5432); err != nil {
		t.Errorf("chown: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 || st.Size != 2 || st.Uid != 4321 || st.Gid != 5432 {
		t.Errorf("on the server: mode %o size %d owner %d:%d, want 600, 2, 4321:5432", st.Mode&0o7777, st.Size, st.Uid, st.Gid)
	}
}
