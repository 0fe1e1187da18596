package elbv2

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// proxyFixture is a listener (the real handler and proxy) in front of
// real HTTP servers as targets, without the store: what the data path
// does with a request once reconcile has built the route table.
type proxyFixture struct {
	p       *plane
	pl      *pool
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
	l := &liveListener{arn: "listener", port: "8080", p: f.p}
	l.routes.Store(&routeTable{def: liveAction{groups: []*pool{f.pl}, weights: []int{1}}})
	f.lis = httptest.NewServer(l)
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
