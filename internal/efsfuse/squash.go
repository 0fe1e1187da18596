package efsfuse

// Root squashing, for a file system policy without
// elasticfilesystem:ClientRootAccess on a volume without an access point
// user. EFS then acts as each NFS client's own uid and gids, except that
// uid or gid 0 becomes the anonymous 65534 (NFS's root_squash). Unlike an
// access point mount, one mount serves many identities, so the helper
// cannot become one user: it stays root and runs each request that
// touches the tree on a thread whose file system ids (setfsuid,
// setfsgid, setgroups: all per thread at the system call level) are the
// caller's, squashed. With a non-zero fsuid the thread's file system
// capabilities are gone, so the host kernel checks the operation exactly
// as it would the container's own process on a bind mount, or nobody's
// for root. Only runc containers' requests come with their caller: a
// gVisor sandbox's come from its gofer, so a sandbox gets an access point
// style mount as 65534 for a root container instead (the agent decides).

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Anonymous is the id root is squashed to (nfsnobody).
const Anonymous = 65534

// squashID is root_squash for one id.
func squashID(id uint32) uint32 {
	if id == 0 {
		return Anonymous
	}
	return id
}

// squashFS runs every request that reaches the tree as its caller.
// Reads and lseeks on open files need no identity (access was checked at
// open) and are left alone.
type squashFS struct {
	fuse.RawFileSystem
	// helper's own supplementary groups, put back after each request.
	groups []uint32
}

func newSquashFS(raw fuse.RawFileSystem) (*squashFS, error) {
	gs, err := unix.Getgroups()
	if err != nil {
		return nil, err
	}
	s := &squashFS{RawFileSystem: raw}
	for _, g := range gs {
		s.groups = append(s.groups, uint32(g))
	}
	return s, nil
}

// callerIDs is who a request runs as: the caller's uid, gid and
// supplementary groups (read from its process, as the kernel does not
// send them), squashed.
func callerIDs(c *fuse.Caller) (uid, gid uint32, groups []uint32) {
	if c.Uid == 0 {
		return Anonymous, Anonymous, nil
	}
	for _, g := range processGroups(c.Pid) {
		groups = append(groups, squashID(g))
	}
	return c.Uid, squashID(c.Gid), groups
}

// processGroups is pid's supplementary groups; none when it is gone.
func processGroups(pid uint32) []uint32 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, s := range strings.Fields(rest) {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				out = append(out, uint32(g))
			}
		}
		return out
	}
	return nil
}

func setgroups(gs []uint32) syscall.Errno {
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0)
	return e
}

// setfsid sets the thread's fsuid (or fsgid) and reports whether it now
// is id: the call itself returns the previous value, never an error.
func setfsid(trap uintptr, id uint32) bool {
	unix.RawSyscall(trap, uintptr(id), 0, 0)
	cur, _, _ := unix.RawSyscall(trap, ^uintptr(0), 0, 0) // -1 changes nothing
	return uint32(cur) == id
}

// as switches the calling thread to c's squashed identity until the
// returned function puts root back. A thread that cannot be switched (or
// switched back) ends the helper: the mount fails closed (ENOTCONN)
// rather than serve a request as root or as someone else.
func (s *squashFS) as(c *fuse.Caller) func() {
	uid, gid, groups := callerIDs(c)
	runtime.LockOSThread()
	if setgroups(groups) != 0 || !setfsid(unix.SYS_SETFSGID, gid) || !setfsid(unix.SYS_SETFSUID, uid) {
		failClosed(fmt.Sprintf("cannot act as %d:%d", uid, gid))
	}
	return func() {
		if !setfsid(unix.SYS_SETFSUID, 0) || !setfsid(unix.SYS_SETFSGID, 0) || setgroups(s.groups) != 0 {
			failClosed("cannot switch a thread back to root")
		}
		runtime.UnlockOSThread()
	}
}

// failClosed ends the helper at once. Not a panic: go-fuse recovers
// panics in request handlers and would go on serving from a thread left
// with the wrong identity.
func failClosed(why string) {
	fmt.Fprintln(os.Stderr, "efsfuse squash:", why)
	os.Exit(3)
}

func (s *squashFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.Lookup(cancel, h, name, out)
}

func (s *squashFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.GetAttr(cancel, in, out)
}

func (s *squashFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.SetAttr(cancel, in, out)
}

func (s *squashFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Mknod(cancel, in, name, out)
}

func (s *squashFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (s *squashFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.Unlink(cancel, h, name)
}

func (s *squashFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.Rmdir(cancel, h, name)
}

func (s *squashFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (s *squashFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Link(cancel, in, name, out)
}

func (s *squashFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (s *squashFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.Readlink(cancel, h)
}

func (s *squashFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Access(cancel, in)
}

func (s *squashFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Create(cancel, in, name, out)
}

func (s *squashFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Tmpfile(cancel, in, out)
}

func (s *squashFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Open(cancel, in, out)
}

// Writes run as the caller too: the kernel clears set-id bits on a
// write by anyone without CAP_FSETID.
func (s *squashFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Write(cancel, in, data)
}

func (s *squashFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Writev(cancel, in, data)
}

func (s *squashFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.CopyFileRange(cancel, in)
}

func (s *squashFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Fallocate(cancel, in)
}

func (s *squashFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.OpenDir(cancel, in, out)
}

func (s *squashFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.ReadDir(cancel, in, out)
}

// ReadDirPlus looks every entry up.
func (s *squashFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (s *squashFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	defer s.as(&h.Caller)()
	return s.RawFileSystem.StatFs(cancel, h, out)
}

func (s *squashFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	defer s.as(&in.Caller)()
	return s.RawFileSystem.Statx(cancel, in, out)
}
