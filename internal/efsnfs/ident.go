package efsnfs

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ident runs file operations as an access point's POSIX user. The server
// serves several exports from one process (one address, port 2049), so
// the process cannot become one user as the FUSE helper does; instead a
// few goroutines each lock an OS thread and switch that thread alone
// (raw setgroups/setresgid/setresuid act on the calling thread) to the
// user for good. Their threads never run anything else and die with
// them: a goroutine that exits locked takes its thread along, so no
// thread with the user's identity returns to the runtime's pool. With
// every uid non-zero the thread has no capabilities left, and the host
// kernel checks each operation against the user, as with the helper.
type ident struct {
	uid, gid uint32
	groups   []uint32
	work     chan func()
	done     chan struct{}
	once     sync.Once
}

// workers per identity: enough for a few clients' concurrent calls.
const workers = 4

func newIdent(uid, gid uint32, groups []uint32) (*ident, error) {
	id := &ident{uid: uid, gid: gid, groups: groups, work: make(chan func()), done: make(chan struct{})}
	errs := make(chan error, workers)
	for range workers {
		go id.worker(errs)
	}
	for range workers {
		if err := <-errs; err != nil {
			id.close()
			return nil, err
		}
	}
	return id, nil
}

func (id *ident) worker(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread goes with us
	if err := id.become(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case fn := <-id.work:
			fn()
		case <-id.done:
			return
		}
	}
}

func (id *ident) become() error {
	var p unsafe.Pointer
	gids := make([]uint32, len(id.groups))
	copy(gids, id.groups)
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", gids, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(id.gid), uintptr(id.gid), uintptr(id.gid)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", id.gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(id.uid), uintptr(id.uid), uintptr(id.uid)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", id.uid, e)
	}
	return nil
}

// do runs fn on one of the user's threads; once the export is closed,
// it fails instead.
func (id *ident) do(fn func() error) error {
	done := make(chan error, 1)
	select {
	case id.work <- func() { done <- fn() }:
		return <-done
	case <-id.done:
		return unix.EBADF
	}
}

func (id *ident) close() { id.once.Do(func() { close(id.done) }) }

// mapIDs maps a chown's ids as EFS maps every id a client of such an
// access point sends: any uid becomes the user's, any gid too unless it
// is one of the user's groups. A chown never gives a file away.
func (id *ident) mapIDs(uid, gid int) (int, int) {
	if uid >= 0 {
		uid = int(id.uid)
	}
	if gid >= 0 && uint32(gid) != id.gid && !slices.Contains(id.groups, uint32(gid)) {
		gid = int(id.gid)
	}
	return uid, gid
}

// statT is st as the *syscall.Stat_t go-nfs reads ids, inode numbers and
// times from; the two types have one layout (both from the kernel's).
func statT(st *unix.Stat_t) *syscall.Stat_t {
	return (*syscall.Stat_t)(unsafe.Pointer(st))
}
