package efsnfs

// Files kept open between NFS calls. go-nfs opens a file by path for
// every READ and WRITE and closes it after, and stats it by path around
// each: with every path resolved by openat2 from the export's root, on a
// thread of the export's user, that was most of the cost of a 4 KiB
// read. An export keeps up to fdCacheSize files open (read-only or
// read-write, as go-nfs asked), opened as its user, so their access is
// the user's; a READ or WRITE then is one pread or pwrite, and a GETATTR
// of such a file one fstat, with no thread switch.
//
// A path may name another file after a rename or removal: any made here
// closes the files at or below that path, and entries opened before the
// latest rename or removal anywhere in the process (epoch) are checked
// against the path before use. Files unused for fdIdle are closed, so a
// removed file's space is freed soon and a chmod that takes access away
// applies within that time (the kernel checks access at open).

import (
	"container/list"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// appendOffset is the WRITE offset Gantry's client sends for a write to a
// file opened O_APPEND: "at the end, whatever it is now". NFSv3 has no
// append; a client asks for the size and writes there, and two clients
// appending at once can land on one offset and overwrite each other.
// This server takes the offset as O_APPEND does instead (RWF_APPEND), so
// concurrent appends from any number of tasks all land whole. No real
// write has this offset (2^64-1 is past any file's size limit), and
// another server answers it with an error, on which the client falls
// back to the size-then-write of plain NFSv3.
const appendOffset = ^uint64(0)

const (
	fdCacheSize = 64
	fdIdle      = 2 * time.Second
)

type fdKey struct {
	path  string
	write bool
}

type cachedFD struct {
	key   fdKey
	fd    int
	ino   uint64
	refs  int
	epoch uint64
	used  time.Time
	dead  bool // out of the cache: closed by its last user
	elem  *list.Element
	// amu serializes appends through fd, whose file offset then says
	// where each one landed (cfile.writeAtEnd).
	amu sync.Mutex
}

type fdCache struct {
	mu     sync.Mutex
	m      map[fdKey]*cachedFD
	lru    *list.List // most recently used first
	stop   chan struct{}
	closed bool
}

func newFDCache() *fdCache {
	c := &fdCache{m: map[fdKey]*cachedFD{}, lru: list.New(), stop: make(chan struct{})}
	go c.janitor()
	return c
}

func (c *fdCache) janitor() {
	tick := time.NewTicker(fdIdle / 2)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-tick.C:
			c.mu.Lock()
			for el := c.lru.Back(); el != nil; {
				e := el.Value.(*cachedFD)
				el = el.Prev()
				if e.refs == 0 && now.Sub(e.used) > fdIdle {
					c.evict(e)
				}
			}
			c.mu.Unlock()
		}
	}
}

// evict takes e out of the cache; called with mu held.
func (c *fdCache) evict(e *cachedFD) {
	if e.dead {
		return
	}
	e.dead = true
	delete(c.m, e.key)
	c.lru.Remove(e.elem)
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}

// acquire returns the cached file for key, in use until release.
func (c *fdCache) acquire(key fdKey) *cachedFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	if e == nil {
		return nil
	}
	e.refs++
	c.lru.MoveToFront(e.elem)
	return e
}

func (c *fdCache) release(e *cachedFD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	e.used = time.Now()
	if e.refs == 0 && e.dead {
		unix.Close(e.fd)
	}
}

func (c *fdCache) refresh(e *cachedFD, ep uint64) {
	c.mu.Lock()
	e.epoch = ep
	c.mu.Unlock()
}

// put caches fd for key, in use until release.
func (c *fdCache) put(key fdKey, fd int, ino, ep uint64) *cachedFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		// A call that raced the export's end: its user closes it.
		return &cachedFD{key: key, fd: fd, ino: ino, refs: 1, dead: true}
	}
	if old := c.m[key]; old != nil {
		c.evict(old)
	}
	e := &cachedFD{key: key, fd: fd, ino: ino, refs: 1, epoch: ep}
	e.elem = c.lru.PushFront(e)
	c.m[key] = e
	for el := c.lru.Back(); c.lru.Len() > fdCacheSize && el != nil; {
		o := el.Value.(*cachedFD)
		el = el.Prev()
		if o.refs == 0 {
			c.evict(o)
		}
	}
	return e
}

// drop closes the files at p and below it.
func (c *fdCache) drop(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if k.path == p || p == "." || strings.HasPrefix(k.path, p+"/") {
			c.evict(e)
		}
	}
}

func (c *fdCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.stop)
	for _, e := range c.m {
		c.evict(e)
	}
}

// cachedOpen returns p opened read-only or read-write as the export's
// user, from the cache when it holds it.
func (t *tree) cachedOpen(p string, write bool) (*cachedFD, error) {
	key := fdKey{clean(p), write}
	ep := epoch.Load()
	if e := t.fds.acquire(key); e != nil {
		if e.epoch == ep {
			return e, nil
		}
		if t.still(strings.Split(key.path, "/"), e.ino) {
			t.fds.refresh(e, ep)
			return e, nil
		}
		t.fds.release(e)
		t.fds.drop(key.path)
	}
	flags := unix.O_RDONLY
	if write {
		flags = unix.O_RDWR
	}
	var fd int
	err := t.do(func() error {
		var err error
		fd, err = t.openat(key.path, flags, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		// Directories and devices are not worth keeping.
		return &cachedFD{key: key, fd: fd, ino: st.Ino, refs: 1, dead: true}, nil
	}
	return t.fds.put(key, fd, st.Ino, ep), nil
}

// cachedStat stats p through a file the cache holds open, if any.
func (t *tree) cachedStat(p string) (*unix.Stat_t, bool) {
	ep := epoch.Load()
	for _, w := range []bool{false, true} {
		e := t.fds.acquire(fdKey{p, w})
		if e == nil {
			continue
		}
		var st unix.Stat_t
		ok := e.epoch == ep && unix.Fstat(e.fd, &st) == nil
		t.fds.release(e)
		if ok {
			return &st, true
		}
	}
	return nil, false
}

// cfile is a cached file as one go-nfs call sees it: its own offset over
// the shared descriptor, so calls on one file do not disturb each other.
type cfile struct {
	t      *tree
	e      *cachedFD
	name   string
	off    int64
	append bool  // the WRITE asked for the end of the file (appendOffset)
	landed int64 // where the last append began
	// goNFS: opened by go-nfs, whose WRITE replies say FILE_SYNC; a
	// file it wrote is synced on Close to make that true (it writes only
	// what the fast path could not, rarely).
	goNFS, wrote bool
	once         sync.Once
}

func (f *cfile) Name() string { return f.name }

func (f *cfile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(f.e.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (f *cfile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *cfile) Write(p []byte) (int, error) {
	f.wrote = true
	if f.append {
		return f.writeAtEnd(p)
	}
	n := 0
	for n < len(p) {
		m, err := unix.Pwrite(f.e.fd, p[n:], f.off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			f.off += int64(n)
			return n, err
		}
		n += m
	}
	f.off += int64(n)
	return n, nil
}

// writeAtEnd appends p as O_APPEND does, atomically against every other
// append to the file, through this server or any other process. An
// append at offset -1 moves the descriptor's offset to its end, and
// appends through one descriptor take turns (amu), so the offset after
// it less its length is where it began (landed).
func (f *cfile) writeAtEnd(p []byte) (int, error) {
	f.e.amu.Lock()
	defer f.e.amu.Unlock()
	n := 0
	defer func() {
		if end, err := unix.Seek(f.e.fd, 0, io.SeekCurrent); err == nil {
			f.landed = end - int64(n)
		}
	}()
	for n < len(p) {
		m, err := unix.Pwritev2(f.e.fd, [][]byte{p[n:]}, -1, unix.RWF_APPEND)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

func (f *cfile) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekStart && off == -1 { // appendOffset
		// go-nfs seeks to the WRITE's offset, as a signed number.
		f.append = true
		return off, nil
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += f.off
	case io.SeekEnd:
		var st unix.Stat_t
		if err := unix.Fstat(f.e.fd, &st); err != nil {
			return f.off, err
		}
		off += st.Size
	}
	if off < 0 {
		return f.off, unix.EINVAL
	}
	f.off = off
	return off, nil
}

func (f *cfile) Close() error {
	var err error
	f.once.Do(func() {
		if f.goNFS && f.wrote {
			err = unix.Fsync(f.e.fd)
		}
		if f.e.dead && f.e.elem == nil {
			unix.Close(f.e.fd) // never cached
			return
		}
		f.t.fds.release(f.e)
	})
	return err
}

func (f *cfile) Lock() error            { return unix.Flock(f.e.fd, unix.LOCK_EX) }
func (f *cfile) Unlock() error          { return unix.Flock(f.e.fd, unix.LOCK_UN) }
func (f *cfile) Truncate(n int64) error { return unix.Ftruncate(f.e.fd, n) }
