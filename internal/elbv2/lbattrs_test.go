package elbv2

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// A load balancer's idle_timeout.timeout_seconds is the proxy's: stored
// on the load balancer, picked up by reconcile and applied to requests
// with and without a body, and changed without restarting the listener.
func TestLoadBalancerIdleTimeout(t *testing.T) {
	st, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	silent, got := silentTarget(t)
	host, port, _ := net.SplitHostPort(silent)
	var tport int32
	fmt.Sscan(port, &tport)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lport := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	const prefix = "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
	lb := &lbRecord{ARN: prefix + "loadbalancer/app/idle/1", Name: "idle", Type: "application", Address: "127.0.0.1",
		Attributes: map[string]string{attrIdleTimeout: "1"}}
	g := &tgRecord{ARN: prefix + "targetgroup/idle/1", TargetType: "ip", Port: tport,
		HealthCheck: healthCheck{Enabled: false, Port: "traffic-port", Interval: 30, Timeout: 5, Healthy: 2, Unhealthy: 2, Matcher: "200"},
		Targets:     []targetRecord{{ID: host, Port: tport}}}
	l := &listenerRecord{ARN: listenerPrefix(lb.ARN) + "1", LBARN: lb.ARN, Port: int32(lport), Protocol: "HTTP",
		Actions: []actionRecord{{Type: "forward", TargetGroupARN: g.ARN}}}
	put := func() {
		t.Helper()
		err := st.Update(context.Background(), func(tx state.Tx) error {
			if err := tx.Put(kindLB, lb.ARN, lb); err != nil {
				return err
			}
			if err := tx.Put(kindTG, g.ARN, g); err != nil {
				return err
			}
			return tx.Put(kindListener, l.ARN, l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put()
	s := &Service{Store: st}
	s.Start(context.Background())
	defer s.Stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/", lport)
	// The target's health check is off, so it serves at once.
	deadline := time.Now().Add(5 * time.Second)
	for s.plane.health(g.ARN, host, tport).state != "healthy" {
		if time.Now().After(deadline) {
			t.Fatal("target never became healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	try := func(method string, timeout time.Duration) {
		t.Helper()
		var body *strings.Reader
		if method == "POST" {
			body = strings.NewReader("payload")
		}
		var req *http.Request
		if body != nil {
			req, _ = http.NewRequest(method, url, body)
		} else {
			req, _ = http.NewRequest(method, url, nil)
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("Server") != "awselb/2.0" {
			t.Fatalf("%s to a silent target: %d, want 504 from the load balancer", method, resp.StatusCode)
		}
		if d < timeout || d > timeout+2*time.Second {
			t.Fatalf("%s: 504 after %v, want the load balancer's idle timeout %v", method, d, timeout)
		}
	}
	before := got.Load()
	try("GET", time.Second)
	try("POST", time.Second)
	if n := got.Load() - before; n != 2 {
		t.Fatalf("silent target got %d requests, want 2", n)
	}
	lb.Attributes[attrIdleTimeout] = "2"
	put()
	s.changed()
	try("GET", 2*time.Second)
	try("POST", 2*time.Second)
}

func TestLoadBalancerAttributeInput(t *testing.T) {
	bad := []struct{ k, v, code, says string }{
		{"idle_timeout.timeout_seconds", "0", "ValidationError", "idle_timeout.timeout_seconds"},
		{"idle_timeout.timeout_seconds", "4001", "ValidationError", "between 1 and 4000"},
		{"idle_timeout.timeout_seconds", "ten", "ValidationError", "'ten'"},
		{"deletion_protection.enabled", "yes", "ValidationError", "true or false"},
		{"routing.http.desync_mitigation_mode", "lax", "ValidationError", "monitor, defensive, strictest"},
		{"load_balancing.cross_zone.enabled", "false", "ValidationError", "load_balancing.cross_zone.enabled"},
		{"client_keep_alive.seconds", "59", "ValidationError", "between 60 and 604800"},
		{"no.such.key", "1", "ValidationError", "Load balancer attribute key 'no.such.key' is not recognized"},
		{"", "1", "ValidationError", "key must be specified"},
	}
	for _, c := range bad {
		_, err := lbAttrs.in(attrsForm(c.k, c.v))
		e := awsapi.AsError(err)
		if err == nil || e.Code != c.code || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s=%s: %v, want %s saying %q", c.k, c.v, err, c.code, c.says)
		}
	}
	if _, err := lbAttrs.in(attrsForm()); err == nil {
		t.Error("no attributes accepted")
	}
	var many []string
	for range 21 {
		many = append(many, "routing.http2.enabled", "true")
	}
	if _, err := lbAttrs.in(attrsForm(many...)); err == nil || !strings.Contains(err.Error(), "less than or equal to 20") {
		t.Errorf("21 attributes: %v", err)
	}
	set, err := lbAttrs.in(attrsForm("idle_timeout.timeout_seconds", "4000", "routing.http2.enabled", "false", "access_logs.s3.prefix", "x/y"))
	if err != nil || len(set) != 3 || set[attrIdleTimeout] != "4000" {
		t.Fatalf("good attributes: %v %v", set, err)
	}
	lb := &lbRecord{ARN: "arn:lb", Attributes: set}
	if lb.idleTimeout() != 4000*time.Second || (&lbRecord{}).idleTimeout() != 60*time.Second {
		t.Errorf("idle timeouts %v %v", lb.idleTimeout(), (&lbRecord{}).idleTimeout())
	}
	if err := deletionProtected(lb); err != nil {
		t.Errorf("unprotected: %v", err)
	}
	lb.Attributes[attrDeletionProtection] = "true"
	if e := awsapi.AsError(deletionProtected(lb)); e == nil || e.Code != "OperationNotPermitted" ||
		e.Message != "Load balancer 'arn:lb' cannot be deleted because deletion protection is enabled" {
		t.Errorf("protected: %v", e)
	}
}

// FuzzLoadBalancerAttributes feeds ModifyLoadBalancerAttributes' parser
// arbitrary keys and values: it answers with an error or a set that only
// holds known keys with values their checks accept, never a panic.
func FuzzLoadBalancerAttributes(f *testing.F) {
	f.Add("idle_timeout.timeout_seconds", "60")
	f.Add("idle_timeout.timeout_seconds", "-1")
	f.Add("deletion_protection.enabled", "TRUE")
	f.Add("routing.http.xff_header_processing.mode", "remove")
	f.Add("access_logs.s3.bucket", strings.Repeat("b", 1025))
	f.Add("x", "")
	f.Fuzz(func(t *testing.T, k, v string) {
		fuzzAttrsIn(t, lbAttrs, k, v)
	})
}

// FuzzTagInput feeds the tag parser shared by AddTags and the Create
// calls arbitrary keys and values: a tag it accepts fits the model's
// lengths and pattern and is not AWS's own; anything else is a
// ValidationError.
func FuzzTagInput(f *testing.F) {
	f.Add("env", "prod")
	f.Add("aws:cloudformation:stack-name", "x")
	f.Add("", "v")
	f.Add("k", strings.Repeat("v", 257))
	f.Add("ключ", "值 @/=+-_.:")
	f.Add("k\x00", "v")
	f.Fuzz(func(t *testing.T, k, v string) {
		r := &request{form: map[string][]string{"Tags.member.1.Key": {k}, "Tags.member.1.Value": {v}}}
		ts, err := r.tags()
		if err != nil {
			if e := awsapi.AsError(err); e.Code != "ValidationError" {
				t.Fatalf("%q=%q: %v", k, v, err)
			}
			return
		}
		if len(ts) != 1 || ts[0].Key != k || k == "" || len([]rune(k)) > 128 || len([]rune(v)) > 256 ||
			!tagRE.MatchString(k) || !tagRE.MatchString(v) || strings.HasPrefix(strings.ToLower(k), "aws:") {
			t.Fatalf("%q=%q accepted as %v", k, v, ts)
		}
	})
}

// routing.http.xff_header_processing.mode and xff_client_port.enabled
// decide what X-Forwarded-For the target gets.
func TestProxyXFFAttributes(t *testing.T) {
	f := newProxyFixture(t, 1, true)
	l := f.lis.Config.Handler.(*liveListener)
	cases := []struct {
		opts       *lbOptions
		in         string
		want, desc string
	}{
		{nil, "203.0.113.7", "203.0.113.7, 127.0.0.1", "default"},
		{&lbOptions{xffMode: "append"}, "", "127.0.0.1", "append, no header"},
		{&lbOptions{xffMode: "append", xffPort: true}, "203.0.113.7", "203.0.113.7, 127.0.0.1:", "append with client port"},
		{&lbOptions{xffMode: "preserve"}, "203.0.113.7", "203.0.113.7", "preserve"},
		{&lbOptions{xffMode: "preserve"}, "", "", "preserve, no header"},
		{&lbOptions{xffMode: "remove"}, "203.0.113.7", "", "remove"},
	}
	for _, c := range cases {
		l.opts.Store(c.opts)
		var hdr []string
		if c.in != "" {
			hdr = []string{"X-Forwarded-For", c.in}
		}
		if code, _ := f.get(t, "/", hdr...); code != 200 {
			t.Fatalf("%s: %d", c.desc, code)
		}
		f.mu.Lock()
		got, has := f.seen[0]["X-Forwarded-For"]
		f.mu.Unlock()
		v := strings.Join(got, ", ")
		switch {
		case c.want == "" && has:
			t.Errorf("%s: X-Forwarded-For %q, want none", c.desc, v)
		case strings.HasSuffix(c.want, ":") && !strings.HasPrefix(v, c.want):
			t.Errorf("%s: X-Forwarded-For %q, want %q and the port", c.desc, v, c.want)
		case c.want != "" && !strings.HasSuffix(c.want, ":") && v != c.want:
			t.Errorf("%s: X-Forwarded-For %q, want %q", c.desc, v, c.want)
		}
	}
}
