// Package efsnfs serves EFS file systems over NFSv3 and mounts them, for
// tasks on a host that does not hold the file system's tree.
//
// The serving side (Server) answers on a mount target's address, port
// 2049, with the go-nfs server (github.com/willscott/go-nfs) over a tree
// confined to each export's root (tree.go) and run as the access point's
// user when it has one (ident.go). The mounting side (Mount, the hidden
// `gantry efs-nfs-mount` helper) is a FUSE file system over an NFSv3
// client, started in the task's network namespace so that the mount
// target sees the task's ENI address and its security groups apply.
//
// Hosts with the kernel's NFS client and nfsd would use those instead
// (see docs/architecture.md); this host kernel has neither, and the
// userspace path is what a remote agent here does.
package efsnfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"

	billy "github.com/go-git/go-billy/v5"
	nfs "github.com/willscott/go-nfs"
	nfshelper "github.com/willscott/go-nfs/helpers"
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
}

// Server serves a set of exports on one address.
type Server struct {
	ln   net.Listener
	done chan struct{}

	mu      sync.Mutex
	exports map[string]*tree
}

func init() {
	// go-nfs logs every failed lookup at Info; a missing name is normal.
	nfs.Log.SetLevel(nfs.ErrorLevel)
}

// Listen serves on addr (host:port) until Close.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, done: make(chan struct{}), exports: map[string]*tree{}}
	// Handles name paths in an LRU cache; a client holding a handle the
	// cache dropped gets NFS3ERR_STALE and looks the name up again.
	h := nfshelper.NewCachingHandler(&handler{s: s}, 1<<16)
	go func() {
		defer close(s.done)
		srv := &nfs.Server{Handler: h, Context: context.Background()}
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			slog.Warn("efs nfs server stopped", "addr", addr, "err", err)
		}
	}()
	return s, nil
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
	t := &tree{root: root}
	if e.Squash {
		if t.id, err = newIdent(e.UID, e.GID, e.Groups); err != nil {
			unix.Close(root)
			return err
		}
	}
	s.exports[name] = t
	return nil
}

// Close stops listening and releases the exports. Connections already
// accepted end when their clients go (go-nfs has no way to cut them), and
// calls on them fail since the exports are gone.
func (s *Server) Close() error {
	err := s.ln.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, t := range s.exports {
		if t.id != nil {
			t.id.close()
		}
		unix.Close(t.root)
		t.root = -1
		delete(s.exports, name)
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

// The caching handler wraps these; they are never called.
func (h *handler) ToHandle(billy.Filesystem, []string) []byte { return nil }
func (h *handler) FromHandle([]byte) (billy.Filesystem, []string, error) {
	return nil, nil, io.ErrUnexpectedEOF
}
func (h *handler) InvalidateHandle(billy.Filesystem, []byte) error { return nil }
func (h *handler) HandleLimit() int                                { return 1 << 16 }
