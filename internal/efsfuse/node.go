// Package efsfuse serves an EFS access point's root directory as a FUSE
// file system in which every operation is done as the access point's
// POSIX user, as EFS does for NFS clients of an access point.
//
// A bind mount keeps the caller's identity: root in a container could
// write anywhere in the mounted tree and files would get the writer's
// uid. Here the container talks to the kernel's FUSE client, and the
// kernel hands each operation to this server, which runs as the access
// point's uid, gid and secondary gids (its whole process is switched to
// them, see Serve). The host kernel then checks every operation against
// that identity, and files get its owner, whoever the container's user is.
//
// Root confinement: the server never follows a symlink and never resolves
// a path outside the root. Each operation opens its directory with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) relative to a descriptor of
// the root and acts on the last component with *at calls that do not
// follow symlinks. The container's kernel resolves symlinks itself, in the
// container's mount namespace, where the root of the mount is the top; and
// a directory swapped for a symlink behind the kernel's back (by another
// task sharing the tree) fails with ELOOP instead of leading out.
package efsfuse

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// beneath is how every path below the root is resolved: no symlink, no
// magic link, no other mount, nothing above the root.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// tree is the served directory.
type tree struct {
	root     int // descriptor of the root directory
	uid, gid uint32
	groups   []uint32
	// client is the container user a gVisor sandbox checks permissions
	// for (nil under runc): see IDView.
	client *Client
	// user is set once the process runs as the access point's user;
	// until then nothing in the tree is touched (go-fuse's own start-up
	// requests do not reach it).
	user atomic.Bool
}

// node is one file or directory; it knows its place only through the
// inode tree go-fuse keeps (its path from the root).
type node struct {
	fs.Inode
	t *tree
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeAccesser       = (*node)(nil)
)

func errno(err error) syscall.Errno { return fs.ToErrno(err) }

// openDir opens the directory at rel (relative to the root, "" for the
// root itself) as an O_PATH descriptor. done closes it.
func (t *tree) openDir(rel string) (fd int, done func(), e syscall.Errno) {
	if !t.user.Load() {
		return -1, nil, syscall.EIO
	}
	if rel == "" {
		return t.root, func() {}, 0
	}
	fd, err := unix.Openat2(t.root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: beneath,
	})
	if err != nil {
		return -1, nil, errno(err)
	}
	return fd, func() { unix.Close(fd) }, 0
}

func (n *node) rel() string { return n.Path(n.Root()) }

// self opens n's directory. Only meaningful for directories.
func (n *node) self() (int, func(), syscall.Errno) { return n.t.openDir(n.rel()) }

// at names n as a directory descriptor and a last component, for the *at
// calls; the root is "." in itself.
func (n *node) at() (dir int, name string, done func(), e syscall.Errno) {
	rel := n.rel()
	if rel == "" {
		return n.t.root, ".", func() {}, 0
	}
	parent, name := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		parent, name = rel[:i], rel[i+1:]
	}
	dir, done, e = n.t.openDir(parent)
	return dir, name, done, e
}

// validName refuses what the kernel never sends but would lead out of a
// directory if it did.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsRune(name, '/')
}

func stable(st *unix.Stat_t) fs.StableAttr {
	return fs.StableAttr{Mode: st.Mode & unix.S_IFMT, Ino: st.Ino}
}

func (t *tree) fromStat(out *fuse.Attr, st *unix.Stat_t) {
	*out = fuse.Attr{
		Ino: st.Ino, Size: uint64(st.Size), Blocks: uint64(st.Blocks),
		Atime: uint64(st.Atim.Sec), Atimensec: uint32(st.Atim.Nsec),
		Mtime: uint64(st.Mtim.Sec), Mtimensec: uint32(st.Mtim.Nsec),
		Ctime: uint64(st.Ctim.Sec), Ctimensec: uint32(st.Ctim.Nsec),
		Mode: st.Mode, Nlink: uint32(st.Nlink),
		Owner: fuse.Owner{Uid: t.showUID(st.Uid), Gid: t.showGID(st.Gid)},
		Rdev:  uint32(st.Rdev), Blksize: uint32(st.Blksize),
	}
}

// child stats name in dir and makes (or finds) its inode.
func (n *node) child(ctx context.Context, dir int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, errno(err)
	}
	n.t.fromStat(&out.Attr, &st)
	return n.NewInode(ctx, &node{t: n.t}, stable(&st)), 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !validName(name) {
		return nil, syscall.ENOENT
	}
	dir, done, e := n.self()
	if e != 0 {
		return nil, e
	}
	defer done()
	return n.child(ctx, dir, name, out)
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if g, ok := f.(fs.FileGetattrer); ok {
		// The open file's own stat, shown as every other.
		e := g.Getattr(ctx, out)
		out.Owner = fuse.Owner{Uid: n.t.showUID(out.Uid), Gid: n.t.showGID(out.Gid)}
		return e
	}
	var st unix.Stat_t
	if n.IsRoot() {
		// Like a mount point, the root can be looked at by anyone.
		if err := unix.Fstat(n.t.root, &st); err != nil {
			return errno(err)
		}
		n.t.fromStat(&out.Attr, &st)
		return 0
	}
	dir, name, done, e := n.at()
	if e != 0 {
		return e
	}
	defer done()
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return errno(err)
	}
	n.t.fromStat(&out.Attr, &st)
	return 0
}

// fchmodat2 (Linux 6.6) is the chmod that can refuse to follow a symlink.
const sysFchmodat2 = 452

// Setattr changes the file through the caller's open descriptor when it
// has one (a file may be open, and writable, after its mode changed or
// its name went), else by name in its directory, never following a
// symlink.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	fd := -1
	if lf, ok := f.(*fs.LoopbackFile); ok {
		fd, _ = lf.PassthroughFd()
	}
	dir, name := fd, ""
	if fd < 0 {
		var done func()
		var e syscall.Errno
		if dir, name, done, e = n.at(); e != 0 {
			return e
		}
		defer done()
	}
	if mode, ok := in.GetMode(); ok {
		var err error
		if fd >= 0 {
			err = unix.Fchmod(fd, mode&0o7777)
		} else {
			err = fchmodat2(dir, name, mode&0o7777)
		}
		if err != nil {
			return errno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		// The host kernel decides, as the access point's user, on the
		// ids as they are on the host (see ownerUID).
		u, g := -1, -1
		if uok {
			u = int(n.t.ownerUID(uid))
		}
		if gok {
			var st unix.Stat_t
			if err := unix.Fstatat(dir, name, &st, flags(fd)); err != nil {
				return errno(err)
			}
			g = int(n.t.ownerGID(gid, st.Gid))
		}
		var err error
		if fd >= 0 {
			err = unix.Fchown(fd, u, g)
		} else {
			err = unix.Fchownat(dir, name, u, g, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return errno(err)
		}
	}
	if size, ok := in.GetSize(); ok {
		tfd := fd
		if tfd < 0 {
			var err error
			tfd, err = unix.Openat(dir, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return errno(err)
			}
			defer unix.Close(tfd)
		}
		if err := unix.Ftruncate(tfd, int64(size)); err != nil {
			return errno(err)
		}
	}
	// "Now" stays UTIME_NOW rather than a time: setting the current time
	// needs only write permission, an explicit one needs ownership.
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME != 0 {
			if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
				ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
			} else {
				ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
			}
		}
		if in.Valid&fuse.FATTR_MTIME != 0 {
			if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
				ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
			} else {
				ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
			}
		}
		if err := unix.UtimesNanoAt(dir, name, ts, flags(fd)); err != nil {
			return errno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, flags(fd)); err != nil {
		return errno(err)
	}
	n.t.fromStat(&out.Attr, &st)
	return 0
}

// flags is how Fstatat names the file: by descriptor, or by a name that
// is not followed.
func flags(fd int) int {
	if fd >= 0 {
		return unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

func fchmodat2(dir int, name string, mode uint32) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, en := unix.Syscall6(sysFchmodat2, uintptr(dir), uintptr(unsafe.Pointer(p)), uintptr(mode), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	if en != 0 {
		return en
	}
	return nil
}

// The sandbox ownership view (IDView, idview.go) of this tree's user.
func (t *tree) view() *IDView {
	return &IDView{UID: t.uid, GID: t.gid, Groups: t.groups, Client: t.client}
}

func (t *tree) showUID(u uint32) uint32       { return t.view().ShowUID(u) }
func (t *tree) showGID(g uint32) uint32       { return t.view().ShowGID(g) }
func (t *tree) ownerUID(u uint32) uint32      { return t.view().OwnerUID(u) }
func (t *tree) ownerGID(g, cur uint32) uint32 { return t.view().OwnerGID(g, cur) }
func (t *tree) inGroups(g uint32) bool        { return t.view().InGroups(g) }

// openFlags keeps what the caller asked for, O_APPEND included: with it
// the backing file's pwrite appends at its real end, so appends from
// tasks on other mounts of the tree interleave instead of overwriting
// each other at a stale size.
func openFlags(flags uint32) int {
	return int(flags&^uint32(fuse.FMODE_EXEC)) | unix.O_NOFOLLOW | unix.O_CLOEXEC
}

// fopenFlags has the kernel do direct I/O on a file opened O_APPEND, so
// that each write(2), up to MaxWrite, reaches the backing file as one
// request and so one append. Through the page cache the kernel ends a
// request at a page it has not read in (a write crossing a page of the
// file becomes two), and the backing file appends each at its end of the
// moment, with another mount's append between the halves. The mount
// allows mmap of such files (CAP_DIRECT_IO_ALLOW_MMAP, Serve).
func fopenFlags(flags uint32) uint32 {
	if flags&unix.O_APPEND != 0 {
		return fuse.FOPEN_DIRECT_IO
	}
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	dir, name, done, e := n.at()
	if e != 0 {
		return nil, 0, e
	}
	defer done()
	fd, err := unix.Openat(dir, name, openFlags(flags), 0)
	if err != nil {
		return nil, 0, errno(err)
	}
	return fs.NewLoopbackFile(fd), fopenFlags(flags), 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if !validName(name) {
		return nil, nil, 0, syscall.EINVAL
	}
	dir, done, e := n.self()
	if e != 0 {
		return nil, nil, 0, e
	}
	defer done()
	fd, err := unix.Openat(dir, name, openFlags(flags)|unix.O_CREAT, mode&0o7777)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, errno(err)
	}
	n.t.fromStat(&out.Attr, &st)
	return n.NewInode(ctx, &node{t: n.t}, stable(&st)), fs.NewLoopbackFile(fd), fopenFlags(flags), 0
}

// makeChild creates name in n's directory with mk and returns its inode.
func (n *node) makeChild(ctx context.Context, name string, out *fuse.EntryOut, mk func(dir int) error) (*fs.Inode, syscall.Errno) {
	if !validName(name) {
		return nil, syscall.EINVAL
	}
	dir, done, e := n.self()
	if e != 0 {
		return nil, e
	}
	defer done()
	if err := mk(dir); err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, dir, name, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeChild(ctx, name, out, func(dir int) error { return unix.Mkdirat(dir, name, mode&0o7777) })
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeChild(ctx, name, out, func(dir int) error { return unix.Mknodat(dir, name, mode, int(rdev)) })
}

func (n *node) remove(name string, flags int) syscall.Errno {
	if !validName(name) {
		return syscall.EINVAL
	}
	dir, done, e := n.self()
	if e != 0 {
		return e
	}
	defer done()
	return errno(unix.Unlinkat(dir, name, flags))
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return n.remove(name, 0) }
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, unix.AT_REMOVEDIR)
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.t != n.t {
		return syscall.EXDEV
	}
	if !validName(name) || !validName(newName) {
		return syscall.EINVAL
	}
	from, done1, e := n.self()
	if e != 0 {
		return e
	}
	defer done1()
	to, done2, e := np.self()
	if e != 0 {
		return e
	}
	defer done2()
	return errno(unix.Renameat2(from, name, to, newName, uint(flags)))
}

// Symlink stores the target as given: only the container's kernel ever
// follows it, inside the container.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeChild(ctx, name, out, func(dir int) error { return unix.Symlinkat(target, dir, name) })
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, ok := target.(*node)
	if !ok || tn.t != n.t {
		return nil, syscall.EXDEV
	}
	return n.makeChild(ctx, name, out, func(dir int) error {
		tdir, tname, done, e := tn.at()
		if e != 0 {
			return e
		}
		defer done()
		return unix.Linkat(tdir, tname, dir, name, 0)
	})
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	dir, name, done, e := n.at()
	if e != 0 {
		return nil, e
	}
	defer done()
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return nil, errno(err)
		}
		if k < size {
			return buf[:k], 0
		}
	}
}

func (n *node) openDirStream() (fs.DirStream, syscall.Errno) {
	dir, name, done, e := n.at()
	if e != 0 {
		return nil, e
	}
	defer done()
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errno(err)
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, e := n.openDirStream()
	return ds, 0, e
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) { return n.openDirStream() }

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(n.t.root, &st); err != nil {
		return errno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	dir, name, done, e := n.at()
	if e != 0 {
		return e
	}
	defer done()
	return errno(unix.Faccessat(dir, name, mask, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EACCESS))
}
