package elbv2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countConns starts a real HTTP server and counts the connections it
// accepts.
func countConns(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

func roundTrip(t *testing.T, u *upstream, method, target string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestUpstreamReusesKeepAliveConnections(t *testing.T) {
	srv, conns := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.RequestURI())
	})
	u := newUpstream()
	defer u.closeIdle(true)
	for i := range 5 {
		code, body, _ := roundTrip(t, u, "GET", srv.URL+"/a?b=c", nil)
		if code != 200 || body != "GET /a?b=c" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 sequential requests to a keep-alive target used %d connections, want 1", n)
	}
}

func TestUpstreamClosesWhenTargetCloses(t *testing.T) {
	srv, conns := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	u := newUpstream()
	defer u.closeIdle(true)
	for range 3 {
		if code, body, _ := roundTrip(t, u, "GET", srv.URL, nil); code != 200 || body != "bye" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("target closing each connection: %d connections for 3 requests", n)
	}
	u.mu.Lock()
	idle := len(u.idle)
	u.mu.Unlock()
	if idle != 0 {
		t.Fatalf("%d closed connections kept as idle", idle)
	}
}

// A keep-alive target that drops idle connections (its own idle timeout)
// must not fail the next request.
func TestUpstreamRetriesStaleIdleConnection(t *testing.T) {
	var srv *httptest.Server
	srv, conns := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	u := newUpstream()
	defer u.closeIdle(true)
	roundTrip(t, u, "GET", srv.URL, nil)
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if code, body, _ := roundTrip(t, u, "GET", srv.URL, nil); code != 200 || body != "ok" {
		t.Fatalf("after the target dropped the idle connection: %d %q", code, body)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	// A request that cannot be sent twice must not go out on a connection
	// the target already closed either.
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if code, body, _ := roundTrip(t, u, "DELETE", srv.URL, nil); code != 200 || body != "ok" {
		t.Fatalf("DELETE after the target dropped the idle connection: %d %q", code, body)
	}
}

func TestUpstreamBodiesHeadAndInformational(t *testing.T) {
	srv, _ := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Len", r.Header.Get("Content-Length"))
			w.Write(b)
		case "/early":
			w.Header().Add("Link", "</s.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "final")
		case "/chunked":
			for i := range 3 {
				io.WriteString(w, strings.Repeat("x", 10000*(i+1)))
				w.(http.Flusher).Flush()
			}
		default:
			w.Header().Set("Content-Length", "5")
			if r.Method != http.MethodHead {
				io.WriteString(w, "hello")
			}
		}
	})
	u := newUpstream()
	defer u.closeIdle(true)
	if code, body, h := roundTrip(t, u, "POST", srv.URL+"/echo", strings.NewReader("payload")); code != 200 || body != "payload" || h.Get("X-Len") != "7" {
		t.Fatalf("POST with a body: %d %q %v", code, body, h)
	}
	if code, body, _ := roundTrip(t, u, "HEAD", srv.URL+"/", nil); code != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", code, body)
	}
	if code, body, _ := roundTrip(t, u, "GET", srv.URL+"/early", nil); code != 200 || body != "final" {
		t.Fatalf("103 then 200: %d %q", code, body)
	}
	if code, body, _ := roundTrip(t, u, "GET", srv.URL+"/chunked", nil); code != 200 || len(body) != 60000 {
		t.Fatalf("chunked: %d, %d bytes", code, len(body))
	}
	// The connection is still good after all of that.
	if code, body, _ := roundTrip(t, u, "GET", srv.URL+"/", nil); code != 200 || body != "hello" {
		t.Fatalf("GET: %d %q", code, body)
	}
}

// A client that gives up must not leave the proxy waiting on a target
// that never answers.
func TestUpstreamCancel(t *testing.T) {
	release := make(chan struct{})
	srv, _ := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	u := newUpstream()
	defer u.closeIdle(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	start := time.Now()
	_, err := u.RoundTrip(req)
	if err == nil {
		t.Fatal("no error from a cancelled request")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancelled request returned after %v", d)
	}
	u.mu.Lock()
	idle := len(u.idle)
	u.mu.Unlock()
	if idle != 0 {
		t.Fatal("a cancelled request's connection was kept for reuse")
	}
}

func TestUpstreamDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u := newUpstream()
	req, _ := http.NewRequest("GET", (&url.URL{Scheme: "http", Host: addr, Path: "/"}).String(), nil)
	_, err = u.RoundTrip(req)
	var op *net.OpError
	if err == nil || !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("dial to a closed port: %v (the retry transport needs a dial OpError)", err)
	}
}

// A client that stops reading a response that never ends (a stream) must
// not leave the proxy draining it.
func TestUpstreamCloseUnfinishedStream(t *testing.T) {
	stop := make(chan struct{})
	srv, _ := countConns(t, func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(w, strings.Repeat("data\n", 1000)); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	// Ends the stream if the test fails, so the server can shut down.
	t.Cleanup(func() { close(stop) })
	u := newUpstream()
	defer u.closeIdle(true)
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10000)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("closing an unfinished streamed body did not return")
	}
	u.mu.Lock()
	idle := len(u.idle)
	u.mu.Unlock()
	if idle != 0 {
		t.Fatal("a connection with an unread body was kept for reuse")
	}
}

// A target that answers in full and closes, as busybox httpd does
// (shutdown after the response), gets a reset once the response is read:
// neither side keeps a TIME_WAIT socket per request.
func TestUpstreamResetsOneShotConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type seen struct {
		peer string
		err  error
	}
	got := make(chan seen, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- seen{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		req := ""
		for !strings.Contains(req, "\r\n\r\n") {
			n, err := c.Read(buf)
			if err != nil {
				got <- seen{err: err}
				return
			}
			req += string(buf[:n])
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye")
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(buf)
		got <- seen{peer: c.RemoteAddr().String(), err: err}
	}()
	u := newUpstream()
	defer u.closeIdle(true)
	if code, body, _ := roundTrip(t, u, "GET", "http://"+ln.Addr().String()+"/", nil); code != 200 || body != "bye" {
		t.Fatalf("got %d %q", code, body)
	}
	s := <-got
	if !errors.Is(s.err, syscall.ECONNRESET) {
		t.Fatalf("target reading after its response: %v, want a reset", s.err)
	}
	// /proc/net/tcp: local and remote address:port in hex, then the state
	// (06 is TIME_WAIT).
	hexAddr := func(hostport string) string {
		_, port, _ := net.SplitHostPort(hostport)
		p, _ := strconv.Atoi(port)
		return fmt.Sprintf("0100007F:%04X", p) // 127.0.0.1, little-endian
	}
	proxy, target := hexAddr(s.peer), hexAddr(ln.Addr().String())
	tcp, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(tcp), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "06" && (f[1] == proxy && f[2] == target || f[1] == target && f[2] == proxy) {
			t.Errorf("TIME_WAIT socket left for the proxy's connection: %s", line)
		}
	}
}

// A request larger than the socket buffers, to a target that does not
// read for a while: the raw write of the body-less path waits for room
// and finishes it.
func TestUpstreamLargeRequest(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		time.Sleep(200 * time.Millisecond) // the proxy's socket fills up meanwhile
		r, err := http.ReadRequest(bufio.NewReaderSize(c, 64<<10))
		n := -1
		if err == nil {
			n = len(r.Header.Get("X-Big"))
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d", len(strconv.Itoa(n)), n)
	}()
	u := newUpstream()
	defer u.closeIdle(true)
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	req.Header.Set("X-Big", big)
	resp, err := u.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != strconv.Itoa(len(big)) {
		t.Fatalf("target saw a header of %s bytes, want %d", b, len(big))
	}
}
