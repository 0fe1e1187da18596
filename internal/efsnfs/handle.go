package efsnfs

// File handles that outlive the server. go-nfs works on paths and asks
// the Handler to turn a path into a handle and back; its stock
// CachingHandler hands out random ids kept in memory, so a restarted
// server answers every handle its clients hold with NFS3ERR_STALE (and
// looks an id up by walking its whole cache). Here a handle names the
// file by what the backing file system itself uses to find it again:
//
//	version(1) export(8) kind(1) ...
//	  root: nothing more
//	  dir:  the directory's own name_to_handle_at handle
//	  file: the parent directory's handle and the file's own handle
//	  file (before kindFileID, still accepted): inode(8) birth time(8)
//	    and the parent directory's handle
//	(a name_to_handle_at handle is length(1) type(4) bytes)
//
// export is the first bytes of the SHA-256 of the export's name, so the
// same export served again after a restart claims the same handles. A
// directory is found again with open_by_handle_at, which reconnects a
// directory to its path; that path must lie below the export's root, and
// the path opened from the root (openat2, no symlinks) must be that same
// directory. A file is opened by its own handle, but the kernel does not
// reconnect it to a path, so it is first looked for as the entry of its
// parent with that handle; failing that (another client moved it to
// another directory), the path the kernel knows for it must lie below the
// export's root and name it from the root, as for a directory. Handles
// are only a way to name a file the client was given: every operation
// still resolves the path from the export's root as the export's user.
//
// Chosen over a persistent id-to-path map in the data directory: nothing
// to keep in step with renames, nothing to lose in a crash, and nothing
// grows with the number of files. What it cannot do: a file moved to
// another directory whose path the kernel has forgotten (not looked up
// since it was moved, and evicted from the dentry cache) is stale, as is
// one moved outside the export's root or removed. File systems without
// name_to_handle_at get handles that last as long as the server.
//
// Resolved paths are kept in an LRU, checked again after any rename or
// removal (epoch).

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync/atomic"

	billy "github.com/go-git/go-billy/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"
)

const (
	handleVersion = 1

	kindRoot     = 1
	kindDir      = 2
	kindFile     = 3
	kindVolatile = 4 // the backing file system has no handles
	kindFileID   = 5 // a file, with its own handle as well as its parent's

	handleCacheSize = 1 << 16
)

// epoch moves on every rename or removal made through any export of
// this process: a path resolved before may name something else now.
var epoch atomic.Uint64

func bumpEpoch() { epoch.Add(1) }

type resolved struct {
	t     *tree
	p     []string
	ino   uint64
	epoch uint64
}

// handles is a Server's handle table.
type handles struct {
	s     *Server
	cache *lru.Cache[string, resolved]
}

func newHandles(s *Server) *handles {
	c, _ := lru.New[string, resolved](handleCacheSize)
	return &handles{s: s, cache: c}
}

func exportID(name string) [8]byte {
	h := sha256.Sum256([]byte(name))
	return [8]byte(h[:8])
}

func (t *tree) prefix(kind byte) []byte {
	b := make([]byte, 0, maxFH)
	b = append(b, handleVersion)
	b = append(b, t.xid[:]...)
	return append(b, kind)
}

// fid is the backing file system's handle for name in dir (with
// AT_EMPTY_PATH, for dir itself): its type and bytes.
func fid(dir int, name string) ([]byte, error) {
	flags := 0
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	fh, _, err := unix.NameToHandleAt(dir, name, flags)
	if err != nil {
		return nil, err
	}
	if len(fh.Bytes()) > 255-4 {
		return nil, unix.EOVERFLOW
	}
	b := []byte{byte(4 + len(fh.Bytes()))}
	b = binary.BigEndian.AppendUint32(b, uint32(fh.Type()))
	return append(b, fh.Bytes()...), nil
}

func (h *handles) toHandle(t *tree, p []string) []byte {
	if len(p) == 0 {
		return t.prefix(kindRoot)
	}
	rel := path.Join(p...)
	b, ino, err := t.stableHandle(rel)
	if err != nil || len(b) > maxFH {
		b = t.prefix(kindVolatile)
		var r [16]byte
		rand.Read(r[:])
		b = append(b, r[:]...)
	}
	h.cache.Add(string(b), resolved{t: t.top(), p: append([]string(nil), p...), ino: ino, epoch: epoch.Load()})
	return b
}

// splitHandle parts a handle a client sent into the one this server gave
// (base) and what the client added after it (the caller, see caller).
func splitHandle(fh []byte) (base, extra []byte, ok bool) {
	if len(fh) < 10 || fh[0] != handleVersion {
		return nil, nil, false
	}
	n := 10
	switch fh[9] {
	case kindRoot:
	case kindDir:
		if len(fh) < 11 {
			return nil, nil, false
		}
		n = 11 + int(fh[10])
	case kindFile:
		if len(fh) < 27 {
			return nil, nil, false
		}
		n = 27 + int(fh[26])
	case kindVolatile:
		n = 26
	case kindFileID:
		if len(fh) < 11 || len(fh) < 12+int(fh[10]) {
			return nil, nil, false
		}
		own := 11 + int(fh[10])
		n = own + 1 + int(fh[own])
	default:
		return nil, nil, false
	}
	if len(fh) < n {
		return nil, nil, false
	}
	return fh[:n], fh[n:], true
}

// stableHandle makes rel's handle, and returns its inode number.
func (t *tree) stableHandle(rel string) ([]byte, uint64, error) {
	dfd, name, err := t.parent(rel)
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(dfd)
	var st unix.Statx_t
	if err := unix.Statx(dfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_BTIME, &st); err != nil {
		return nil, 0, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		f, err := fid(dfd, name)
		if err != nil {
			return nil, 0, err
		}
		return append(t.prefix(kindDir), f...), st.Ino, nil
	}
	f, err := fid(dfd, "")
	if err != nil {
		return nil, 0, err
	}
	// The file's own handle finds it when another client (or anyone while
	// the server was down) moved it to another directory. It holds the
	// inode and its generation (which tells a new file on a reused inode
	// from the old one), so kindFile's inode number and birth time are
	// left out: the 64 bytes of an NFSv3 handle also carry the caller and
	// its groups.
	if own, err := fid(dfd, name); err == nil {
		return append(append(t.prefix(kindFileID), f...), own...), st.Ino, nil
	}
	b := t.prefix(kindFile)
	b = binary.BigEndian.AppendUint64(b, st.Ino)
	b = binary.BigEndian.AppendUint64(b, btime(&st))
	return append(b, f...), st.Ino, nil
}

func btime(st *unix.Statx_t) uint64 {
	if st.Mask&unix.STATX_BTIME == 0 {
		return 0
	}
	return uint64(st.Btime.Sec)<<30 | uint64(st.Btime.Nsec)
}

var errStale = &nfs.NFSStatusError{NFSStatus: nfs.NFSStatusStale}

func (h *handles) fromHandle(fh []byte) (billy.Filesystem, []string, error) {
	base, extra, ok := splitHandle(fh)
	if !ok {
		return nil, nil, errStale
	}
	c, ok := parseCaller(extra)
	if !ok {
		return nil, nil, errStale
	}
	t, p, err := h.resolve(base)
	if err != nil {
		return nil, nil, err
	}
	v, err := t.as(c)
	if err != nil {
		return nil, nil, errStale
	}
	return v, p, nil
}

// resolve finds the export and path a handle this server gave names.
func (h *handles) resolve(fh []byte) (*tree, []string, error) {
	if r, ok := h.cache.Get(string(fh)); ok {
		if r.epoch == epoch.Load() || r.t.still(r.p, r.ino) {
			if r.epoch != epoch.Load() {
				r.epoch = epoch.Load()
				h.cache.Add(string(fh), r)
			}
			return r.t, append([]string(nil), r.p...), nil
		}
	}
	t := h.s.byID([8]byte(fh[1:9]))
	if t == nil {
		return nil, nil, errStale
	}
	var rel string
	var ino uint64
	var err error
	switch fh[9] {
	case kindRoot:
		return t, nil, nil
	case kindDir:
		rel, ino, err = t.findDir(fh[11:])
	case kindFile:
		ino = binary.BigEndian.Uint64(fh[10:])
		rel, err = t.findFile(fh[27:], ino, binary.BigEndian.Uint64(fh[18:]))
	case kindFileID:
		own := 11 + int(fh[10])
		rel, ino, err = t.findFileID(fh[11:own], fh[own:])
	default:
		return nil, nil, errStale
	}
	if err != nil {
		return nil, nil, errStale
	}
	p := strings.Split(rel, "/")
	if rel == "." {
		p = nil
	}
	h.cache.Add(string(fh), resolved{t: t, p: p, ino: ino, epoch: epoch.Load()})
	return t, append([]string(nil), p...), nil
}

// still reports whether p still names the file with inode ino.
func (t *tree) still(p []string, ino uint64) bool {
	if len(p) == 0 {
		return true
	}
	dfd, name, err := t.parent(path.Join(p...))
	if err != nil {
		return false
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Ino == ino
}

// openFid opens the directory a fid names (O_PATH) and returns it with
// its path relative to the export's root, checked to be the directory
// that path names from the root without symlinks.
func (t *tree) openFid(f []byte) (int, string, error) {
	if len(f) < 4 {
		return -1, "", errors.New("short handle")
	}
	fh := unix.NewFileHandle(int32(binary.BigEndian.Uint32(f)), f[4:])
	if len(f) == 4 {
		return -1, "", errors.New("empty handle")
	}
	fd, err := unix.OpenByHandleAt(t.root, fh, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return -1, "", err
	}
	rel, err := t.below(fd)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	return fd, rel, nil
}

// below returns the path relative to the export's root of fd, a file
// opened by its handle: the path the kernel knows for it, which must lie
// below the root and, opened from the root as any other (openat2, no
// symlinks), name that same file. A file moved outside the root, unlinked
// (" (deleted)") or not connected to a path has none.
func (t *tree) below(fd int) (string, error) {
	where, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	top, err2 := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", t.root))
	if err != nil || err2 != nil {
		return "", errors.Join(err, err2)
	}
	rel := "."
	if where != top {
		var ok bool
		if rel, ok = strings.CutPrefix(where, strings.TrimSuffix(top, "/")+"/"); !ok {
			return "", errors.New("outside the export")
		}
	}
	var a, b unix.Stat_t
	chk, err := t.openat(rel, unix.O_PATH, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(chk)
	if unix.Fstat(fd, &a) != nil || unix.Fstat(chk, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		return "", errors.New("moved")
	}
	return rel, nil
}

func (t *tree) findDir(f []byte) (string, uint64, error) {
	fd, rel, err := t.openFid(f)
	if err != nil {
		return "", 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", 0, err
	}
	return rel, st.Ino, nil
}

// findFile finds the entry of the directory f with inode ino born at
// birth.
func (t *tree) findFile(f []byte, ino, birth uint64) (string, error) {
	return t.findEntry(f, ino, func(dfd int, name string) bool {
		var st unix.Statx_t
		return unix.Statx(dfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_BTIME, &st) == nil &&
			st.Ino == ino && btime(&st) == birth
	})
}

// findFileID finds the file whose own handle is own (length, type,
// bytes) and returns its path and inode number. The kernel opens it by
// that handle; its path is then taken as the entry of its directory f
// when it is still there (the kernel may not know the path of a file it
// has not looked up since), and otherwise as the path the kernel gives
// for it (below).
func (t *tree) findFileID(f, own []byte) (string, uint64, error) {
	if len(own) < 6 {
		return "", 0, errors.New("short handle")
	}
	fd, err := unix.OpenByHandleAt(t.root, unix.NewFileHandle(int32(binary.BigEndian.Uint32(own[1:])), own[5:]), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", 0, err
	}
	rel, err := t.findEntry(f, st.Ino, func(dfd int, name string) bool {
		got, err := fid(dfd, name)
		return err == nil && bytes.Equal(got, own)
	})
	if err == nil {
		return rel, st.Ino, nil
	}
	// The root is a directory: a file's own handle never resolves to it.
	if rel, err = t.below(fd); err != nil || rel == "." {
		return "", 0, errors.Join(err, errors.New("not a file below the export's root"))
	}
	return rel, st.Ino, nil
}

// findEntry finds the entry of the directory f with inode ino that match
// accepts.
func (t *tree) findEntry(f []byte, ino uint64, match func(dfd int, name string) bool) (string, error) {
	fd, rel, err := t.openFid(f)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(dfd)
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Getdents(dfd, buf)
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", unix.ENOENT
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			if binary.NativeEndian.Uint64(b) == ino {
				name := string(bytes.TrimRight(b[19:reclen], "\x00"))
				if match(dfd, name) {
					return path.Join(rel, name), nil
				}
			}
			b = b[reclen:]
		}
	}
}

// moved keeps cached paths right after a rename made here: a client
// keeps using a handle it holds for the file it renamed.
func (h *handles) moved(t *tree, from, to string) {
	fp, tp := strings.Split(from, "/"), strings.Split(to, "/")
	for _, k := range h.cache.Keys() {
		r, ok := h.cache.Peek(k)
		if !ok || r.t != t.top() || len(r.p) < len(fp) || !equal(r.p[:len(fp)], fp) {
			continue
		}
		r.p = append(append([]string(nil), tp...), r.p[len(fp):]...)
		r.epoch = epoch.Load()
		h.cache.Add(k, r)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
