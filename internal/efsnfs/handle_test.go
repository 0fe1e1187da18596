package efsnfs

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testTree is an export of a temporary directory with a file, a
// directory and a file in it, on a server that does not listen.
func testTree(t testing.TB) (*Server, *tree, string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: open_by_handle_at")
	}
	top := t.TempDir()
	dir := filepath.Join(top, "export")
	os.MkdirAll(filepath.Join(dir, "d"), 0o755)
	os.WriteFile(filepath.Join(dir, "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(dir, "d", "g"), []byte("g"), 0o644)
	os.WriteFile(filepath.Join(top, "outside"), []byte("host"), 0o644)
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	root, _ := os.Open(dir)
	if err := s.Add("/fs", Export{Root: root}); err != nil {
		t.Fatal(err)
	}
	return s, s.exports["/fs"], top
}

// A handle names the same file for a server that never saw it (the one
// after a restart): files, directories and the root; a file removed and
// a new one on its name is stale, not the new file.
func TestHandlesOutliveTheServer(t *testing.T) {
	s, tr, _ := testTree(t)
	hs := map[string][]byte{}
	for _, p := range []string{"", "f", "d", "d/g"} {
		var parts []string
		if p != "" {
			parts = strings.Split(p, "/")
		}
		hs[p] = s.handles.toHandle(tr, parts)
		if len(hs[p]) > maxFH || hs[p][9] == kindVolatile {
			t.Fatalf("%q: handle %x (kind %d), want a stable one of at most %d bytes", p, hs[p], hs[p][9], maxFH)
		}
	}
	fresh := newHandles(s) // nothing cached: as after a restart
	for p, h := range hs {
		_, got, err := fresh.fromHandle(h)
		if err != nil || strings.Join(got, "/") != p {
			t.Errorf("%q: resolved to %q, %v", p, got, err)
		}
	}
	dir := rootPath(t, tr)
	os.Remove(filepath.Join(dir, "d", "g"))
	os.WriteFile(filepath.Join(dir, "d", "g"), []byte("new"), 0o644)
	if _, got, err := newHandles(s).fromHandle(hs["d/g"]); err == nil {
		t.Errorf("handle of a removed file resolved to %q", got)
	}
}

// A file another client moved to another directory (here: the host, so
// nothing in the server hears of it) is found by its own handle; moved
// out of the export's root it is stale, never the path outside.
func TestHandleFollowsMovedFile(t *testing.T) {
	s, tr, top := testTree(t)
	h := s.handles.toHandle(tr, []string{"f"})
	// No longer than the kindFile handle (27 bytes and the directory's),
	// so no fewer of the caller's groups fit beside it.
	if h[9] != kindFileID || len(h) > 27+int(h[10]) {
		t.Fatalf("handle %x (kind %d): want kind %d of at most %d bytes", h, h[9], kindFileID, 27+int(h[10]))
	}
	dir := rootPath(t, tr)
	os.MkdirAll(filepath.Join(dir, "x", "y"), 0o755)
	if err := os.Rename(filepath.Join(dir, "f"), filepath.Join(dir, "x", "y", "moved")); err != nil {
		t.Fatal(err)
	}
	bumpEpoch()                                               // as another client's rename made through this server does
	for _, hs := range []*handles{s.handles, newHandles(s)} { // cached, and as after a restart
		if _, got, err := hs.fromHandle(h); err != nil || strings.Join(got, "/") != "x/y/moved" {
			t.Errorf("moved file resolved to %q, %v; want x/y/moved", got, err)
		}
	}
	bumpEpoch()
	if err := os.Rename(filepath.Join(dir, "x", "y", "moved"), filepath.Join(top, "escaped")); err != nil {
		t.Fatal(err)
	}
	for _, hs := range []*handles{s.handles, newHandles(s)} {
		if _, got, err := hs.fromHandle(h); err == nil {
			t.Errorf("file moved outside the export resolved to %q", got)
		}
	}
	// Back inside, it is found again.
	bumpEpoch()
	if err := os.Rename(filepath.Join(top, "escaped"), filepath.Join(dir, "back")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := newHandles(s).fromHandle(h); err != nil || strings.Join(got, "/") != "back" {
		t.Errorf("file moved back resolved to %q, %v; want back", got, err)
	}
}

func rootPath(t testing.TB, tr *tree) string {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(tr.root))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzFromHandle feeds arbitrary handles, as any client may send, to the
// server: none may panic, and none may name anything but a path below
// the export's root (the file system's own handle of a file outside it
// included).
func FuzzFromHandle(f *testing.F) {
	s, tr, top := testTree(f)
	for _, p := range [][]string{nil, {"f"}, {"d"}, {"d", "g"}} {
		f.Add(s.handles.toHandle(tr, p))
		f.Add(appendCaller(s.handles.toHandle(tr, p), 1234, 1234, []uint32{1, 2, 3, 4, 5}))
	}
	// The outside file's handle dressed as a directory and as a file.
	outside, err := os.Open(top)
	if err != nil {
		f.Fatal(err)
	}
	defer outside.Close()
	if b, err := fid(int(outside.Fd()), "outside"); err == nil {
		f.Add(append(tr.prefix(kindDir), b...))
		f.Add(append(tr.prefix(kindFile), append(make([]byte, 16), b...)...))
	}
	if b, err := fid(int(outside.Fd()), ""); err == nil {
		f.Add(append(tr.prefix(kindDir), b...))
	}
	// The outside file's own handle in a file handle whose directory is
	// the export's root.
	if own, err := fid(int(outside.Fd()), "outside"); err == nil {
		if pf, err := fid(tr.root, ""); err == nil {
			f.Add(append(append(tr.prefix(kindFileID), pf...), own...))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, p, err := newHandles(s).fromHandle(b)
		if err != nil {
			return
		}
		if slices.Contains(p, "..") || slices.Contains(p, "outside") {
			t.Fatalf("%x resolved to %q", b, p)
		}
	})
}

// FuzzRecord feeds arbitrary bytes to the client as a server's replies:
// records are bounded, and no reply header panics.
func FuzzRecord(f *testing.F) {
	f.Add([]byte(enc{}.u32(1<<31 | 28).u32(7).u32(1).u32(0).u32(0).u32(0).u32(0).u32(0)))
	f.Add([]byte(enc{}.u32(8).u32(7).u32(1).u32(1<<31 | 4).u32(0)))
	f.Add([]byte(enc{}.u32(1<<31 | 0x7fffffff)))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := readRecord(bufio.NewReader(bytes.NewReader(b)))
		if err == nil {
			if len(rec) > maxRecord {
				t.Fatalf("record of %d bytes", len(rec))
			}
			decodeReply(rec)
		}
		decodeReply(b)
	})
}

// FuzzCall feeds arbitrary bytes to the server's own reading of calls
// (fastpath.go): records are bounded, and a call is either taken as a
// READ, WRITE or COMMIT whose fields fit the record or left to go-nfs.
func FuzzCall(f *testing.F) {
	read := enc{}.u32(9).u32(0).u32(2).u32(nfsProg).u32(nfsVers).u32(procRead).u32(1).opaque([]byte("cred")).u32(0).u32(0).
		opaque([]byte{1, 2, 3}).u64(4096).u32(4096)
	write := enc{}.u32(9).u32(0).u32(2).u32(nfsProg).u32(nfsVers).u32(procWrite).u32(0).u32(0).u32(0).u32(0).
		opaque([]byte{1, 2, 3}).u64(^uint64(0)).u32(3).u32(2).opaque([]byte("abc"))
	f.Add([]byte(append(enc{}.u32(1<<31|uint32(len(read))), read...)))
	f.Add([]byte(append(enc{}.u32(1<<31|uint32(len(write))), write...)))
	commit := enc{}.u32(9).u32(0).u32(2).u32(nfsProg).u32(nfsVers).u32(procCommit).u32(0).u32(0).u32(0).u32(0).
		opaque([]byte{1, 2, 3}).u64(0).u32(0)
	f.Add([]byte(append(enc{}.u32(1<<31|uint32(len(commit))), commit...)))
	f.Add([]byte(enc{}.u32(4).u32(1).u32(1<<31 | 4).u32(2)))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := readCall(bytes.NewReader(b))
		if err == nil {
			if len(rec) > maxCall+4 {
				t.Fatalf("call of %d bytes", len(rec))
			}
			if c, ok := parseFast(rec[4:]); ok && (len(c.fh) > maxFH || uint32(len(c.data)) < c.count && c.write) {
				t.Fatalf("parsed %+v", c)
			}
		}
		parseFast(b)
	})
}
