package efsnfs

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The server's side, by raw calls: a WRITE asked UNSTABLE is answered
// UNSTABLE with no sync, a stable one is synced and says so, COMMIT
// syncs and answers the same verifier, and an append says where it
// landed.
func TestWriteStabilityAndCommit(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, "127.0.0.1:0")
	tr := newTransport(s.Addr().String())
	defer tr.close()
	c, err := dial(tr, "/fs")
	if err != nil {
		t.Fatal(err)
	}
	fh, _, err := c.create(c.root, "f", 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	syncs := s.syncs.Load()
	w, err := c.write(fh, 0, []byte("hello "), unstable)
	if err != nil {
		t.Fatal(err)
	}
	if w.n != 6 || w.stable != unstable || w.verf != s.verf {
		t.Errorf("UNSTABLE write answered %+v, want 6 bytes UNSTABLE under %x", w, s.verf)
	}
	if got := s.syncs.Load() - syncs; got != 0 {
		t.Errorf("%d syncs for an UNSTABLE write", got)
	}
	for _, how := range []uint32{dataSync, fileSync} {
		syncs = s.syncs.Load()
		w, err = c.write(fh, 6, []byte("world\n"), how)
		if err != nil {
			t.Fatal(err)
		}
		if w.stable != how || w.verf != s.verf {
			t.Errorf("write asked %d answered %+v", how, w)
		}
		if got := s.syncs.Load() - syncs; got != 1 {
			t.Errorf("%d syncs for a write asked %d, want 1", got, how)
		}
	}
	syncs = s.syncs.Load()
	verf, err := c.commit(fh)
	if err != nil {
		t.Fatal(err)
	}
	if verf != s.verf {
		t.Errorf("COMMIT answered %x, the WRITEs %x", verf, s.verf)
	}
	if got := s.syncs.Load() - syncs; got != 1 {
		t.Errorf("%d syncs for a COMMIT, want 1", got)
	}
	// A directory commits too (fsync(2) of a directory); a removed file's
	// handle is stale.
	if _, err := c.commit(c.root); err != nil {
		t.Errorf("COMMIT of the root directory: %v", err)
	}
	for i, line := range []string{"one\n", "two\n"} {
		w, err := c.write(fh, appendOffset, []byte(line), unstable)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(12 + 4*i); !w.hasPre || w.preSize != want {
			t.Errorf("append %d landed at %d (sent: %v), want %d", i, w.preSize, w.hasPre, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "hello world\none\ntwo\n" {
		t.Errorf("file holds %q", b)
	}
	if err := c.remove(c.root, "f", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.commit(fh); err == nil {
		t.Error("COMMIT of a removed file succeeded")
	}

	// Another server instance (a restart) has another verifier.
	s2 := startAt(t, t.TempDir(), "127.0.0.1:0")
	if s2.verf == s.verf {
		t.Errorf("two server instances share the verifier %x", s.verf)
	}
}

// The helper's side: writes go UNSTABLE, close(2) of a written file
// commits once however much was written, a read-only close and a second
// close commit nothing, fsync(2) commits, and too much uncommitted data
// is committed before the close.
func TestCloseAndFsyncCommit(t *testing.T) {
	dir := t.TempDir()
	s := startAt(t, dir, "127.0.0.1:0")
	mp := mount(t, s.Addr().String(), "/fs")
	data := make([]byte, 4<<20)
	rand.Read(data)
	syncs := s.syncs.Load()
	since := func() uint64 { n := s.syncs.Load(); d := n - syncs; syncs = n; return d }
	if err := os.WriteFile(filepath.Join(mp, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if n := since(); n != 1 {
		t.Errorf("writing 4 MiB and closing: %d syncs, want 1 (the close's COMMIT)", n)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || !bytes.Equal(b, data) {
		t.Errorf("read back %d bytes, %v", len(b), err)
	}
	if n := since(); n != 0 {
		t.Errorf("reading: %d syncs", n)
	}
	f, err := os.OpenFile(filepath.Join(mp, "f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := since(); n != 0 {
		t.Errorf("fsync with nothing written: %d syncs", n)
	}
	if _, err := f.WriteAt([]byte("x"), 10); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := since(); n != 1 {
		t.Errorf("fsync after a write: %d syncs, want 1", n)
	}
	d, err := os.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
	if n := since(); n != 1 {
		t.Errorf("fsync of a directory: %d syncs, want 1", n)
	}

	// Past 1 MiB uncommitted a commit starts, past 2 MiB the writer
	// waits for one: so by the fourth 1 MiB write at least one COMMIT
	// was made, before any close.
	defer func(v int) { maxUncommitted = v }(maxUncommitted)
	maxUncommitted = 1 << 20
	g, err := os.Create(filepath.Join(mp, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := g.Write(data[off : off+1<<20]); err != nil {
			t.Fatal(err)
		}
	}
	if n := since(); n < 1 {
		t.Errorf("4 MiB written with at most 1 MiB to be uncommitted: %d syncs before the close", n)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "g")); !bytes.Equal(b, data) {
		t.Errorf("g holds %d bytes, not the 4 MiB written", len(b))
	}
}

// A COMMIT answered under another verifier than the writes before it
// means the server restarted and may have lost them: the helper writes
// them again, where they went (appends too), and commits again. Here the
// restart loses the file's page cache as a host crash would (the backing
// file is cut short while no server runs); with nothing lost (a process
// restart), the resend writes the same bytes again and nothing doubles.
func TestCommitResendsAfterRestart(t *testing.T) {
	for _, lose := range []bool{true, false} {
		name := "process restart"
		if lose {
			name = "host crash"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := startAt(t, dir, "127.0.0.1:0")
			addr := s.Addr().String()
			mp := mount(t, addr, "/fs")
			data := make([]byte, 3<<20+5)
			rand.Read(data)
			f, err := os.Create(filepath.Join(mp, "data"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			log, err := os.OpenFile(filepath.Join(mp, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			var lines strings.Builder
			for i := range 50 {
				l := strings.Repeat(string(rune('a'+i%26)), 10+i) + "\n"
				lines.WriteString(l)
				if _, err := log.WriteString(l); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			if lose {
				for _, p := range []string{"data", "log"} {
					if err := os.Truncate(filepath.Join(dir, p), 100); err != nil {
						t.Fatal(err)
					}
				}
			}
			s2 := startAt(t, dir, addr)
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync after the restart: %v", err)
			}
			if err := log.Close(); err != nil {
				t.Fatalf("close after the restart: %v", err)
			}
			if s2.syncs.Load() < 2 {
				t.Errorf("%d syncs by the restarted server, want a COMMIT for each file", s2.syncs.Load())
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "data")); !bytes.Equal(b, data) {
				t.Errorf("data file: %d bytes after the restart, want the %d written", len(b), len(data))
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "log")); string(b) != lines.String() {
				t.Errorf("log after the restart:\n%q\nwant\n%q", b, lines.String())
			}
		})
	}
}

// A file its caller can no longer open still commits (through the
// export's identity, or by syncing the file system), and close(2) does
// not fail for it.
func TestCommitUnopenableFile(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	s := startAt(t, dir, "127.0.0.1:0")
	tr := newTransport(s.Addr().String())
	defer tr.close()
	c, err := dial(tr, "/fs")
	if err != nil {
		t.Fatal(err)
	}
	c.who = &who{uid: 1500, gid: 1500}
	fh, _, err := c.create(c.root, "f", 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.write(fh, 0, []byte("data"), unstable); err != nil {
		t.Fatal(err)
	}
	if err := c.setattr(fh, sattr{Mode: new(uint32)}); err != nil {
		t.Fatal(err)
	}
	syncs := s.syncs.Load()
	for _, fe := range s.exports["/fs"].all() {
		fe.fds.drop(".") // as after fdIdle: nothing cached
	}
	if _, err := c.commit(fh); err != nil {
		t.Errorf("COMMIT of a mode 0 file: %v", err)
	}
	if s.syncs.Load() == syncs {
		t.Error("COMMIT of a mode 0 file synced nothing")
	}
}
