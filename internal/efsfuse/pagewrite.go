package efsfuse

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// PageWrites sends a page the kernel writes back from its cache (a
// shared mapping's: FUSE's WRITE_CACHE) without its file handle, so that
// the file system writes it at its offset. The kernel sends such a page
// through any handle the file has open for writing, and through one
// opened O_APPEND (whose writes append, so that appends from several
// tasks interleave) the page would land at the end of the file instead
// of in place.
type PageWrites struct{ fuse.RawFileSystem }

func (p PageWrites) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_CACHE != 0 {
		in.Fh = 0
	}
	return p.RawFileSystem.Write(cancel, in, data)
}

func (p PageWrites) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_CACHE != 0 {
		in.Fh = 0
	}
	return p.RawFileSystem.Writev(cancel, in, data)
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return n.Writev(ctx, f, [][]byte{data}, off)
}

// Writev writes through the handle the write came with, or, for a page
// written back from the cache (PageWrites), through a descriptor of its
// own opened without O_APPEND, at the page's offset.
func (n *node) Writev(ctx context.Context, f fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	if w, ok := f.(fs.FileWritever); ok {
		return w.Writev(ctx, data, off)
	}
	dir, name, done, e := n.at()
	if e != 0 {
		return 0, e
	}
	defer done()
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, errno(err)
	}
	defer unix.Close(fd)
	w, err := unix.Pwritev(fd, data, off)
	return uint32(w), errno(err)
}
