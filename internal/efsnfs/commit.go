package efsnfs

// The helper's side of NFSv3's two-step writes. WRITEs go UNSTABLE: the
// server answers once the data is in its page cache, and a COMMIT (sent
// on fsync(2) and on close(2), as Linux's NFS client does) has it fsync
// the file. Each reply carries the server's write verifier, which
// changes whenever the server restarts; if a COMMIT's verifier is not
// the one a write was answered under, the server may have lost that
// write (only a host crash loses a page cache, but the client cannot
// tell which restart it was), so the helper sends it again and commits
// again, as Linux's client resends from its page cache. The helper has
// no page cache of its own, so it keeps a copy of each uncommitted write:
// past maxUncommitted bytes a file a commit starts in the background, at
// twice that the writer waits for it, and past maxDirty in all the
// writer commits every file first (Linux's client likewise commits when
// its unstable pages pile up). Appends are kept at the offset where the
// server says they landed (answerWrite), so resending one does not
// append it twice.

import (
	"sync"
	"sync/atomic"
	"syscall"
)

var (
	// maxUncommitted bounds the copies one file keeps (and so what a
	// COMMIT has to sync: a few seconds of disk at most).
	maxUncommitted = 32 << 20
	// maxDirty bounds the copies of all files of a mount together.
	maxDirty = int64(128 << 20)
	// commitRounds bounds how often one commit resends and tries again
	// when the server keeps restarting under it.
	commitRounds = 5
)

// uwrite is one UNSTABLE write: where, what, and under which verifier
// it was answered.
type uwrite struct {
	off  uint64
	data []byte
	verf [8]byte
}

// uncommitted is a file's writes since its last commit. An append
// answered without where it landed (by a server other than Gantry's) is
// kept at appendOffset without its data: it cannot be resent.
type uncommitted struct {
	cmu sync.Mutex // one commit at a time
	mu  sync.Mutex
	ws  []*uwrite     // in the order answered
	n   int           // bytes kept in ws
	bg  bool          // a commit started by keep runs
	err syscall.Errno // what one such commit failed with, for the next fsync or close
}

// dirtySet is a mount's files with uncommitted writes, for maxDirty.
type dirtySet struct {
	bytes atomic.Int64
	mu    sync.Mutex
	nodes map[*node]bool
}

func newDirtySet() *dirtySet { return &dirtySet{nodes: map[*node]bool{}} }

// keep records what a WRITE at off (appendOffset for an append) wrote,
// when the server did not make it durable, and commits when too much is
// waiting.
func (n *node) keep(c *client, off uint64, data []byte, w wrote) syscall.Errno {
	if w.stable != unstable {
		return 0
	}
	if off == appendOffset && w.hasPre {
		off = w.preSize
	}
	if off == appendOffset {
		data = nil
	}
	u := &n.unc
	u.mu.Lock()
	u.ws = append(u.ws, &uwrite{off: off, data: append([]byte(nil), data...), verf: w.verf})
	u.n += len(data)
	// Past the bound a commit starts while writing goes on (the server's
	// disk writes one part while the next comes), and at twice the bound
	// the writer waits for one.
	start := u.n > maxUncommitted && !u.bg
	wait := u.n > 2*maxUncommitted
	u.bg = u.bg || start
	u.mu.Unlock()
	all := int64(len(data))
	if d := c.dirty; d != nil {
		d.mu.Lock()
		d.nodes[n] = true
		d.mu.Unlock()
		all = d.bytes.Add(int64(len(data)))
	}
	if start {
		go func() {
			e := n.commitNow(c)
			u.mu.Lock()
			u.bg = false
			if u.err == 0 {
				u.err = e
			}
			u.mu.Unlock()
		}()
	}
	if wait {
		return n.commit(c)
	}
	if all > maxDirty {
		return c.commitAll()
	}
	return 0
}

// commitAll commits every file of the mount with writes waiting.
func (c *client) commitAll() syscall.Errno {
	c.dirty.mu.Lock()
	nodes := make([]*node, 0, len(c.dirty.nodes))
	for n := range c.dirty.nodes {
		nodes = append(nodes, n)
	}
	c.dirty.mu.Unlock()
	var first syscall.Errno
	for _, n := range nodes {
		if e := n.commit(c); e != 0 && first == 0 {
			first = e
		}
	}
	return first
}

// commit makes the file's writes so far durable (commitNow) and reports
// what failed since the last call, in a commit of its own or one started
// while writing.
func (n *node) commit(c *client) syscall.Errno {
	e := n.commitNow(c)
	u := &n.unc
	u.mu.Lock()
	if e == 0 {
		e = u.err
	}
	u.err = 0
	u.mu.Unlock()
	return e
}

// commitNow sends COMMIT, then, for any write answered under another
// verifier than the COMMIT's, the write again and another COMMIT. A write
// that fails, or that cannot be resent, fails the fsync(2) or close(2)
// with EIO, once, as Linux reports a lost write back; a file removed
// meanwhile has nothing left to keep.
func (n *node) commitNow(c *client) syscall.Errno {
	u := &n.unc
	u.cmu.Lock()
	defer u.cmu.Unlock()
	u.mu.Lock()
	snap := append([]*uwrite(nil), u.ws...)
	u.mu.Unlock()
	if len(snap) == 0 {
		return 0
	}
	e := n.commitRounds(c, snap)
	// Done with what was taken, committed or reported; writes answered
	// since stay for the next commit.
	size := 0
	for _, w := range snap {
		size += len(w.data)
	}
	u.mu.Lock()
	// Copied, so the committed copies are freed now.
	u.ws = append([]*uwrite(nil), u.ws[len(snap):]...)
	u.n -= size
	empty := len(u.ws) == 0
	u.mu.Unlock()
	if d := c.dirty; d != nil {
		d.bytes.Add(-int64(size))
		if empty {
			d.mu.Lock()
			// Checked again under the set's lock: a write may have come.
			u.mu.Lock()
			if len(u.ws) == 0 {
				delete(d.nodes, n)
			}
			u.mu.Unlock()
			d.mu.Unlock()
		}
	}
	if e == syscall.ESTALE {
		return 0
	}
	return e
}

func (n *node) commitRounds(c *client, snap []*uwrite) syscall.Errno {
	for range commitRounds {
		verf, err := c.commit(n.h())
		if err != nil {
			return errno(err)
		}
		var again []*uwrite
		for _, w := range snap {
			if w.verf != verf {
				again = append(again, w)
			}
		}
		if len(again) == 0 {
			return 0
		}
		for _, w := range again {
			if w.off == appendOffset {
				// An append to a server that restarted since, landed
				// where is unknown.
				return syscall.EIO
			}
			if e := n.resend(c, w); e != 0 {
				return e
			}
		}
	}
	return syscall.EIO
}

// resend writes w again where it first went, as UNSTABLE, and takes the
// verifier it is now answered under.
func (n *node) resend(c *client, w *uwrite) syscall.Errno {
	done := 0
	for done < len(w.data) {
		r, err := c.write(n.h(), w.off+uint64(done), w.data[done:], unstable)
		if err != nil {
			return errno(err)
		}
		if r.n == 0 {
			return syscall.EIO
		}
		w.verf = r.verf
		done += int(r.n)
	}
	return 0
}
