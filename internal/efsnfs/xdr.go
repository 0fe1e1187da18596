package efsnfs

// Replies are decoded here rather than with reflection over the reply
// structs: every length is checked against what is left of the reply, so
// a broken or hostile server yields an error, never a huge allocation or
// a panic (FuzzDecodeReplies).

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"
)

var errShort = errors.New("nfs: reply too short")

type reader struct {
	b   []byte
	err error
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 { return uint64(r.u32())<<32 | uint64(r.u32()) }

func (r *reader) bool() bool { return r.u32() != 0 }

// opaque reads a variable-length opaque of at most max bytes.
func (r *reader) opaque(max int) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if int64(n) > int64(max) {
		r.err = errors.New("nfs: reply field too long")
		return nil
	}
	padded := (int(n) + 3) &^ 3
	if len(r.b) < padded {
		r.err = errShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[padded:]
	return v
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// NFSv3 limits (RFC 1813): a handle is at most 64 bytes; names and paths
// are bounded by what the server accepts, 4 KiB here.
const (
	maxFH   = 64
	maxName = 4096
	maxData = 1 << 22
)

// attr is an NFSv3 fattr3.
type attr struct {
	Type, Mode, Nlink, UID, GID uint32
	Size, Used                  uint64
	Rdev                        [2]uint32
	FSID, FileID                uint64
	Atime, Mtime, Ctime         time.Time
}

func (r *reader) time() time.Time {
	s, ns := r.u32(), r.u32()
	return time.Unix(int64(s), int64(ns))
}

func (r *reader) fattr() attr {
	var a attr
	a.Type, a.Mode, a.Nlink, a.UID, a.GID = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	a.Size, a.Used = r.u64(), r.u64()
	a.Rdev = [2]uint32{r.u32(), r.u32()}
	a.FSID, a.FileID = r.u64(), r.u64()
	a.Atime, a.Mtime, a.Ctime = r.time(), r.time(), r.time()
	return a
}

// postOpAttr reads a post_op_attr; ok is false when the server sent none.
func (r *reader) postOpAttr() (attr, bool) {
	if !r.bool() {
		return attr{}, false
	}
	return r.fattr(), true
}

// wcc reads wcc_data and returns the pre-op size, when sent.
func (r *reader) wcc() (preSize uint64, ok bool) {
	if r.bool() { // pre_op_attr: size, mtime, ctime
		preSize, ok = r.u64(), true
		r.time()
		r.time()
	}
	r.postOpAttr()
	return preSize, ok && r.err == nil
}

func (r *reader) postOpFH() []byte {
	if !r.bool() {
		return nil
	}
	return r.opaque(maxFH)
}

// nfsStatus maps an NFSv3 status to the errno a FUSE caller gets. Most
// share Linux's numbers; the rest are mapped by name.
func nfsStatus(s uint32) error {
	switch s {
	case 0:
		return nil
	case 1, 2, 5, 6, 13, 17, 18, 19, 20, 21, 22, 27, 28, 30, 31:
		return syscall.Errno(s)
	case 63:
		return syscall.ENAMETOOLONG
	case 66:
		return syscall.ENOTEMPTY
	case 69:
		return syscall.EDQUOT
	case 70, 10001: // STALE, BADHANDLE
		return syscall.ESTALE
	case 10004, 10007: // NOTSUPP, BADTYPE
		return syscall.EOPNOTSUPP
	case 10008: // JUKEBOX: try later
		return syscall.EAGAIN
	default:
		return syscall.EIO
	}
}
