package elbv2

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// frontGet sends a GET on a client connection kept by the caller and reads
// the whole answer.
func frontGet(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp
}

// closedAfter waits for the listener to close the connection and says how
// long that took.
func closedAfter(t *testing.T, c net.Conn, br *bufio.Reader) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle client connection: %v, want it closed by the listener", err)
	}
	return time.Since(start)
}

// A client connection is closed after the load balancer's idle timeout
// without a request, and one older than its client keep-alive duration
// gets its next answer with Connection: close. Both follow attribute
// changes on connections already open.
func TestListenerClientTimeouts(t *testing.T) {
	f := newProxyFixture(t, 1, true)
	f.l.opts.Store(&lbOptions{idle: 800 * time.Millisecond, keepAlive: time.Hour})
	c, err := net.Dial("tcp", f.lis.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	frontGet(t, c, br)
	// Longer, set while the connection is open: the next idle spell has it.
	f.l.opts.Store(&lbOptions{idle: 1500 * time.Millisecond, keepAlive: time.Hour})
	time.Sleep(100 * time.Millisecond)
	if resp := frontGet(t, c, br); resp.Close {
		t.Fatal("answer within the keep-alive duration closes the connection")
	}
	if d := closedAfter(t, c, br); d < time.Second {
		t.Fatalf("closed after %v idle, want the idle timeout in force (1.5s)", d)
	}

	f.l.opts.Store(&lbOptions{idle: time.Minute, keepAlive: 400 * time.Millisecond})
	c2, err := net.Dial("tcp", f.lis.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	br2 := bufio.NewReader(c2)
	if resp := frontGet(t, c2, br2); resp.Close {
		t.Fatal("first answer closes the connection")
	}
	time.Sleep(500 * time.Millisecond)
	if resp := frontGet(t, c2, br2); !resp.Close {
		t.Fatal("answer past the client keep-alive duration keeps the connection")
	}
	if d := closedAfter(t, c2, br2); d > time.Second {
		t.Fatalf("connection past its keep-alive closed after %v", d)
	}
}
