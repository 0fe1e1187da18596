package efsnfs

// The FUSE file system of the mount helper: each inode is an NFS file
// handle, and each operation one or two NFS calls. Attributes are never
// cached and missing names not remembered; names are kept a second, page
// cache is dropped on open (no keep-cache): NFS's close-to-open.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

type node struct {
	fs.Inode
	c  *client
	fh atomic.Pointer[[]byte]
	// unc is the file's UNSTABLE writes not yet committed (commit.go).
	unc uncommitted
}

func newNode(c *client, fh []byte) *node {
	n := &node{c: c}
	n.fh.Store(&fh)
	return n
}

// h is the node's NFS handle: the latest the server gave for its inode
// (a file's handle names its directory, which a rename changes).
func (n *node) h() []byte { return *n.fh.Load() }

var (
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeFlusher    = (*node)(nil)
	_ fs.NodeMknoder    = (*node)(nil)
)

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// NFSv3 ftype3 to the S_IFMT bits.
func typeBits(t uint32) uint32 {
	switch t {
	case 2:
		return syscall.S_IFDIR
	case 3:
		return syscall.S_IFBLK
	case 4:
		return syscall.S_IFCHR
	case 5:
		return syscall.S_IFLNK
	case 6:
		return syscall.S_IFSOCK
	case 7:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

// fill sets out from the server's attributes, owners as the mount's
// sandbox view shows them (client.view).
func (n *node) fill(out *fuse.Attr, a attr) {
	out.Mode = typeBits(a.Type) | a.Mode&0o7777
	out.Nlink, out.Uid, out.Gid = a.Nlink, a.UID, a.GID
	if v := n.c.view; v != nil {
		out.Uid, out.Gid = v.ShowUID(a.UID), v.ShowGID(a.GID)
	}
	out.Size, out.Blocks = a.Size, (a.Used+511)/512
	out.Ino = a.FileID
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
	out.Blksize = 1 << 20
}

func (n *node) child(ctx context.Context, fh []byte, a attr, out *fuse.EntryOut) *fs.Inode {
	n.fill(&out.Attr, a)
	in := n.NewInode(ctx, newNode(n.c, fh), fs.StableAttr{Mode: typeBits(a.Type), Ino: a.FileID})
	if ex, ok := in.Operations().(*node); ok {
		ex.fh.Store(&fh)
	}
	return in
}

func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, err := n.c.as(ctx).getattr(n.h())
	if err != nil {
		return errno(err)
	}
	n.fill(&out.Attr, a)
	return 0
}

func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var s sattr
	if m, ok := in.GetMode(); ok {
		m &= 0o7777
		s.Mode = &m
	}
	u, uok := in.GetUID()
	g, gok := in.GetGID()
	if v := n.c.view; v != nil && (uok || gok) {
		// The ids as the server knows them: a sandbox's gofer chowns each
		// file it makes to the container's user (efsfuse.IDView).
		u = v.OwnerUID(u)
		if gok {
			a, err := n.c.as(ctx).getattr(n.h())
			if err != nil {
				return errno(err)
			}
			g = v.OwnerGID(g, a.GID)
		}
	}
	if uok {
		s.UID = &u
	}
	if gok {
		s.GID = &g
	}
	if sz, ok := in.GetSize(); ok {
		s.Size = &sz
	}
	if t, ok := in.GetATime(); ok {
		s.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		s.Mtime = &t
	}
	if err := n.c.as(ctx).setattr(n.h(), s); err != nil {
		return errno(err)
	}
	return n.Getattr(ctx, nil, out)
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fh, a, err := n.c.as(ctx).lookup(n.h(), name)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.c.as(ctx).readdir(n.h())
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: typeBits(e.Attr.Type), Ino: e.Attr.FileID})
	}
	return fs.NewListDirStream(list), 0
}

// handle is an open file; a file opened O_APPEND is written at the end
// (NFSv3 has no append: see Write).
type handle struct {
	append bool
	mu     sync.Mutex
}

// openHandle has the kernel do direct I/O on a file opened O_APPEND, so
// that each write(2), up to MaxWrite, comes to Write as one request and
// goes as one append. Through the page cache the kernel ends a request
// at a page of the file it has not read in, so a line crossing a 4 KiB
// boundary came as two appends, and another client's line could land
// between the halves. The mount allows mmap of such files
// (CAP_DIRECT_IO_ALLOW_MMAP, Mount).
func openHandle(flags uint32) (*handle, uint32) {
	if flags&syscall.O_APPEND != 0 {
		return &handle{append: true}, fuse.FOPEN_DIRECT_IO
	}
	return &handle{}, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	fh, a, err := n.c.as(ctx).create(n.h(), name, mode&0o7777, flags&syscall.O_EXCL != 0)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	h, fl := openHandle(flags)
	return n.child(ctx, fh, a, out), h, fl, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		var zero uint64
		if err := n.c.as(ctx).setattr(n.h(), sattr{Size: &zero}); err != nil {
			return nil, 0, errno(err)
		}
	}
	h, fl := openHandle(flags)
	return h, fl, 0
}

func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	got := 0
	for got < len(dest) {
		data, eof, err := n.c.as(ctx).read(n.h(), uint64(off)+uint64(got), uint32(len(dest)-got))
		if err != nil {
			return nil, errno(err)
		}
		got += copy(dest[got:], data)
		if eof || len(data) == 0 {
			break
		}
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// Write sends the data at off or, for a file opened O_APPEND, at
// appendOffset, which this package's server takes as the end of the file
// at the moment it writes (an extension: NFSv3 has no append, see
// appendOffset). A server that refuses it gets what any NFSv3 client
// does: a GETATTR for the size, then the WRITE there, where two clients
// appending at once can land on one offset (EFS's NFSv4.1 clients do the
// same two steps). Appends through one handle are serialized either way,
// so one task's appends never overlap each other.
func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if h, ok := f.(*handle); ok && h.append {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !n.c.plainAppend.Load() {
			done, err := n.writeAt(n.c.as(ctx), appendOffset, data, false)
			if err == 0 || done > 0 || !refusedAppend(err) {
				return done, err
			}
			n.c.plainAppend.Store(true)
		}
		a, err := n.c.as(ctx).getattr(n.h())
		if err != nil {
			return 0, errno(err)
		}
		off = int64(a.Size)
	}
	return n.writeAt(n.c.as(ctx), uint64(off), data, true)
}

func refusedAppend(e syscall.Errno) bool {
	return e == syscall.EINVAL || e == syscall.EFBIG || e == syscall.EIO || e == syscall.EOPNOTSUPP
}

// writeAt writes data in WRITEs of at most 1 MiB from off, which
// advances unless every WRITE goes at appendOffset.
func (n *node) writeAt(c *client, off uint64, data []byte, advance bool) (uint32, syscall.Errno) {
	done := 0
	for done < len(data) {
		end := min(len(data), done+1<<20)
		at := off
		if advance {
			at += uint64(done)
		}
		w, err := c.write(n.h(), at, data[done:end], unstable)
		if err != nil {
			return uint32(done), errno(err)
		}
		if w.n == 0 {
			return uint32(done), syscall.EIO
		}
		if e := n.keep(c, at, data[done:done+int(min(w.n, uint32(end-done)))], w); e != 0 {
			return uint32(done) + w.n, e
		}
		done += int(w.n)
	}
	return uint32(done), 0
}

// Mknod makes regular files only, as an exclusive CREATE (gVisor's
// gofer makes files by mknod). NFSv3's MKNOD would carry FIFOs and
// sockets, but the server's file system has no call for them; device
// files are what EFS refuses too.
func (n *node) Mknod(ctx context.Context, name string, mode, _ uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
	case syscall.S_IFCHR, syscall.S_IFBLK:
		return nil, syscall.EPERM
	default:
		return nil, syscall.EOPNOTSUPP
	}
	fh, a, err := n.c.as(ctx).create(n.h(), name, mode&0o7777, true)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fh, a, err := n.c.as(ctx).mkdir(n.h(), name, mode&0o7777)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return errno(n.c.as(ctx).remove(n.h(), name, false))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return errno(n.c.as(ctx).remove(n.h(), name, true))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_NOREPLACE/EXCHANGE: not in NFSv3
	}
	p, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if err := n.c.as(ctx).rename(n.h(), name, p.h(), newName); err != nil {
		return errno(err)
	}
	// A file's handle names its directory: take the one the server gives
	// for its new place, which a restarted server can still find.
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			if fh, _, err := n.c.as(ctx).lookup(p.h(), newName); err == nil {
				cn.fh.Store(&fh)
			}
		}
	}
	return 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fh, a, err := n.c.as(ctx).symlink(n.h(), name, target)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, fh, a, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.c.as(ctx).readlink(n.h())
	if err != nil {
		return nil, errno(err)
	}
	return []byte(s), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s, err := n.c.as(ctx).fsstat()
	if err != nil {
		return errno(err)
	}
	const bs = 4096
	out.Bsize, out.Frsize = bs, bs
	out.Blocks, out.Bfree, out.Bavail = s.Total/bs, s.Free/bs, s.Avail/bs
	out.Files, out.Ffree = s.Files, s.FreeFiles
	out.NameLen = 255
	return 0
}

// Fsync commits the file's writes; on a directory, it has the server
// sync the directory (what was made, renamed or removed in it).
func (n *node) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	if n.IsDir() {
		_, err := n.c.as(ctx).commit(n.h())
		return errno(err)
	}
	return n.commit(n.c.as(ctx))
}

// Flush (each close(2)) commits what the file was written, as Linux's
// NFS client does on close: close-to-open, and durable once closed.
func (n *node) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno {
	return n.commit(n.c.as(ctx))
}

var (
	entryTimeout    = time.Second
	attrTimeout     = time.Duration(0)
	negativeTimeout = time.Duration(0)
)
