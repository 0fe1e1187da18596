// Package efsnfs serves EFS file systems over NFSv3 and mounts them, for
// tasks on a host that does not hold the file system's tree.
//
// The serving side (Server) answers on a mount target's address, port
// 2049, with the go-nfs server (github.com/willscott/go-nfs) over a tree
// confined to each export's root (tree.go) and run as the access point's
// user when it has one (ident.go), with file handles that outlive the
// server (handle.go), files kept open between calls (fdcache.go), and
// READ and WRITE answered without go-nfs (fastpath.go). The mounting
// side (Mount, the hidden `gantry efs-nfs-mount` helper) is a FUSE file
// system over an NFSv3 client (client.go, fuse.go) whose transport waits
// and reconnects across a server restart (rpc.go), started in the task's
// network namespace so that the mount target sees the task's ENI address
// and its security groups apply.
//
// Hosts with the kernel's NFS client and nfsd would use those instead
// (see docs/architecture.md); this host kernel has neither, and the
// userspace path is what a remote agent here does.
package efsnfs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
	"golang.org/x/sys/unix"
)

// Port is NFS's, where EFS mount targets listen.
const Port = 2049

// Export is one directory the server lets clients mount by its name.
type Export struct {
	// Root is the export's root directory, opened by the caller without
	// following symlinks (and made with the access point's CreationInfo).
	// The server owns it from Add on.
	Root *os.File
	// User, when set, is the access point's POSIX user every operation
	// runs as.
	UID, GID uint32
	Groups   []uint32
	Squash   bool
	// RootSquash (without Squash): callers act as themselves except
	// that uid and gid 0 become 65534, for a file system policy without
	// elasticfilesystem:ClientRootAccess.
	RootSquash bool
}

// Server serves a set of exports on one address.
type Server struct {
	ln      net.Listener
	done    chan struct{}
	handles *handles
	// verf is the write verifier WRITE and COMMIT answer with: the
	// start time and random bytes, so it differs after any restart and a
	// client resends what it wrote UNSTABLE before (commit.go).
	verf [8]byte
	// syncs counts the fsyncs and fdatasyncs done for clients (COMMIT,
	// stable WRITEs): what tests observe to see that they reach the disk.
	syncs atomic.Uint64

	mu      sync.Mutex
	exports map[string]*tree
	byXID   map[[8]byte]*tree
	conns   map[net.Conn]bool
	closed  bool
	served  bool
}

func init() {
	// go-nfs logs every failed lookup at Info; a missing name is normal.
	nfs.Log.SetLevel(nfs.ErrorLevel)
}

// Listen binds addr (host:port); Serve starts answering. Clients that
// connect in between wait: a restarted agent adds every export its
// running tasks mount before any of their calls is read, so none of them
// meets a handle of an export not yet there (NFS3ERR_STALE).
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{done: make(chan struct{}), exports: map[string]*tree{}, byXID: map[[8]byte]*tree{}, conns: map[net.Conn]bool{}}
	s.ln = &trackingListener{Listener: ln, s: s}
	binary.BigEndian.PutUint32(s.verf[:], uint32(time.Now().Unix()))
	rand.Read(s.verf[4:])
	s.handles = newHandles(s)
	return s, nil
}

// Serve answers clients until Close.
func (s *Server) Serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served || s.closed {
		return
	}
	s.served = true
	go func() {
		defer close(s.done)
		srv := &nfs.Server{Handler: &handler{s: s}, Context: context.Background(), ID: s.verf}
		if err := srv.Serve(s.ln); err != nil && !errors.Is(err, net.ErrClosed) {
			slog.Warn("efs nfs server stopped", "addr", s.ln.Addr(), "err", err)
		}
	}()
}

// trackingListener keeps the accepted connections, for Close to cut.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: newFastConn(c, l.s), s: l.s}
	l.s.conns[tc] = true
	return tc, nil
}

type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Add publishes e under name (what clients pass as the MOUNT path). A
// name already published keeps its first export; e's root is closed.
func (s *Server) Add(name string, e Export) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.exports[name]; ok {
		e.Root.Close()
		return nil
	}
	root, err := unix.Dup(int(e.Root.Fd()))
	e.Root.Close()
	if err != nil {
		return err
	}
	t := &tree{root: root, xid: exportID(name), h: s.handles, rootSquash: e.RootSquash && !e.Squash}
	t.fds = newFDCache()
	if e.Squash {
		if t.id, err = newIdent(e.UID, e.GID, e.Groups); err != nil {
			unix.Close(root)
			return err
		}
	}
	s.exports[name] = t
	s.byXID[t.xid] = t
	return nil
}

func (s *Server) byID(id [8]byte) *tree {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byXID[id]
}

// Close stops listening, cuts the connections (their clients connect
// again, to whichever server listens there next) and releases the
// exports.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	served := s.served
	s.mu.Unlock()
	err := s.ln.Close()
	if served {
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.(*trackedConn).Conn.Close()
		delete(s.conns, c)
	}
	for name, t := range s.exports {
		t.close()
		delete(s.exports, name)
		delete(s.byXID, t.xid)
	}
	return err
}

type handler struct{ s *Server }

func (h *handler) Mount(_ context.Context, _ net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	h.s.mu.Lock()
	t := h.s.exports[string(req.Dirpath)]
	h.s.mu.Unlock()
	if t == nil {
		return nfs.MountStatusErrNoEnt, nil, nil
	}
	return nfs.MountStatusOk, t, []nfs.AuthFlavor{nfs.AuthFlavorNull, nfs.AuthFlavorUnix}
}

func (h *handler) Change(fs billy.Filesystem) billy.Change {
	if t, ok := fs.(*tree); ok {
		return t
	}
	return nil
}

func (h *handler) FSStat(_ context.Context, fs billy.Filesystem, out *nfs.FSStat) error {
	t, ok := fs.(*tree)
	if !ok {
		return fmt.Errorf("not an export")
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(t.root, &st); err != nil {
		return err
	}
	bs := uint64(st.Bsize)
	out.TotalSize, out.FreeSize, out.AvailableSize = st.Blocks*bs, st.Bfree*bs, st.Bavail*bs
	out.TotalFiles, out.FreeFiles, out.AvailableFiles = st.Files, st.Ffree, st.Ffree
	return nil
}

func (h *handler) ToHandle(fs billy.Filesystem, p []string) []byte {
	t, ok := fs.(*tree)
	if !ok {
		return nil
	}
	return h.s.handles.toHandle(t, p)
}

func (h *handler) FromHandle(fh []byte) (billy.Filesystem, []string, error) {
	return h.s.handles.fromHandle(fh)
}

// InvalidateHandle is left to the tree: its Rename and Remove keep the
// table right (a renamed file keeps its handle).
func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }
func (h *handler) HandleLimit() int                                { return handleCacheSize }
