package elbv2

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// proxyFixture is a listener (the real handler and proxy) in front of
// real HTTP servers as targets, without the store: what the data path
// does with a request once reconcile has built the route table.
type proxyFixture struct {
	p       *plane
	pl      *pool
	l       *liveListener
	lis     *httptest.Server
	targets []*target
	mu      sync.Mutex
	seen    []http.Header // request headers each target got, by target index
	hits    []int
}

func newProxyFixture(t *testing.T, n int, keepAlive bool) *proxyFixture {
	f := &proxyFixture{p: &plane{s: &Service{}, up: newUpstream()}, seen: make([]http.Header, n), hits: make([]int, n)}
	f.p.proxy = f.p.newProxy()
	t.Cleanup(func() { f.p.up.closeIdle(true) })
	f.pl = &pool{arn: "tg", targets: map[string]*target{}}
	for i := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			f.seen[i] = r.Header.Clone()
			f.hits[i]++
			f.mu.Unlock()
			if !keepAlive {
				w.Header().Set("Connection", "close")
			}
			fmt.Fprintf(w, "target %d host %s", i, r.Host)
		}))
		t.Cleanup(srv.Close)
		addr := srv.Listener.Addr().String()
		host, port, _ := net.SplitHostPort(addr)
		var p int32
		fmt.Sscan(port, &p)
		tg := &target{addr: addr, id: host, port: p, stop: make(chan struct{}), state: "healthy"}
		f.pl.targets[addr] = tg
		f.pl.list = append(f.pl.list, tg)
		f.targets = append(f.targets, tg)
	}
	f.l = &liveListener{arn: "listener", port: "8080", p: f.p}
	f.l.routes.Store(&routeTable{def: liveAction{groups: []*pool{f.pl}, weights: []int{1}}})
	f.lis = httptest.NewUnstartedServer(nil)
	f.lis.Config = f.l.newServer()
	f.lis.Start()
	t.Cleanup(f.lis.Close)
	return f
}

func (f *proxyFixture) get(t *testing.T, path string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.lis.URL+path, nil)
	req.Host = "app.example.com"
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.lis.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyRoundRobinAndHeaders(t *testing.T) {
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			f := newProxyFixture(t, 3, keepAlive)
			for range 30 {
				code, body := f.get(t, "/x", "X-Forwarded-For", "203.0.113.7")
				if code != 200 || !strings.HasSuffix(body, "host app.example.com") {
					t.Fatalf("got %d %q", code, body)
				}
			}
			for i, n := range f.hits {
				if n != 10 {
					t.Fatalf("round robin over 3 targets, 30 requests: target %d got %d (%v)", i, n, f.hits)
				}
			}
			if got := f.pl.requests.Load(); got != 30 {
				t.Fatalf("request count %d, want 30", got)
			}
			h := f.seen[0]
			if got := h.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
				t.Errorf("X-Forwarded-For %q: the client's address must be appended", got)
			}
			if h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Port") != "8080" {
				t.Errorf("X-Forwarded-Proto %q, X-Forwarded-Port %q", h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Port"))
			}
			if h.Get("Accept-Encoding") != f.seen[1].Get("Accept-Encoding") || h.Get("User-Agent") != "Go-http-client/1.1" {
				t.Errorf("client headers not passed through: %v", h)
			}
		})
	}
}

func TestProxyOnlyServingTargets(t *testing.T) {
	f := newProxyFixture(t, 3, false)
	f.targets[0].mu.Lock()
	f.targets[0].state = "unhealthy"
	f.targets[0].mu.Unlock()
	f.targets[1].draining.Store(true)
	for range 6 {
		if code, body := f.get(t, "/"); code != 200 || !strings.HasPrefix(body, "target 2 ") {
			t.Fatalf("got %d %q, want target 2 only", code, body)
		}
	}
	f.targets[2].mu.Lock()
	f.targets[2].state = "unhealthy"
	f.targets[2].mu.Unlock()
	if code, _ := f.get(t, "/"); code != http.StatusServiceUnavailable {
		t.Fatalf("no serving target: %d, want 503", code)
	}
}

// A target that went away between health checks: the request goes to
// another one instead of failing.
func TestProxyRetriesDeadTarget(t *testing.T) {
	f := newProxyFixture(t, 2, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	f.targets[0].addr = dead
	for range 4 {
		if code, body := f.get(t, "/"); code != 200 || !strings.HasPrefix(body, "target 1 ") {
			t.Fatalf("got %d %q", code, body)
		}
	}
}

// silentTarget accepts connections and reads requests but never answers,
// as a task whose network stack vanished with a request in flight looks
// from the proxy. It counts the requests it got.
func silentTarget(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					n.Add(1)
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// blackholeTarget is an address whose connects never complete: a
// listener whose accept queue is full drops further SYNs, as a departed
// task's address answers nothing.
func blackholeTarget(t *testing.T) string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue; nobody accepts.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel completes connects past a full accept queue")
	}
	return addr
}

func shortIdleTimeout(t *testing.T, d time.Duration) {
	old := targetIdleTimeout
	targetIdleTimeout = d
	t.Cleanup(func() { targetIdleTimeout = old })
}

// A target that takes a request and never answers gets ALB's answer, 504,
// once the idle timeout is over, and the request is not sent to another
// target: it may still be running where it is.
func TestProxyTargetTimeoutIs504(t *testing.T) {
	shortIdleTimeout(t, 300*time.Millisecond)
	for _, method := range []string{"GET", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			f := newProxyFixture(t, 2, false)
			f.p.up = newUpstream()
			f.p.proxy = f.p.newProxy()
			addr, got := silentTarget(t)
			f.targets[0].addr = addr
			f.pl.rr.Store(uint64(len(f.targets) - 1)) // the next pick is target 0
			req, _ := http.NewRequest(method, f.lis.URL+"/", nil)
			start := time.Now()
			resp, err := f.lis.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Server") != "awselb/2.0" {
				t.Fatalf("silent target: %d %v, want 504 from the load balancer", resp.StatusCode, resp.Header)
			}
			if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
				t.Fatalf("504 after %v, want the idle timeout (300ms)", d)
			}
			f.mu.Lock()
			other := f.hits[1]
			f.mu.Unlock()
			if got.Load() != 1 || other != 0 {
				t.Fatalf("silent target got %d requests, the other %d: want 1 and 0", got.Load(), other)
			}
		})
	}
}

// The idle timeout runs between reads of a body: a stream that keeps
// sending more often than that passes whole even when it lasts longer
// than the timeout, and one that stalls is cut.
func TestProxyBodyIdleTimeout(t *testing.T) {
	shortIdleTimeout(t, 400*time.Millisecond)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gap, _ := time.ParseDuration(r.URL.Query().Get("gap"))
		for i := range 5 {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer srv.Close()
	f := newProxyFixture(t, 1, true)
	f.targets[0].addr = srv.Listener.Addr().String()
	if code, body := f.get(t, "/?gap=150ms"); code != 200 || strings.Count(body, "chunk") != 5 {
		t.Fatalf("slow stream (750ms in 150ms gaps): %d %q", code, body)
	}
	resp, err := f.lis.Client().Get(f.lis.URL + "/?gap=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	b, err := io.ReadAll(resp.Body)
	if err == nil || strings.Count(string(b), "chunk") >= 5 || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled stream (1s gaps, 400ms idle timeout): %q %v after %v, want it cut", b, err, time.Since(start))
	}
}

// A connect that never completes costs one dial timeout; the request then
// goes to another target, whatever its method, since nothing was sent. With
// no other target the answer is ALB's for a connect timeout, 504.
func TestProxyConnectTimeout(t *testing.T) {
	hole := blackholeTarget(t)
	f := newProxyFixture(t, 2, false)
	f.targets[0].addr = hole
	for _, method := range []string{"GET", "DELETE"} {
		f.pl.rr.Store(uint64(len(f.targets) - 1))
		f.targets[0].mu.Lock()
		f.targets[0].dialFailed = false
		f.targets[0].mu.Unlock()
		req, _ := http.NewRequest(method, f.lis.URL+"/", nil)
		start := time.Now()
		resp, err := f.lis.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "target 1 ") {
			t.Fatalf("%s past a target whose connect hangs: %d %q", method, resp.StatusCode, b)
		}
		if d := time.Since(start); d > upDialTimeout+2*time.Second {
			t.Fatalf("%s took %v", method, d)
		}
	}
	// The target stays out of rotation until a health check passes.
	if code, body := f.get(t, "/"); code != 200 || !strings.HasPrefix(body, "target 1 ") {
		t.Fatalf("after the failed connect: %d %q", code, body)
	}
	f.targets[1].mu.Lock()
	f.targets[1].state = "unhealthy"
	f.targets[1].mu.Unlock()
	f.targets[0].mu.Lock()
	f.targets[0].dialFailed = false
	f.targets[0].mu.Unlock()
	if code, _ := f.get(t, "/"); code != http.StatusGatewayTimeout {
		t.Fatalf("only a target whose connect hangs: %d, want 504", code)
	}
}
