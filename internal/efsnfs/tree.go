package efsnfs

// tree is the go-billy file system an export serves: a directory held
// open by descriptor, where every path is resolved with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV, so no `..`, symlink
// or mount leads above the export's root (the NFS handles name paths, and
// another client may swap a directory for a symlink at any moment).
// Symlinks are stored and read back as written, never followed here: the
// client's kernel follows them, inside its own mount.
//
// An export with a POSIX user runs every call that names a path on
// threads that have become that user (see ident), so the host kernel
// checks it; descriptors opened there keep that identity's access.

import (
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	billy "github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"
)

type tree struct {
	root int
	id   *ident // nil: as the server (root)
	xid  [8]byte
	h    *handles
	fds  *fdCache

	// An export without an access point user runs each call as its
	// caller (caller.go): base is the export a view is of, views the
	// export's views by identity.
	base  *tree
	vmu   sync.Mutex
	views map[string]*tree
	// rootSquash: a caller of uid or gid 0, or none, acts as 65534
	// (caller.go, as).
	rootSquash bool
}

// close releases the export and its views (which share its root).
func (t *tree) close() {
	t.vmu.Lock()
	for k, v := range t.views {
		v.fds.close()
		v.id.close()
		delete(t.views, k)
	}
	t.fds.close()
	if t.id != nil {
		t.id.close()
	}
	// Closed a little later: a call still running (its connection was
	// just cut) must not resolve a path from the number reused by then.
	root := t.root
	time.AfterFunc(10*time.Second, func() { unix.Close(root) })
	t.root = -1
	t.vmu.Unlock()
}

// changed is told of a rename or removal at p made here.
func (t *tree) changed(p string) {
	for _, v := range t.all() {
		v.fds.drop(clean(p))
	}
	bumpEpoch()
}

var _ billy.Filesystem = (*tree)(nil)
var _ billy.Change = (*tree)(nil)

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS

// clean turns a billy path into one relative to the root ("." for it).
func clean(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

func (t *tree) do(fn func() error) error {
	if t.id == nil {
		return fn()
	}
	return t.id.do(fn)
}

// openat opens p below the root; a symlink anywhere in it, the last
// component included, is refused (ELOOP).
func (t *tree) openat(p string, flags int, mode uint32) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolve}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(t.root, clean(p), how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a rename raced the resolution
		}
		return fd, err
	}
}

// parent opens p's directory (O_PATH) and returns it with p's last name.
func (t *tree) parent(p string) (int, string, error) {
	p = clean(p)
	if p == "." {
		return -1, "", unix.EINVAL
	}
	fd, err := t.openat(path.Dir(p), unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, path.Base(p), err
}

func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: p, Err: err}
}

// Create makes p, or opens it as it is: go-nfs calls it for an UNCHECKED
// CREATE of a name that may exist, which must not truncate (two tasks
// opening one log with O_CREAT|O_APPEND would lose the first's lines).
func (t *tree) Create(p string) (billy.File, error) {
	return t.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o666)
}

func (t *tree) Open(p string) (billy.File, error) { return t.OpenFile(p, os.O_RDONLY, 0) }

func (t *tree) OpenFile(p string, flag int, perm os.FileMode) (billy.File, error) {
	if flag == os.O_RDONLY || flag == os.O_RDWR {
		e, err := t.cachedOpen(p, flag == os.O_RDWR)
		if err != nil {
			return nil, pathErr("open", p, err)
		}
		return &cfile{t: t, e: e, name: clean(p), goNFS: true}, nil
	}
	var fd int
	err := t.do(func() error {
		var err error
		if flag&os.O_CREATE == 0 || flag&os.O_EXCL != 0 {
			fd, err = t.openat(p, flag, uint32(perm.Perm()))
		} else if fd, err = t.openat(p, flag|os.O_EXCL, uint32(perm.Perm())); err == unix.EEXIST {
			fd, err = t.openat(p, flag&^os.O_CREATE, 0)
			return err
		}
		if err == nil && flag&os.O_CREATE != 0 {
			// Made here: the server's umask must not apply, the client
			// sent the mode it wants (with its own umask applied).
			unix.Fchmod(fd, uint32(perm.Perm()))
		}
		return err
	})
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	return &file{f: os.NewFile(uintptr(fd), clean(p)), name: clean(p)}, nil
}

func (t *tree) Stat(p string) (os.FileInfo, error) { return t.Lstat(p) }

// Lstat never follows a symlink: NFS GETATTR describes the link itself.
func (t *tree) Lstat(p string) (os.FileInfo, error) {
	if st, ok := t.cachedStat(clean(p)); ok {
		return newInfo(path.Base(clean(p)), st), nil
	}
	var fi os.FileInfo
	err := t.do(func() error {
		var fd int
		var err error
		name := ""
		if clean(p) == "." {
			fd, err = unix.Dup(t.root)
		} else {
			fd, name, err = t.parent(p)
		}
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH); err != nil {
			return err
		}
		fi = newInfo(path.Base(clean(p)), &st)
		return nil
	})
	return fi, pathErr("lstat", p, err)
}

func (t *tree) Rename(from, to string) error {
	return pathErr("rename", from, t.do(func() error {
		fd1, n1, err := t.parent(from)
		if err != nil {
			return err
		}
		defer unix.Close(fd1)
		fd2, n2, err := t.parent(to)
		if err != nil {
			return err
		}
		defer unix.Close(fd2)
		if err := unix.Renameat(fd1, n1, fd2, n2); err != nil {
			return err
		}
		t.changed(to)
		t.changed(from)
		t.h.moved(t, clean(from), clean(to))
		return nil
	}))
}

func (t *tree) Remove(p string) error {
	return pathErr("remove", p, t.do(func() error {
		fd, name, err := t.parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		defer t.changed(p)
		err = unix.Unlinkat(fd, name, 0)
		if err == unix.EISDIR || err == unix.EPERM {
			if err2 := unix.Unlinkat(fd, name, unix.AT_REMOVEDIR); err2 != unix.ENOTDIR {
				return err2
			}
		}
		return err
	}))
}

func (t *tree) Join(elem ...string) string { return path.Join(elem...) }

func (t *tree) TempFile(dir, prefix string) (billy.File, error) {
	return nil, billy.ErrNotSupported
}

func (t *tree) ReadDir(p string) ([]os.FileInfo, error) {
	var out []os.FileInfo
	err := t.do(func() error {
		fd, err := t.openat(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		d := os.NewFile(uintptr(fd), p)
		defer d.Close()
		names, err := d.Readdirnames(-1)
		if err != nil {
			return err
		}
		for _, n := range names {
			var st unix.Stat_t
			if unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				out = append(out, newInfo(n, &st))
			}
		}
		return nil
	})
	return out, pathErr("readdir", p, err)
}

// MkdirAll makes only the last directory: NFS MKDIR names one, in a
// parent that exists.
func (t *tree) MkdirAll(p string, perm os.FileMode) error {
	return pathErr("mkdir", p, t.do(func() error {
		fd, name, err := t.parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Mkdirat(fd, name, uint32(perm.Perm())); err != nil {
			return err
		}
		return unix.Fchmodat(fd, name, uint32(perm.Perm()), unix.AT_SYMLINK_NOFOLLOW)
	}))
}

func (t *tree) Symlink(target, link string) error {
	return pathErr("symlink", link, t.do(func() error {
		fd, name, err := t.parent(link)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Symlinkat(target, fd, name)
	}))
}

func (t *tree) Readlink(link string) (string, error) {
	var s string
	err := t.do(func() error {
		fd, name, err := t.parent(link)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(fd, name, buf)
		s = string(buf[:n])
		return err
	})
	return s, pathErr("readlink", link, err)
}

func (t *tree) Chroot(string) (billy.Filesystem, error) { return nil, billy.ErrNotSupported }
func (t *tree) Root() string                            { return "/" }

func (t *tree) Chmod(p string, mode os.FileMode) error {
	defer t.fds.drop(clean(p)) // access is checked at open
	return pathErr("chmod", p, t.do(func() error {
		if clean(p) == "." {
			return unix.Fchmod(t.root, uint32(mode.Perm()))
		}
		fd, name, err := t.parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fchmodat(fd, name, uint32(mode.Perm()), unix.AT_SYMLINK_NOFOLLOW)
	}))
}

func (t *tree) Lchown(p string, uid, gid int) error {
	if t.id != nil {
		uid, gid = t.id.mapIDs(uid, gid)
	}
	defer t.fds.drop(clean(p))
	return pathErr("lchown", p, t.do(func() error {
		if clean(p) == "." {
			return unix.Fchownat(t.root, "", uid, gid, unix.AT_EMPTY_PATH)
		}
		fd, name, err := t.parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fchownat(fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

func (t *tree) Chown(p string, uid, gid int) error { return t.Lchown(p, uid, gid) }

func (t *tree) Chtimes(p string, atime, mtime time.Time) error {
	return pathErr("chtimes", p, t.do(func() error {
		ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		if clean(p) == "." {
			return unix.UtimesNanoAt(t.root, "", ts, unix.AT_EMPTY_PATH)
		}
		fd, name, err := t.parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// file is an open file of the tree; its descriptor carries the access it
// was opened with.
type file struct {
	f    *os.File
	name string
}

func (f *file) Name() string                            { return f.name }
func (f *file) Write(p []byte) (int, error)             { return f.f.Write(p) }
func (f *file) Read(p []byte) (int, error)              { return f.f.Read(p) }
func (f *file) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }
func (f *file) Seek(off int64, whence int) (int64, error) {
	return f.f.Seek(off, whence)
}
func (f *file) Close() error { return f.f.Close() }
func (f *file) Lock() error {
	return unix.Flock(int(f.f.Fd()), unix.LOCK_EX)
}
func (f *file) Unlock() error {
	return unix.Flock(int(f.f.Fd()), unix.LOCK_UN)
}
func (f *file) Truncate(n int64) error { return f.f.Truncate(n) }

// info is a stat result; go-nfs reads ids, inode and times from the
// *syscall.Stat_t Sys returns.
type info struct {
	name string
	st   unix.Stat_t
}

func newInfo(name string, st *unix.Stat_t) *info { return &info{name: name, st: *st} }

func (i *info) Name() string       { return i.name }
func (i *info) Size() int64        { return i.st.Size }
func (i *info) ModTime() time.Time { return time.Unix(i.st.Mtim.Unix()) }
func (i *info) IsDir() bool        { return i.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (i *info) Sys() any           { return statT(&i.st) }
func (i *info) Mode() os.FileMode {
	m := os.FileMode(i.st.Mode & 0o777)
	switch i.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFIFO:
		m |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= os.ModeSocket
	case unix.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		m |= os.ModeDevice
	}
	if i.st.Mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if i.st.Mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if i.st.Mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}
