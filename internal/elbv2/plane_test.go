package elbv2

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/state"
)

// A target registered again while it drains (another task was given the
// departed one's address) starts over from "initial": the health the old
// task earned must not send traffic to a task that may not be listening.
func TestReregisteredDrainingTargetIsCheckedAgain(t *testing.T) {
	st, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	ta := srv.Listener.Addr().(*net.TCPAddr)
	ip, port := ta.IP.String(), int32(ta.Port)
	g := &tgRecord{ARN: "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/re/1", TargetType: "ip",
		HealthCheck: healthCheck{Enabled: true, Protocol: "HTTP", Port: "traffic-port", Path: "/", Interval: 1, Timeout: 1, Healthy: 2, Unhealthy: 2, Matcher: "200"},
		Targets:     []targetRecord{{ID: ip, Port: port, Owner: "svc"}}}
	p := &plane{s: &Service{Store: st}, lis: map[string]*liveListener{}, pools: map[string]*pool{}, owned: map[string]map[string]bool{}, up: newUpstream()}
	defer func() {
		for _, pl := range p.pools {
			pl.close()
		}
	}()
	s := p.s
	s.plane = p
	sync := func() {
		t.Helper()
		if err := st.Update(context.Background(), func(tx state.Tx) error { return tx.Put(kindTG, g.ARN, g) }); err != nil {
			t.Fatal(err)
		}
		if err := p.reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for s.TargetHealth(g.ARN, ip, port).State != want {
			if time.Now().After(deadline) {
				t.Fatalf("target %v, want %s", s.TargetHealth(g.ARN, ip, port), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sync()
	waitState("healthy")
	until := time.Now().Add(time.Hour)
	g.Targets[0].DrainUntil = &until
	sync()
	if h := s.TargetHealth(g.ARN, ip, port); h.State != "draining" {
		t.Fatalf("deregistered target: %v", h)
	}
	g.Targets[0].DrainUntil = nil
	sync()
	if h := s.TargetHealth(g.ARN, ip, port); h.State != "initial" || h.Reason != "Elb.InitialHealthChecking" {
		t.Fatalf("target registered again while draining: %v, want initial", h)
	}
	if tg := p.pools[g.ARN].pick(nil); tg != nil {
		t.Fatalf("picked %s before its health checks passed", tg.addr)
	}
	waitState("healthy")
}
