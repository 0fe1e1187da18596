package efsnfs

// client is the NFSv3 side of the mount helper: calls by file handle over
// the transport of rpc.go, which also carries MOUNT: the server answers
// both programs on port 2049, so no portmapper is involved. Every call
// goes to the server: nothing is cached here, and the FUSE layer keeps
// attributes for no time, which is NFS's close-to-open consistency at its
// strictest. Handles stay valid across a restart of the server (see
// handle.go), so the mount needs no second MOUNT after one.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/gantry-dev/gantry/internal/efsfuse"
)

const (
	procGetattr     = 1
	procSetattr     = 2
	procLookup      = 3
	procReadlink    = 5
	procRead        = 6
	procWrite       = 7
	procCreate      = 8
	procMkdir       = 9
	procSymlink     = 10
	procRemove      = 12
	procRmdir       = 13
	procRename      = 14
	procReaddirplus = 17
	procFsstat      = 18
	procCommit      = 21

	mountProc = 1

	// stable_how: how durable a WRITE is when answered. unstable: in the
	// server's memory until a COMMIT; dataSync, fileSync: on its disk.
	unstable = 0
	dataSync = 1
	fileSync = 2
)

type client struct {
	rpc  *transport
	root []byte // the export's root handle
	// plainAppend: the server refused appendOffset; appends are
	// GETATTR then WRITE.
	plainAppend *atomic.Bool
	// who is the caller each handle sent names (caller.go); nil: none.
	who *who
	// view is how owners are shown to and taken from a gVisor sandbox's
	// container user (efsfuse.IDView); nil: as they are.
	view *efsfuse.IDView
	// dirty is the files with writes not yet committed (commit.go).
	dirty *dirtySet
}

type who struct {
	uid, gid uint32
	groups   []uint32
}

// h is fh as sent: with the caller after it.
func (c *client) h(fh []byte) []byte {
	if c.who == nil {
		return padHandle(fh)
	}
	return appendCaller(fh, c.who.uid, c.who.gid, c.who.groups)
}

// as is the client for the process that made a FUSE request: its uid
// and gid as the kernel gives them, and its supplementary groups.
func (c *client) as(ctx context.Context) *client {
	cl, ok := fuse.FromContext(ctx)
	if !ok {
		return c
	}
	cp := *c
	cp.who = &who{uid: cl.Uid, gid: cl.Gid, groups: groupsOf(cl.Pid)}
	return &cp
}

var (
	groupsMu    sync.Mutex
	groupsCache = map[uint32]cachedGroups{}
)

type cachedGroups struct {
	at     time.Time
	groups []uint32
}

// groupsOf reads pid's supplementary groups (FUSE gives only the uid and
// gid), kept a second: a process rarely changes them, and a task's
// processes make many requests.
func groupsOf(pid uint32) []uint32 {
	if pid == 0 {
		return nil
	}
	groupsMu.Lock()
	if g, ok := groupsCache[pid]; ok && time.Since(g.at) < time.Second {
		groupsMu.Unlock()
		return g.groups
	}
	groupsMu.Unlock()
	var groups []uint32
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(f) {
				if v, err := strconv.ParseUint(g, 10, 32); err == nil {
					groups = append(groups, uint32(v))
				}
			}
		}
	}
	groupsMu.Lock()
	defer groupsMu.Unlock()
	if len(groupsCache) > 1024 {
		clear(groupsCache)
	}
	groupsCache[pid] = cachedGroups{at: time.Now(), groups: groups}
	return groups
}

// dial connects to addr (host:port) and mounts the export path, trying
// until t is closed. It must run in the network namespace the
// connections should come from: so do all later reconnections.
func dial(t *transport, path string) (*client, error) {
	type mountArgs struct {
		rpc.Header
		Dirpath string
	}
	b, err := t.call(&mountArgs{header(nfsc.MountProg, nfsc.MountVers, mountProc), path})
	if err != nil {
		return nil, err
	}
	fh, err := decodeMount(b)
	if err != nil {
		return nil, fmt.Errorf("mount %s:%s: %w", t.addr, path, err)
	}
	return &client{rpc: t, root: fh, plainAppend: new(atomic.Bool), dirty: newDirtySet()}, nil
}

func decodeMount(b []byte) ([]byte, error) {
	r := &reader{b: b}
	if st := r.u32(); r.err == nil && st != 0 {
		return nil, fmt.Errorf("MNT3 status %d: %w", st, nfsStatus(st))
	}
	fh := r.opaque(maxFH)
	return fh, r.err
}

func header(prog, vers, proc uint32) rpc.Header {
	return rpc.Header{Rpcvers: 2, Prog: prog, Vers: vers, Proc: proc, Cred: rpc.AuthNull, Verf: rpc.AuthNull}
}

// call sends args and returns the reply after its status, or the status
// as an errno. The reader still holds what follows an error status.
func (c *client) call(args any) (*reader, error) {
	b, err := c.rpc.call(args)
	if err != nil {
		return nil, fmt.Errorf("nfs: %w", err)
	}
	r := &reader{b: b}
	st := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	return r, nfsStatus(st)
}

func (c *client) close() { c.rpc.close() }

type fhArgs struct {
	rpc.Header
	FH []byte
}

type dirop struct {
	FH   []byte
	Name string
}

func (c *client) getattr(fh []byte) (attr, error) {
	r, err := c.call(&fhArgs{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procGetattr), c.h(fh)})
	if err != nil {
		return attr{}, err
	}
	a := r.fattr()
	return a, r.err
}

// sattr is what a SETATTR, CREATE or MKDIR sets; nil fields are left.
type sattr struct {
	Mode, UID, GID *uint32
	Size           *uint64
	Atime, Mtime   *time.Time
}

func (s sattr) wire() nfsc.Sattr3 {
	var w nfsc.Sattr3
	if s.Mode != nil {
		w.Mode = nfsc.SetMode{SetIt: true, Mode: *s.Mode}
	}
	if s.UID != nil {
		w.UID = nfsc.SetUID{SetIt: true, UID: *s.UID}
	}
	if s.GID != nil {
		w.GID = nfsc.SetUID{SetIt: true, UID: *s.GID}
	}
	if s.Size != nil {
		w.Size = nfsc.SetSize{SetIt: true, Size: *s.Size}
	}
	if s.Atime != nil {
		w.Atime = nfsc.SetTime{SetIt: nfsc.SetToClientTime, Time: nfsTime(*s.Atime)}
	}
	if s.Mtime != nil {
		w.Mtime = nfsc.SetTime{SetIt: nfsc.SetToClientTime, Time: nfsTime(*s.Mtime)}
	}
	return w
}

func nfsTime(t time.Time) nfsc.NFS3Time {
	return nfsc.NFS3Time{Seconds: uint32(t.Unix()), Nseconds: uint32(t.Nanosecond())}
}

func (c *client) setattr(fh []byte, s sattr) error {
	type args struct {
		rpc.Header
		FH    []byte
		Attr  nfsc.Sattr3
		Guard uint32 // no ctime guard
	}
	_, err := c.call(&args{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procSetattr), c.h(fh), s.wire(), 0})
	return err
}

func (c *client) lookup(dir []byte, name string) ([]byte, attr, error) {
	r, err := c.call(&struct {
		rpc.Header
		What dirop
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procLookup), dirop{c.h(dir), name}})
	if err != nil {
		return nil, attr{}, err
	}
	fh := r.opaque(maxFH)
	a, ok := r.postOpAttr()
	if r.err == nil && !ok {
		a, err = c.getattr(fh)
	}
	return fh, a, errors.Join(r.err, err)
}

func (c *client) readlink(fh []byte) (string, error) {
	r, err := c.call(&fhArgs{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procReadlink), c.h(fh)})
	if err != nil {
		return "", err
	}
	r.postOpAttr()
	s := r.opaque(maxName)
	return string(s), r.err
}

func (c *client) read(fh []byte, off uint64, n uint32) ([]byte, bool, error) {
	r, err := c.call(&struct {
		rpc.Header
		FH    []byte
		Off   uint64
		Count uint32
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procRead), c.h(fh), off, n})
	if err != nil {
		return nil, false, err
	}
	r.postOpAttr()
	r.u32()
	eof := r.bool()
	data := r.opaque(maxData)
	return data, eof, r.err
}

// wrote is what the server said of a WRITE: how much it wrote, how
// durably, under which write verifier, and the file's size just before
// (for an append, where it landed: answerWrite).
type wrote struct {
	n       uint32
	stable  uint32
	verf    [8]byte
	preSize uint64
	hasPre  bool
}

func (c *client) write(fh []byte, off uint64, data []byte, stable uint32) (wrote, error) {
	r, err := c.call(&struct {
		rpc.Header
		FH     []byte
		Off    uint64
		Count  uint32
		Stable uint32
		Data   []byte
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procWrite), c.h(fh), off, uint32(len(data)), stable, data})
	if err != nil {
		return wrote{}, err
	}
	var w wrote
	w.preSize, w.hasPre = r.wcc()
	w.n = r.u32()
	w.stable = r.u32()
	copy(w.verf[:], r.fixed(8))
	return w, r.err
}

// commit asks the server to make fh's UNSTABLE writes durable and returns
// its write verifier.
func (c *client) commit(fh []byte) ([8]byte, error) {
	var verf [8]byte
	r, err := c.call(&struct {
		rpc.Header
		FH    []byte
		Off   uint64
		Count uint32
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procCommit), c.h(fh), 0, 0})
	if err != nil {
		return verf, err
	}
	r.wcc()
	copy(verf[:], r.fixed(8))
	return verf, r.err
}

// made reads a CREATE, MKDIR or SYMLINK reply: the new handle and its
// attributes, asked for when the server left them out.
func (c *client) made(r *reader, dir []byte, name string) ([]byte, attr, error) {
	fh := r.postOpFH()
	a, ok := r.postOpAttr()
	if r.err != nil {
		return nil, attr{}, r.err
	}
	if fh == nil {
		return c.lookup(dir, name)
	}
	if !ok {
		var err error
		a, err = c.getattr(fh)
		return fh, a, err
	}
	return fh, a, nil
}

func (c *client) create(dir []byte, name string, mode uint32, exclusive bool) ([]byte, attr, error) {
	how := uint32(0) // UNCHECKED
	if exclusive {
		how = 1 // GUARDED: fails if the name exists
	}
	r, err := c.call(&struct {
		rpc.Header
		Where dirop
		How   uint32
		Attr  nfsc.Sattr3
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procCreate), dirop{c.h(dir), name}, how, sattr{Mode: &mode}.wire()})
	if err != nil {
		return nil, attr{}, err
	}
	return c.made(r, dir, name)
}

func (c *client) mkdir(dir []byte, name string, mode uint32) ([]byte, attr, error) {
	r, err := c.call(&struct {
		rpc.Header
		Where dirop
		Attr  nfsc.Sattr3
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procMkdir), dirop{c.h(dir), name}, sattr{Mode: &mode}.wire()})
	if err != nil {
		return nil, attr{}, err
	}
	return c.made(r, dir, name)
}

func (c *client) symlink(dir []byte, name, target string) ([]byte, attr, error) {
	r, err := c.call(&struct {
		rpc.Header
		Where  dirop
		Attr   nfsc.Sattr3
		Target string
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procSymlink), dirop{c.h(dir), name}, nfsc.Sattr3{}, target})
	if err != nil {
		return nil, attr{}, err
	}
	return c.made(r, dir, name)
}

func (c *client) remove(dir []byte, name string, isDir bool) error {
	proc := uint32(procRemove)
	if isDir {
		proc = procRmdir
	}
	_, err := c.call(&struct {
		rpc.Header
		What dirop
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, proc), dirop{c.h(dir), name}})
	return err
}

func (c *client) rename(fromDir []byte, from string, toDir []byte, to string) error {
	_, err := c.call(&struct {
		rpc.Header
		From, To dirop
	}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procRename), dirop{c.h(fromDir), from}, dirop{c.h(toDir), to}})
	return err
}

// entry is one name READDIRPLUS returned, with its handle and attributes
// when the server sent them.
type entry struct {
	Name string
	FH   []byte
	Attr attr
	Has  bool
}

func (c *client) readdir(fh []byte) ([]entry, error) {
	var out []entry
	var cookie uint64
	var verf [8]byte
	for range 1 << 16 {
		r, err := c.call(&struct {
			rpc.Header
			FH       []byte
			Cookie   uint64
			Verf     [8]byte
			DirCount uint32
			MaxCount uint32
		}{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procReaddirplus), c.h(fh), cookie, verf, 1 << 16, 1 << 20})
		if err != nil {
			return nil, err
		}
		ents, next, v, eof, err := decodeReaddir(r)
		if err != nil {
			return nil, err
		}
		out = append(out, ents...)
		if eof || len(ents) == 0 {
			return out, nil
		}
		cookie, verf = next, v
	}
	return nil, errors.New("nfs: directory listing does not end")
}

func decodeReaddir(r *reader) (ents []entry, cookie uint64, verf [8]byte, eof bool, err error) {
	r.postOpAttr()
	copy(verf[:], r.fixed(8))
	for r.err == nil && r.bool() {
		r.u64() // fileid
		var e entry
		e.Name = string(r.opaque(maxName))
		cookie = r.u64()
		e.Attr, e.Has = r.postOpAttr()
		e.FH = r.postOpFH()
		if e.FH == nil {
			e.Has = false
		}
		if r.err == nil {
			ents = append(ents, e)
		}
	}
	eof = r.bool()
	return ents, cookie, verf, eof, r.err
}

type fsstat struct{ Total, Free, Avail, Files, FreeFiles uint64 }

func (c *client) fsstat() (fsstat, error) {
	r, err := c.call(&fhArgs{header(nfsc.Nfs3Prog, nfsc.Nfs3Vers, procFsstat), c.h(c.root)})
	if err != nil {
		return fsstat{}, err
	}
	r.postOpAttr()
	s := fsstat{Total: r.u64(), Free: r.u64(), Avail: r.u64(), Files: r.u64(), FreeFiles: r.u64()}
	return s, r.err
}
