package efsnfs

// READ, WRITE and COMMIT without go-nfs. go-nfs answers one
// connection's calls one at a time and encodes and decodes data with
// reflection, byte by byte (1.7 ms for a 1 MiB READ reply here, as much
// as the rest of the call): fine for metadata, most of the cost of moving
// data; and its COMMIT does nothing, its WRITEs claiming FILE_SYNC
// without a sync. Every connection is read here first: READ, WRITE and
// COMMIT calls with AUTH_NULL or AUTH_UNIX credentials are answered
// directly, each in a goroutine of its own (so a connection's calls
// proceed together), from the export's open files (fdcache.go);
// everything else, and any READ or WRITE this cannot answer (not a
// regular file, a stale handle, an error), goes on to go-nfs unchanged,
// which answers it as before. Replies are written whole under the
// connection's write lock, and go-nfs's replies are passed through
// record by record (it writes each one, then flushes), so they never
// interleave.

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	nfsProg  = 100003
	nfsVers  = 3
	maxCall  = 1<<20 + 1<<16 // a 1 MiB WRITE and its arguments
	fastJobs = 8             // calls of one connection answered at once
)

// fastConn is a server connection: it answers READ and WRITE itself and
// hands the rest, through a pipe, to go-nfs.
type fastConn struct {
	net.Conn
	s    *Server
	pr   *io.PipeReader
	pw   *io.PipeWriter
	wmu  sync.Mutex // held from the start of a reply to its end
	left int        // bytes of go-nfs's current reply still to come
	jobs chan struct{}
	once sync.Once
}

func newFastConn(c net.Conn, s *Server) *fastConn {
	pr, pw := io.Pipe()
	f := &fastConn{Conn: c, s: s, pr: pr, pw: pw, jobs: make(chan struct{}, fastJobs)}
	go f.demux()
	return f
}

func (f *fastConn) Read(p []byte) (int, error) { return f.pr.Read(p) }

// Write passes go-nfs's replies through, holding the write lock for each
// whole record (its fragment header says how long it is).
func (f *fastConn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if f.left == 0 {
			if len(p)-n < 4 {
				return n, errors.New("nfs: reply header split")
			}
			f.wmu.Lock()
			f.left = 4 + int(binary.BigEndian.Uint32(p[n:])&0x7fffffff)
		}
		k := min(len(p)-n, f.left)
		m, err := f.Conn.Write(p[n : n+k])
		n += m
		f.left -= m
		if f.left == 0 {
			f.wmu.Unlock()
		}
		if err != nil {
			if f.left > 0 {
				f.left = 0
				f.wmu.Unlock()
			}
			return n, err
		}
	}
	return n, nil
}

func (f *fastConn) Close() error {
	f.once.Do(func() { f.pw.Close() })
	return f.Conn.Close()
}

// demux reads calls, answers what it can and forwards the rest.
func (f *fastConn) demux() {
	var err error
	defer func() { f.pw.CloseWithError(err) }()
	for {
		var rec []byte
		rec, err = readCall(f.Conn)
		if err != nil {
			return
		}
		if fast, ok := parseFast(rec[4:]); ok {
			f.jobs <- struct{}{}
			go func() {
				defer func() { <-f.jobs }()
				if reply := f.answer(fast); reply != nil {
					f.send(reply)
					return
				}
				f.forward(rec)
			}()
			continue
		}
		if err = f.forward(rec); err != nil {
			return
		}
	}
}

// forward hands a call to go-nfs (in arrival order with the other
// forwarded calls; the pipe takes one record at a time).
func (f *fastConn) forward(rec []byte) error {
	_, err := f.pw.Write(rec)
	return err
}

func (f *fastConn) send(reply []byte) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if _, err := f.Conn.Write(reply); err != nil {
		f.Conn.Close()
	}
}

// readCall reads one call record, with its record mark (rewritten as a
// single last fragment), of at most maxCall bytes.
func readCall(r io.Reader) ([]byte, error) {
	out := make([]byte, 4, 4+512)
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(out)-4+n > maxCall {
			return nil, errors.New("nfs: call too long")
		}
		start := len(out)
		out = append(out, make([]byte, n)...)
		if _, err := io.ReadFull(r, out[start:]); err != nil {
			return nil, err
		}
		if h&(1<<31) != 0 {
			binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
			return out, nil
		}
	}
}

type fastCall struct {
	xid    uint32
	write  bool
	commit bool
	fh     []byte
	off    uint64
	count  uint32
	stable uint32
	data   []byte
}

// parseFast recognizes a READ or WRITE call it can answer.
func parseFast(b []byte) (fastCall, bool) {
	r := &reader{b: b}
	var c fastCall
	c.xid = r.u32()
	mtype, rpcvers, prog, vers, proc := r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	if r.err != nil || mtype != 0 || rpcvers != 2 || prog != nfsProg || vers != nfsVers || (proc != procRead && proc != procWrite && proc != procCommit) {
		return c, false
	}
	// Credentials and verifier: any AUTH_NULL or AUTH_UNIX is taken, as
	// go-nfs takes them (it answers as the export's user either way).
	for range 2 {
		flavor := r.u32()
		r.opaque(400)
		if flavor != 0 && flavor != 1 {
			return c, false
		}
	}
	c.fh = r.opaque(maxFH)
	c.off = r.u64()
	c.count = r.u32()
	c.commit = proc == procCommit
	if proc == procWrite {
		c.write = true
		c.stable = r.u32()
		c.data = r.opaque(maxCall)
		if r.err == nil && (c.stable > 2 || uint32(len(c.data)) < c.count) {
			return c, false
		}
	}
	if r.err != nil || len(r.b) != 0 {
		return c, false
	}
	return c, true
}

// answer performs the call and returns the whole reply record, or nil to
// leave the call to go-nfs.
func (f *fastConn) answer(c fastCall) []byte {
	fsys, p, err := f.s.handles.fromHandle(c.fh)
	if err != nil {
		return nil
	}
	t, ok := fsys.(*tree)
	if !ok {
		return nil
	}
	if c.commit {
		return f.answerCommit(c, t, p)
	}
	if len(p) == 0 {
		return nil
	}
	e, err := t.cachedOpen(joinPath(p), c.write)
	if err != nil {
		return nil
	}
	file := &cfile{t: t, e: e}
	defer file.Close()
	var st unix.Stat_t
	if unix.Fstat(e.fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if c.write {
		return f.answerWrite(c, file, &st)
	}
	count := uint64(min(c.count, maxData))
	eof := false
	if c.off >= uint64(st.Size) {
		count, eof = 0, true
	} else if uint64(st.Size)-c.off <= count {
		count, eof = uint64(st.Size)-c.off, true
	}
	// Header, status, attributes, count, eof, then the data's length,
	// the data and its padding, all in one buffer read into in place.
	out := replyHead(c.xid)
	out = append(out, 0, 0, 0, 0, 0, 0, 0, 1) // NFS3_OK, attributes follow
	out = appendFattr(out, &st)
	head := len(out)
	out = append(out, make([]byte, 12+int(count)+3)...)
	n, err := file.ReadAt(out[head+12:head+12+int(count)], int64(c.off))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	if errors.Is(err, io.EOF) {
		eof = true
	}
	binary.BigEndian.PutUint32(out[head:], uint32(n))
	if eof {
		binary.BigEndian.PutUint32(out[head+4:], 1)
	}
	binary.BigEndian.PutUint32(out[head+8:], uint32(n))
	out = out[:head+12+(n+3)&^3]
	binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
	return out
}

// answerWrite writes, and syncs the file when the client asked for a
// stable write; the reply says which it got. A write at appendOffset
// reports, as its pre-op size, the offset it landed at (cfile.landed),
// which the pre-op attributes of a WRITE mean anyway: the size just
// before it. The client keeps that to resend the append in place if the
// server restarts before a COMMIT (commit.go).
func (f *fastConn) answerWrite(c fastCall, file *cfile, pre *unix.Stat_t) []byte {
	if int64(c.off) == -1 { // appendOffset
		file.append = true
	} else if int64(c.off) < 0 {
		return nil
	} else {
		file.off = int64(c.off)
	}
	n, err := file.Write(c.data[:c.count])
	if err != nil && n == 0 {
		return nil // go-nfs tries again and reports the error its way
	}
	preSize := pre.Size
	if file.append {
		preSize = file.landed
	}
	stable := uint32(unstable)
	if c.stable != unstable {
		if err := f.s.sync(file.e.fd, c.stable == dataSync); err != nil {
			return errReply(c.xid, err, pre)
		}
		stable = c.stable
	}
	var st unix.Stat_t
	out := replyHead(c.xid)
	out = append(out, 0, 0, 0, 0, 0, 0, 0, 1) // NFS3_OK, pre-op attributes follow
	out = binary.BigEndian.AppendUint64(out, uint64(preSize))
	out = appendTime(out, pre.Mtim)
	out = appendTime(out, pre.Ctim)
	if unix.Fstat(file.e.fd, &st) == nil {
		out = binary.BigEndian.AppendUint32(out, 1)
		out = appendFattr(out, &st)
	} else {
		out = binary.BigEndian.AppendUint32(out, 0)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	out = binary.BigEndian.AppendUint32(out, stable)
	out = append(out, f.s.verf[:]...)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
	return out
}

// answerCommit fsyncs the whole file (a COMMIT's range is a hint RFC 1813
// lets a server widen) and answers with the write verifier, which tells
// the client whether its UNSTABLE writes were made by this same server
// instance. go-nfs's COMMIT does nothing (its WRITEs answer FILE_SYNC).
// A directory is synced too (the helper sends one for fsync(2) on a
// directory, as after creating or renaming a file in it). Only an
// unknown handle goes on to go-nfs, for its NFS3ERR_STALE.
func (f *fastConn) answerCommit(c fastCall, t *tree, p []string) []byte {
	name := "."
	if len(p) > 0 {
		name = joinPath(p)
	}
	// Any descriptor of the inode syncs its data: the one the writes
	// went through, still cached for a while, or a new one, for writing
	// or reading (a directory, or a file the caller may no longer open
	// so: the export's own identity may).
	var e *cachedFD
	var err error
	by := t
	for _, o := range []struct {
		t     *tree
		write bool
	}{{t, true}, {t, false}, {t.top(), false}} {
		by = o.t
		if e, err = by.cachedOpen(name, o.write); err == nil || errors.Is(err, unix.ENOENT) {
			break
		}
	}
	var pre unix.Stat_t
	switch {
	case errors.Is(err, unix.ENOENT):
		return errReply(c.xid, unix.ESTALE, nil) // removed since
	case err != nil:
		// Not openable at all (mode 0 under an access point's user):
		// sync the whole file system it is on instead.
		f.s.syncs.Add(1)
		if err := unix.Syncfs(t.root); err != nil {
			return errReply(c.xid, err, nil)
		}
		out := replyHead(c.xid)
		out = append(out, 0, 0, 0, 0) // NFS3_OK
		out = appendWcc(out, nil, -1)
		out = append(out, f.s.verf[:]...)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
		return out
	}
	file := &cfile{t: by, e: e}
	defer file.Close()
	if err := unix.Fstat(e.fd, &pre); err != nil {
		return errReply(c.xid, err, nil)
	}
	if err := f.s.sync(e.fd, false); err != nil {
		return errReply(c.xid, err, &pre)
	}
	out := replyHead(c.xid)
	out = append(out, 0, 0, 0, 0) // NFS3_OK
	out = appendWcc(out, &pre, e.fd)
	out = append(out, f.s.verf[:]...)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
	return out
}

// sync makes what fd's file holds durable: its data (and the metadata
// needed to read it back) with dataOnly, everything otherwise.
func (s *Server) sync(fd int, dataOnly bool) error {
	s.syncs.Add(1)
	for {
		var err error
		if dataOnly {
			err = unix.Fdatasync(fd)
		} else {
			err = unix.Fsync(fd)
		}
		if err != unix.EINTR {
			return err
		}
	}
}

// appendWcc appends wcc_data: pre's size and times, then fd's attributes
// now.
func appendWcc(out []byte, pre *unix.Stat_t, fd int) []byte {
	if pre == nil {
		out = append(out, 0, 0, 0, 0)
	} else {
		out = binary.BigEndian.AppendUint32(out, 1)
		out = binary.BigEndian.AppendUint64(out, uint64(pre.Size))
		out = appendTime(out, pre.Mtim)
		out = appendTime(out, pre.Ctim)
	}
	var st unix.Stat_t
	if fd >= 0 && unix.Fstat(fd, &st) == nil {
		out = binary.BigEndian.AppendUint32(out, 1)
		return appendFattr(out, &st)
	}
	return binary.BigEndian.AppendUint32(out, 0)
}

// errReply is a failed WRITE's or COMMIT's reply (both are the status
// and wcc_data), with err as its NFS status.
func errReply(xid uint32, err error, pre *unix.Stat_t) []byte {
	out := replyHead(xid)
	out = binary.BigEndian.AppendUint32(out, errStatus(err))
	out = appendWcc(out, pre, -1)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4)|1<<31)
	return out
}

// errStatus is err as an NFSv3 status: the errnos NFS shares with Linux
// keep their numbers, anything else is NFS3ERR_IO.
func errStatus(err error) uint32 {
	var e unix.Errno
	if errors.As(err, &e) {
		switch e {
		case unix.EPERM, unix.ENOENT, unix.EIO, unix.ENXIO, unix.EACCES, unix.EEXIST, unix.EXDEV, unix.ENODEV,
			unix.ENOTDIR, unix.EISDIR, unix.EINVAL, unix.EFBIG, unix.ENOSPC, unix.EROFS, unix.EMLINK:
			return uint32(e)
		case unix.EDQUOT:
			return 69
		case unix.ESTALE:
			return 70
		}
	}
	return uint32(unix.EIO)
}

// replyHead is a record mark to fill in and an accepted, successful RPC
// reply's header with an AUTH_NULL verifier.
func replyHead(xid uint32) []byte {
	out := make([]byte, 4, 1<<10)
	out = binary.BigEndian.AppendUint32(out, xid)
	return append(out, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

// appendFattr appends st as a fattr3, as go-nfs describes files.
func appendFattr(out []byte, st *unix.Stat_t) []byte {
	typ := uint32(1)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		typ = 2
	case unix.S_IFBLK:
		typ = 3
	case unix.S_IFCHR:
		typ = 4
	case unix.S_IFLNK:
		typ = 5
	case unix.S_IFSOCK:
		typ = 6
	case unix.S_IFIFO:
		typ = 7
	}
	for _, v := range []uint32{typ, st.Mode & 0o7777, uint32(st.Nlink), st.Uid, st.Gid} {
		out = binary.BigEndian.AppendUint32(out, v)
	}
	out = binary.BigEndian.AppendUint64(out, uint64(st.Size))
	out = binary.BigEndian.AppendUint64(out, uint64(st.Size))
	out = binary.BigEndian.AppendUint32(out, unix.Major(st.Rdev))
	out = binary.BigEndian.AppendUint32(out, unix.Minor(st.Rdev))
	out = binary.BigEndian.AppendUint64(out, 0) // fsid
	out = binary.BigEndian.AppendUint64(out, st.Ino)
	for range 3 {
		out = appendTime(out, st.Mtim) // go-nfs gives mtime for all three
	}
	return out
}

func appendTime(out []byte, ts unix.Timespec) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(ts.Sec))
	return binary.BigEndian.AppendUint32(out, uint32(ts.Nsec))
}

func joinPath(p []string) string {
	s := p[0]
	for _, e := range p[1:] {
		s += "/" + e
	}
	return s
}
