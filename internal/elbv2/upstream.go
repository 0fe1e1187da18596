package elbv2

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// upstream carries the proxy's requests to targets. Profiling the load
// balancer against targets that close every connection (busybox httpd, many
// small servers) showed http.Transport spending a dial goroutine, a read
// loop and a write loop goroutine, and their hand-offs, on every one-shot
// connection. A request without a body is one write and one response, so
// upstream does it in the handler's goroutine: net/http still writes the
// request and parses the response; only the connection handling is ours.
// Requests with a body or an Upgrade go through http.Transport, which
// streams the body while it reads the response.
type upstream struct {
	dialer net.Dialer
	plain  net.Dialer

	mu   sync.Mutex
	idle map[string][]*upConn // by target host:port, most recently used last
	// fallbacks are the http.Transports for requests with a body, one per
	// idle timeout in use (time.Duration -> *http.Transport): a transport's
	// ResponseHeaderTimeout is fixed, and load balancers have few distinct
	// idle timeouts between them. A sync.Map, read without a lock by every
	// such request.
	fallbacks sync.Map
}

const (
	upMaxIdlePerTarget = 64
	upIdleTimeout      = 30 * time.Second
	// upDialTimeout is shorter than an ALB's 10 s connect timeout because
	// the proxy, unlike an ALB, tries another target when a connect does
	// not complete (retryTransport): a connect that never completed sent
	// nothing, so any request may go elsewhere. A task that vanished
	// without a reset (a sandbox's network stack dies with it; an address
	// nobody answers ARP for) costs a request at most this long per try.
	upDialTimeout = 2 * time.Second
)

// targetIdleTimeout is how long the proxy waits on a target that sends
// nothing, for the response's headers or between reads of its body, when
// the request's listener does not say (its load balancer's
// idle_timeout.timeout_seconds, default 60 s, does): after it an ALB
// answers 504. Without it a target that went away silently with a request
// in flight held the client until the client gave up. A variable so tests
// can shorten it.
var targetIdleTimeout = defaultIdleTimeout

// idleTimeoutOf is the idle timeout for one request: its load balancer's,
// carried in the request's context by the listener that took it.
func idleTimeoutOf(req *http.Request) time.Duration {
	if ps, ok := req.Context().Value(pickKey{}).(*pickState); ok && ps.opts != nil && ps.opts.idle > 0 {
		return ps.opts.idle
	}
	return targetIdleTimeout
}

func newUpstream() *upstream {
	// Idle connections are closed after upIdleTimeout, so TCP keep-alive
	// probes would only cost setsockopt calls on every dial.
	d := net.Dialer{Timeout: upDialTimeout, KeepAlive: -1}
	// The body-less path writes its request right after connecting, so the
	// handshake's last ACK can ride on it instead of crossing the bridge
	// on its own (HAProxy's tcp-smart-connect): with quick ACKs off the
	// kernel holds it back until the request goes; send turns them on again.
	smart := d
	smart.Control = func(_, address string, rc syscall.RawConn) error {
		// Both are only savings: on any error net's connect does the rest.
		return rc.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 0) == nil {
				startConnect(fd, address)
			}
		})
	}
	return &upstream{dialer: smart, plain: d, idle: map[string][]*upConn{}}
}

// fallback is the transport for requests with a body or an Upgrade whose
// load balancer has this idle timeout.
func (u *upstream) fallback(idle time.Duration) *http.Transport {
	if t, ok := u.fallbacks.Load(idle); ok {
		return t.(*http.Transport)
	}
	t, _ := u.fallbacks.LoadOrStore(idle, &http.Transport{
		DialContext:         u.plain.DialContext,
		MaxIdleConnsPerHost: upMaxIdlePerTarget,
		IdleConnTimeout:     upIdleTimeout,
		// Targets get exactly the client's Accept-Encoding, and the
		// client the target's bytes, as on the body-less path.
		DisableCompression: true,
		// As on the body-less path: no answer within the idle
		// timeout is a 504.
		ResponseHeaderTimeout: idle,
	})
	return t.(*http.Transport)
}

type upConn struct {
	net.Conn
	addr string
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time
}

var (
	upReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	upWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

func (c *upConn) close() {
	c.Conn.Close()
	if c.br != nil {
		c.br.Reset(nil)
		upReaders.Put(c.br)
		c.bw.Reset(nil)
		upWriters.Put(c.bw)
		c.br, c.bw = nil, nil
	}
}

// errStale is a reused connection the target had closed before it read
// the request: the request was not seen and may be sent again.
var errStale = errors.New("idle connection closed by the target")

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Body != nil && req.Body != http.NoBody) || req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return u.fallback(idleTimeoutOf(req)).RoundTrip(req)
	}
	addr := req.URL.Host
	for {
		c := u.get(addr)
		reused := c != nil
		if c == nil {
			conn, err := u.dialer.DialContext(req.Context(), "tcp", addr)
			if err != nil {
				return nil, err
			}
			br, bw := upReaders.Get().(*bufio.Reader), upWriters.Get().(*bufio.Writer)
			br.Reset(conn)
			bw.Reset(newRawWriter(conn))
			c = &upConn{Conn: conn, addr: addr, br: br, bw: bw}
		}
		resp, err := u.send(c, req, reused)
		if errors.Is(err, errStale) && replayableMethod(req) {
			continue
		}
		return resp, err
	}
}

func (u *upstream) send(c *upConn, req *http.Request, reused bool) (*http.Response, error) {
	ctx := req.Context()
	// Set before the client's context can poison it below, so it never
	// undoes that.
	idle := idleTimeoutOf(req)
	c.SetDeadline(time.Now().Add(idle))
	// A client that goes away, or a request that times out, unblocks the
	// reads and writes below.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		if reused {
			return fail(errStale)
		}
		return fail(err)
	}
	if !reused {
		// The request carried the handshake's ACK. From here the target's
		// answer is acknowledged at once as usual: a target that sends its
		// headers and body in two small writes without TCP_NODELAY would
		// otherwise wait on a delayed ACK (Nagle).
		quickAck(c.Conn)
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) && c.br.Buffered() == 0 {
				return fail(errStale)
			}
			return fail(err)
		}
		// 1xx answers other than 101 precede the real one (101 only follows
		// an Upgrade, which the fallback transport carries).
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		io.Copy(io.Discard, resp.Body)
	}
	resp.Body = &upBody{rc: resp.Body, c: c, u: u, stop: stop, keep: !resp.Close, ctx: ctx, idle: idle, renew: time.Now().Add(idle / 8)}
	return resp, nil
}

// startConnect sends the SYN before net's own connect does. To a task on
// this host the kernel runs the whole handshake inside the call, which
// takes tens of microseconds of CPU: made through syscall.Syscall, the
// Go scheduler takes such a call for a blocked one, hands the P to another
// thread and wakes one (a profile under load showed that churn, and the
// scheduler's monitor polling for it, at about a sixth of the proxy's
// CPU). The socket is non-blocking, so the call cannot block and is made
// raw. net's connect that follows reports the outcome as always: success
// if the handshake is done, EALREADY and a wait if not, the error if the
// target refused; this call's own result is not needed.
func startConnect(fd uintptr, address string) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Is4() {
		return
	}
	sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: ap.Addr().As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	syscall.RawSyscall(syscall.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
}

// rawWriter writes the requests on the body-less path: a write to a task
// on this host also carries the packet through the bridge into the task
// inside the call, so it is made raw for the same reason as startConnect.
// The socket is non-blocking: when it is full, RawConn waits for it.
type rawWriter struct {
	c  net.Conn
	rc syscall.RawConn
}

func newRawWriter(c net.Conn) io.Writer {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return &rawWriter{c: c, rc: rc}
		}
	}
	return c
}

func (w *rawWriter) Write(p []byte) (int, error) {
	done := 0
	var werr error
	err := w.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			// MSG_NOSIGNAL: a target that reset the connection is an
			// EPIPE error here, not a signal.
			n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done), syscall.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				done += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				werr = os.NewSyscallError("write", e)
				return true
			}
		}
		return true
	})
	if werr == nil {
		werr = err
	}
	if werr != nil {
		return done, &net.OpError{Op: "write", Net: "tcp", Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: werr}
	}
	return done, nil
}

func quickAck(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	if rc, err := sc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read"
}

func replayableMethod(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// upBody hands the connection back for reuse once the response body has
// been read to its end, or closes it.
type upBody struct {
	rc   io.ReadCloser
	c    *upConn
	u    *upstream
	stop func() bool
	keep bool
	eof  bool
	done bool
	// The idle timeout runs between reads of a streamed body too; it is
	// pushed back once an eighth of it has passed rather than on every
	// read, so a target is cut after 7/8 to 8/8 of it without a byte.
	ctx   context.Context
	idle  time.Duration
	renew time.Time
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, http.ErrBodyReadAfterClose
	}
	if now := time.Now(); now.After(b.renew) {
		b.renew = now.Add(b.idle / 8)
		b.c.SetReadDeadline(now.Add(b.idle))
		// The client may have left between the check and the new
		// deadline, which would undo its poisoned one.
		if b.ctx.Err() != nil {
			b.c.SetDeadline(time.Unix(1, 0))
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *upBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// stop reports false when the context already poisoned the deadline;
	// bytes past the response would be read as the next one's.
	reuse := b.stop() && b.eof && b.keep && b.c.br.Buffered() == 0
	if !reuse && b.eof && !b.keep {
		// The target answered in full and asked to close (busybox httpd and
		// other one-shot servers). Closing with a reset, as load balancers
		// do on their server side, frees the socket at once on both ends:
		// an orderly close leaves a TIME_WAIT socket on whichever side
		// closed first, one per request, and costs one more packet.
		if tc, ok := b.c.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	if !reuse {
		// Closing the connection first keeps net/http from draining the
		// unread rest of the body, which for a stream may never end.
		b.c.Conn.Close()
	}
	b.rc.Close()
	if reuse {
		b.u.put(b.c)
	} else {
		b.c.close()
	}
	return nil
}

func (u *upstream) get(addr string) *upConn {
	for {
		u.mu.Lock()
		cs := u.idle[addr]
		if len(cs) == 0 {
			u.mu.Unlock()
			return nil
		}
		c := cs[len(cs)-1]
		u.setIdle(addr, cs[:len(cs)-1])
		u.mu.Unlock()
		if time.Since(c.used) < upIdleTimeout && c.open() {
			return c
		}
		c.close()
	}
}

// open tells whether the target still has the idle connection open: many
// servers close idle connections after a few seconds, and a request that
// cannot be replayed (a bodiless POST, DELETE) must not be lost on one.
// One non-blocking peek, only on reuse.
func (c *upConn) open() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read is an open, quiet connection; EOF, an error or
		// bytes nobody asked for mean it cannot carry a request.
		alive = n <= 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && alive
}

func (u *upstream) setIdle(addr string, cs []*upConn) {
	if len(cs) == 0 {
		delete(u.idle, addr)
		return
	}
	u.idle[addr] = cs
}

func (u *upstream) put(c *upConn) {
	c.used = time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	cs := u.idle[c.addr]
	if len(cs) >= upMaxIdlePerTarget {
		c.close()
		return
	}
	u.idle[c.addr] = append(cs, c)
}

// closeIdle closes connections idle for longer than upIdleTimeout, or all
// of them: a target that is gone keeps no sockets open here.
func (u *upstream) closeIdle(all bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for addr, cs := range u.idle {
		keep := cs[:0]
		for _, c := range cs {
			if all || time.Since(c.used) >= upIdleTimeout {
				c.close()
			} else {
				keep = append(keep, c)
			}
		}
		u.setIdle(addr, keep)
	}
	if all {
		u.fallbacks.Range(func(_, t any) bool {
			t.(*http.Transport).CloseIdleConnections()
			return true
		})
	}
}

// forget closes the idle connections to a target that was removed.
func (u *upstream) forget(addr string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.idle[addr] {
		c.close()
	}
	delete(u.idle, addr)
}
