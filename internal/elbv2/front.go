package elbv2

import (
	"context"
	"net"
	"net/http"
	"time"
)

// The client side of a listener. An ALB closes a client connection that
// stays idle for its idle_timeout.timeout_seconds, and stops keeping one
// alive once it is older than its client_keep_alive.seconds. Both can
// change while connections are open, which http.Server's own IdleTimeout,
// read without a lock by every connection, cannot follow; so the
// listener's server has none, and these hooks time each connection's
// idle spells against the load balancer's current attributes.

// frontConn is one client connection's state. The server calls a
// connection's hooks one at a time, so only the timer's callback runs
// beside them, and it only closes the connection.
type frontConn struct {
	born  time.Time
	timer *time.Timer
}

type frontKey struct{}

// newServer is the listener's HTTP server.
func (l *liveListener) newServer() *http.Server {
	return &http.Server{
		Handler:           l,
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			fc := &frontConn{born: time.Now()}
			l.front.Store(c, fc)
			return context.WithValue(ctx, frontKey{}, fc)
		},
		ConnState: l.connState,
	}
}

func (l *liveListener) connState(c net.Conn, st http.ConnState) {
	v, ok := l.front.Load(c)
	if !ok {
		return
	}
	fc := v.(*frontConn)
	switch st {
	case http.StateIdle:
		idle := l.options().idle
		if fc.timer == nil {
			fc.timer = time.AfterFunc(idle, func() { c.Close() })
		} else {
			fc.timer.Reset(idle)
		}
	case http.StateActive:
		if fc.timer != nil {
			fc.timer.Stop()
		}
	case http.StateHijacked, http.StateClosed:
		// A hijacked connection (a WebSocket) is the proxy's to time from
		// here on.
		if fc.timer != nil {
			fc.timer.Stop()
		}
		l.front.Delete(c)
	}
}

// options are the listener's load balancer's attributes, or the defaults.
func (l *liveListener) options() *lbOptions {
	if o := l.opts.Load(); o != nil {
		return o
	}
	return &defaultOptions
}

var defaultOptions = lbOptions{idle: defaultIdleTimeout, keepAlive: defaultClientKeepAlive}

// keepAliveOver tells whether the request came on a connection older than
// its load balancer's client keep-alive duration: its answer closes it.
func keepAliveOver(r *http.Request, o *lbOptions) bool {
	fc, _ := r.Context().Value(frontKey{}).(*frontConn)
	return fc != nil && time.Since(fc.born) >= o.keepAlive
}
