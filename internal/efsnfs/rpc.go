package efsnfs

// The mount helper's ONC RPC transport (RFC 5531 over TCP with record
// marking). go-nfs-client's transport was used before; it is replaced
// because a mount must outlive its server: that transport gives up after
// about ten seconds without a connection, resends every call after 5 s
// (a 1 MiB synchronous WRITE on a busy disk takes longer), sizes its read
// buffer from the length the server sends, and panics on some malformed
// replies. This one behaves like a `hard` NFS mount: a call waits across
// any gap in the server (a `gantry server` restart) and is sent again on
// the next connection, which is safe for what the helper sends (WRITEs at
// an offset, LOOKUPs, GETATTRs; a retried REMOVE or exclusive CREATE may
// answer ENOENT or EEXIST, as with any NFSv3 client). Several connections
// (as Linux's nconnect) let the server, which answers one connection's
// calls in order, work on several calls at once.
//
// go-nfs-client's XDR encoder still writes the calls.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/willscott/go-nfs-client/nfs/xdr"
)

var errClosed = errors.New("nfs: client closed")

const (
	// conns is how many connections a mount keeps to its server.
	conns = 4
	// callTimeout is how long a call waits for its answer on a live
	// connection before the connection is dropped and the call resent
	// (NFS's timeo=600, in tenths of a second).
	callTimeout = 60 * time.Second
	// maxRecord bounds a reply: the largest READ plus its attributes.
	maxRecord = maxData + 1<<16
)

type transport struct {
	addr   string
	dialFn func(addr string) (net.Conn, error)
	slots  [conns]slot
	next   atomic.Uint32
	xid    atomic.Uint32
	closed chan struct{}
	once   sync.Once
}

// slot is one of the transport's connections, made again when it breaks.
type slot struct {
	mu sync.Mutex
	c  *rconn
}

// rconn is one TCP connection and the calls waiting for its replies.
type rconn struct {
	nc   net.Conn
	wmu  sync.Mutex
	mu   sync.Mutex
	dead bool
	wait map[uint32]chan []byte
}

func newTransport(addr string) *transport {
	t := &transport{addr: addr, closed: make(chan struct{}), dialFn: func(a string) (net.Conn, error) {
		return net.DialTimeout("tcp", a, 5*time.Second)
	}}
	t.xid.Store(uint32(time.Now().UnixNano()))
	return t
}

func (t *transport) close() {
	t.once.Do(func() {
		close(t.closed)
		for i := range t.slots {
			s := &t.slots[i]
			s.mu.Lock()
			if s.c != nil {
				s.c.fail()
			}
			s.mu.Unlock()
		}
	})
}

// conn returns the slot's live connection, connecting (again) as long as
// it takes; it fails only once the transport is closed, or, with once,
// after the first failed attempt.
func (t *transport) conn(s *slot, once bool) (*rconn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-t.closed:
			return nil, errClosed
		default:
		}
		if s.c != nil && !s.c.isDead() {
			return s.c, nil
		}
		nc, err := t.dialFn(t.addr)
		if err == nil {
			s.c = &rconn{nc: nc, wait: map[uint32]chan []byte{}}
			go s.c.receive()
			return s.c, nil
		}
		if once {
			return nil, err
		}
		select {
		case <-t.closed:
			return nil, errClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

type rpcMsg struct {
	Xid     uint32
	Msgtype uint32 // 0: call
	Body    any
}

// call sends args (an rpc.Header and the procedure's arguments) and
// returns the procedure's result, after the RPC reply header.
func (t *transport) call(args any) ([]byte, error) {
	return t.callOn(&t.slots[t.next.Add(1)%conns], args, false)
}

func (t *transport) callOn(s *slot, args any, once bool) ([]byte, error) {
	xid := t.xid.Add(1)
	var w bytes.Buffer
	w.Write([]byte{0, 0, 0, 0}) // record mark, filled in below
	if err := xdr.Write(&w, &rpcMsg{Xid: xid, Body: args}); err != nil {
		return nil, err
	}
	rec := w.Bytes()
	binary.BigEndian.PutUint32(rec, uint32(len(rec)-4)|1<<31)
	for {
		c, err := t.conn(s, once)
		if err != nil {
			return nil, err
		}
		ch := make(chan []byte, 1)
		if !c.register(xid, ch) {
			continue
		}
		if err := c.send(rec); err != nil {
			c.fail()
			if once {
				return nil, err
			}
			continue
		}
		timer := time.NewTimer(callTimeout)
		select {
		case b, ok := <-ch:
			timer.Stop()
			if ok {
				return decodeReply(b)
			}
		case <-timer.C:
			c.fail() // no answer: drop the connection, send again
		case <-t.closed:
			timer.Stop()
			return nil, errClosed
		}
		if once {
			return nil, fmt.Errorf("nfs: connection to %s lost", t.addr)
		}
	}
}

// decodeReply checks an RPC reply's header and returns what follows it.
func decodeReply(b []byte) ([]byte, error) {
	r := &reader{b: b}
	r.u32() // xid, matched by receive
	if mt := r.u32(); r.err == nil && mt != 1 {
		return nil, fmt.Errorf("rpc: message type %d is not a reply", mt)
	}
	switch st := r.u32(); {
	case r.err != nil:
		return nil, r.err
	case st != 0:
		return nil, fmt.Errorf("rpc: call denied (%d)", r.u32())
	}
	r.u32()       // verifier flavor
	r.opaque(400) // verifier body
	acc := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	if acc != 0 {
		return nil, fmt.Errorf("rpc: call not accepted (status %d)", acc)
	}
	return r.b, nil
}

func (c *rconn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

func (c *rconn) register(xid uint32, ch chan []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false
	}
	c.wait[xid] = ch
	return true
}

func (c *rconn) send(rec []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(callTimeout))
	_, err := c.nc.Write(rec)
	return err
}

// fail closes the connection; its waiting calls get a closed channel and
// go again on the next one.
func (c *rconn) fail() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	c.dead = true
	c.nc.Close()
	for xid, ch := range c.wait {
		close(ch)
		delete(c.wait, xid)
	}
}

func (c *rconn) receive() {
	defer c.fail()
	br := bufio.NewReaderSize(c.nc, 1<<16)
	for {
		b, err := readRecord(br)
		if err != nil || len(b) < 4 {
			return
		}
		xid := binary.BigEndian.Uint32(b)
		c.mu.Lock()
		ch := c.wait[xid]
		delete(c.wait, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- b
		}
	}
}

// readRecord reads one record, however many fragments it comes in, of at
// most maxRecord bytes.
func readRecord(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(out)+n > maxRecord {
			return nil, fmt.Errorf("rpc: record of more than %d bytes", maxRecord)
		}
		start := len(out)
		out = append(out, make([]byte, n)...)
		if _, err := io.ReadFull(br, out[start:]); err != nil {
			return nil, err
		}
		if h&(1<<31) != 0 {
			return out, nil
		}
	}
}
