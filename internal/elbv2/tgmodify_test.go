package elbv2

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

const testPrefix = "arn:aws:elasticloadbalancing:us-east-1:123456789012:"

func testRequest(kv ...string) *request {
	r := &request{ctx: context.Background(), form: map[string][]string{}, account: "123456789012", region: "us-east-1"}
	for i := 0; i+1 < len(kv); i += 2 {
		r.form[kv[i]] = []string{kv[i+1]}
	}
	return r
}

// ModifyTargetGroup changes the stored health check and the running
// checker: a group checked every 300 seconds on /good is changed to /bad
// every 5 seconds, and its target is checked on /bad at once, then again
// at the new interval, and turns unhealthy, all long before the old
// interval would have let a second check happen.
func TestModifyTargetGroupReachesTheChecker(t *testing.T) {
	st, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		if r.URL.Path != "/good" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	count := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return hits[path]
	}
	ta := srv.Listener.Addr().(*net.TCPAddr)
	ip, port := ta.IP.String(), int32(ta.Port)
	g := &tgRecord{ARN: testPrefix + "targetgroup/hc/1", Name: "hc", Protocol: "HTTP", Port: port, TargetType: "ip",
		HealthCheck: healthCheck{Enabled: true, Protocol: "HTTP", Port: "traffic-port", Path: "/good", Interval: 300, Timeout: 2, Healthy: 2, Unhealthy: 2, Matcher: "200"},
		Targets:     []targetRecord{{ID: ip, Port: port}}}
	if err := st.Update(context.Background(), func(tx state.Tx) error { return tx.Put(kindTG, g.ARN, g) }); err != nil {
		t.Fatal(err)
	}
	s := &Service{Store: st}
	s.Start(context.Background())
	defer s.Stop()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: hits %v, health %v", what, hits, s.plane.health(g.ARN, ip, port))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("first check on /good", func() bool { return count("/good") == 1 })

	out, err := s.modifyTargetGroup(testRequest("TargetGroupArn", g.ARN, "HealthCheckPath", "/bad",
		"HealthCheckIntervalSeconds", "5", "Matcher.HttpCode", "200-299"))
	if err != nil {
		t.Fatal(err)
	}
	x := out.(struct {
		TargetGroups []tgXML `xml:"TargetGroups>member"`
	}).TargetGroups[0]
	if x.HealthCheckPath != "/bad" || x.HealthCheckIntervalSeconds != 5 || x.HealthCheckTimeoutSeconds != 2 ||
		x.Matcher.HttpCode != "200-299" || x.HealthyThresholdCount != 2 || !x.HealthCheckEnabled || x.TargetGroupArn != g.ARN {
		t.Fatalf("modify-target-group answered %+v", x)
	}
	wait("check on the new path at once", func() bool { return count("/bad") >= 1 })
	wait("unhealthy after two checks at the new interval", func() bool { return s.plane.health(g.ARN, ip, port).state == "unhealthy" })
	if h := s.plane.health(g.ARN, ip, port); h.reason != "Target.ResponseCodeMismatch" || !strings.Contains(h.desc, "404") {
		t.Errorf("unhealthy target: %+v", h)
	}
	if n := count("/good"); n != 1 {
		t.Errorf("%d checks on the old path, want 1", n)
	}

	// Back to /good: healthy again after the healthy threshold.
	if _, err := s.modifyTargetGroup(testRequest("TargetGroupArn", g.ARN, "HealthCheckPath", "/good", "HealthCheckIntervalSeconds", "5")); err != nil {
		t.Fatal(err)
	}
	wait("healthy again on /good", func() bool { return s.plane.health(g.ARN, ip, port).state == "healthy" })

	// Health checks off: the target serves without being checked.
	if _, err := s.modifyTargetGroup(testRequest("TargetGroupArn", g.ARN, "HealthCheckPath", "/bad", "HealthCheckEnabled", "false")); err != nil {
		t.Fatal(err)
	}
	before := count("/bad")
	time.Sleep(300 * time.Millisecond)
	if h := s.plane.health(g.ARN, ip, port); h.state != "healthy" || count("/bad") != before {
		t.Errorf("checks off: %+v, /bad checked %d more times", h, count("/bad")-before)
	}

	_, err = s.modifyTargetGroup(testRequest("TargetGroupArn", g.ARN+"0", "HealthCheckPath", "/x"))
	if e := awsapi.AsError(err); e == nil || e.Code != "TargetGroupNotFound" {
		t.Errorf("unknown group: %v", err)
	}
	_, err = s.modifyTargetGroup(testRequest("HealthCheckPath", "/x"))
	if e := awsapi.AsError(err); e == nil || e.Code != "ValidationError" || !strings.Contains(e.Message, "targetGroupArn") {
		t.Errorf("no ARN: %v", err)
	}
	// A refused change keeps the stored settings.
	_, err = s.modifyTargetGroup(testRequest("TargetGroupArn", g.ARN, "HealthCheckPath", "/other", "HealthCheckTimeoutSeconds", "30"))
	if e := awsapi.AsError(err); e == nil || e.Code != "ValidationError" || !strings.Contains(e.Message, "smaller than the interval") {
		t.Errorf("timeout over the stored interval: %v", err)
	}
	var stored tgRecord
	st.View(context.Background(), func(tx state.Tx) error { _, err := tx.Get(kindTG, g.ARN, &stored); return err })
	if stored.HealthCheck.Path != "/bad" || stored.HealthCheck.Timeout != 2 || stored.HealthCheck.Enabled {
		t.Errorf("refused change stored: %+v", stored.HealthCheck)
	}
}

func TestHealthCheckInput(t *testing.T) {
	base := healthCheck{Enabled: true, Protocol: "HTTP", Port: "traffic-port", Path: "/", Interval: 30, Timeout: 5, Healthy: 5, Unhealthy: 2, Matcher: "200"}
	bad := []struct{ k, v, says string }{
		{"HealthCheckIntervalSeconds", "4", "between 5 and 300"},
		{"HealthCheckIntervalSeconds", "301", "between 5 and 300"},
		{"HealthCheckIntervalSeconds", "x", "healthCheckIntervalSeconds"},
		{"HealthCheckTimeoutSeconds", "1", "between 2 and 120"},
		{"HealthCheckTimeoutSeconds", "121", "between 2 and 120"},
		{"HealthCheckTimeoutSeconds", "30", "smaller than the interval"},
		{"HealthyThresholdCount", "1", "between 2 and 10"},
		{"UnhealthyThresholdCount", "11", "between 2 and 10"},
		{"Matcher.HttpCode", "199", "200-499"},
		{"Matcher.HttpCode", "500", "200-499"},
		{"Matcher.HttpCode", "200-", "200-499"},
		{"Matcher.HttpCode", "299-200", "200-499"},
		{"Matcher.HttpCode", "200,,202", "200-499"},
		{"Matcher.HttpCode", "", "200-499"},
		{"Matcher.GrpcCode", "12", "gRPC"},
		{"HealthCheckPath", "health", "must begin with '/'"},
		{"HealthCheckPath", "/a b", "must begin with '/'"},
		{"HealthCheckPath", "/a#b", "must begin with '/'"},
		{"HealthCheckPath", "", "must begin with '/'"},
		{"HealthCheckPath", "/" + strings.Repeat("a", 1024), "1024"},
		{"HealthCheckPort", "0", "traffic-port"},
		{"HealthCheckPort", "080", "traffic-port"},
		{"HealthCheckProtocol", "TCP", "'TCP'"},
		{"HealthCheckEnabled", "yes", "healthCheckEnabled"},
	}
	for _, c := range bad {
		_, err := testRequest(c.k, c.v).healthCheckIn(base)
		if e := awsapi.AsError(err); err == nil || e.Code != "ValidationError" || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s=%q: %v, want ValidationError saying %q", c.k, c.v, err, c.says)
		}
	}
	h, err := testRequest("HealthCheckIntervalSeconds", "5", "HealthCheckTimeoutSeconds", "4", "HealthyThresholdCount", "10",
		"UnhealthyThresholdCount", "2", "Matcher.HttpCode", "200,202,300-399", "HealthCheckPath", "/health?deep=1",
		"HealthCheckPort", "8081", "HealthCheckEnabled", "true").healthCheckIn(base)
	want := healthCheck{Enabled: true, Protocol: "HTTP", Port: "8081", Path: "/health?deep=1", Interval: 5, Timeout: 4, Healthy: 10, Unhealthy: 2, Matcher: "200,202,300-399"}
	if err != nil || h != want {
		t.Errorf("good input: %+v %v, want %+v", h, err, want)
	}
	if h, err := testRequest().healthCheckIn(base); err != nil || h != base {
		t.Errorf("nothing given: %+v %v", h, err)
	}
}

// FuzzHealthCheckInput feeds the health check parser shared by
// CreateTargetGroup and ModifyTargetGroup arbitrary values: it answers a
// ValidationError or settings within the model's bounds that the checker
// can send, never a panic.
func FuzzHealthCheckInput(f *testing.F) {
	f.Add("/health", "30", "5", "200-299", "traffic-port")
	f.Add("/", "5", "4", "200,202", "8080")
	f.Add("/a b", "300", "120", "499", "65535")
	f.Add("//x", "4", "2", "200-", "0")
	f.Add("/?q=%zz", "10", "10", "2OO", "-1")
	f.Fuzz(func(t *testing.T, path, interval, timeout, matcher, port string) {
		r := testRequest("HealthCheckPath", path, "HealthCheckIntervalSeconds", interval, "HealthCheckTimeoutSeconds", timeout,
			"Matcher.HttpCode", matcher, "HealthCheckPort", port)
		h, err := r.healthCheckIn(healthCheck{Enabled: true, Protocol: "HTTP", Port: "traffic-port", Path: "/", Interval: 30, Timeout: 5, Healthy: 5, Unhealthy: 2, Matcher: "200"})
		if err != nil {
			if e := awsapi.AsError(err); e.Code != "ValidationError" {
				t.Fatalf("%v", err)
			}
			return
		}
		if h.Interval < 5 || h.Interval > 300 || h.Timeout < 2 || h.Timeout >= h.Interval {
			t.Fatalf("accepted %+v", h)
		}
		if _, err := parseMatcher(h.Matcher); err != nil {
			t.Fatalf("accepted matcher %q", h.Matcher)
		}
		if _, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:80"+h.Path, nil); err != nil {
			t.Fatalf("accepted path %q the checker cannot send: %v", h.Path, err)
		}
	})
}

func TestTargetGroupAttributeInput(t *testing.T) {
	bad := []struct{ k, v, says string }{
		{"deregistration_delay.timeout_seconds", "3601", "between 0 and 3600"},
		{"stickiness.enabled", "yes", "true or false"},
		{"stickiness.type", "source_ip", "lb_cookie, app_cookie"},
		{"stickiness.lb_cookie.duration_seconds", "0", "between 1 and 604800"},
		{"stickiness.app_cookie.cookie_name", "AWSALBAPP-1", "AWSALB"},
		{"stickiness.app_cookie.cookie_name", "a b", "cookie name"},
		{"slow_start.duration_seconds", "29", "between 30 and 900"},
		{"slow_start.duration_seconds", "901", "between 30 and 900"},
		{"load_balancing.algorithm.type", "random", "least_outstanding_requests"},
		{"load_balancing.algorithm.anomaly_mitigation", "true", "on, off"},
		{"load_balancing.cross_zone.enabled", "maybe", "use_load_balancer_configuration"},
		{"target_group_health.dns_failover.minimum_healthy_targets.percentage", "101", "off or an integer between 1 and 100"},
		{"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count", "off", "between 1 and 1000"},
		{"preserve_client_ip.enabled", "true", "Target group attribute key 'preserve_client_ip.enabled' is not recognized"},
		{"", "1", "key must be specified"},
	}
	for _, c := range bad {
		_, err := tgAttrs.in(attrsForm(c.k, c.v))
		if e := awsapi.AsError(err); err == nil || e.Code != "ValidationError" || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s=%s: %v, want ValidationError saying %q", c.k, c.v, err, c.says)
		}
	}
	if _, err := tgAttrs.in(attrsForm()); err == nil {
		t.Error("no attributes accepted")
	}
	// What Terraform's aws_lb_target_group sends on every apply.
	set, err := tgAttrs.in(attrsForm("deregistration_delay.timeout_seconds", "30", "stickiness.enabled", "false", "stickiness.type", "lb_cookie",
		"stickiness.lb_cookie.duration_seconds", "86400", "load_balancing.algorithm.type", "least_outstanding_requests",
		"slow_start.duration_seconds", "0", "load_balancing.cross_zone.enabled", "use_load_balancer_configuration",
		"stickiness.app_cookie.cookie_name", "SESSION"))
	if err != nil || len(set) != 8 {
		t.Fatalf("good attributes: %v %v", set, err)
	}
	g := &tgRecord{Attributes: set}
	if err := checkTGAttributes(g); err != nil {
		t.Errorf("good attributes together: %v", err)
	}
	g.Attributes["slow_start.duration_seconds"] = "60"
	if err := checkTGAttributes(g); err == nil || !strings.Contains(err.Error(), "round_robin") {
		t.Errorf("slow start with least_outstanding_requests: %v", err)
	}
	g.Attributes["slow_start.duration_seconds"] = "0"
	g.Attributes["load_balancing.algorithm.anomaly_mitigation"] = "on"
	if err := checkTGAttributes(g); err == nil || !strings.Contains(err.Error(), "weighted_random") {
		t.Errorf("anomaly mitigation with least_outstanding_requests: %v", err)
	}
	out := attrsListed(tgAttrs, nil)
	if len(out) != 14 || out[0] != (attrXML{"stickiness.enabled", "false"}) ||
		out[1] != (attrXML{"deregistration_delay.timeout_seconds", "300"}) {
		t.Errorf("defaults: %+v", out)
	}
}

// FuzzTargetGroupAttributes: ModifyTargetGroupAttributes' parser answers
// a ValidationError or a set of known keys with values their checks
// accept.
func FuzzTargetGroupAttributes(f *testing.F) {
	f.Add("deregistration_delay.timeout_seconds", "0")
	f.Add("slow_start.duration_seconds", "30")
	f.Add("stickiness.app_cookie.cookie_name", "awsalbtg")
	f.Add("target_group_health.dns_failover.minimum_healthy_targets.count", "off")
	f.Add("load_balancing.algorithm.type", "")
	f.Fuzz(func(t *testing.T, k, v string) {
		fuzzAttrsIn(t, tgAttrs, k, v)
	})
}

// With load_balancing.algorithm.type least_outstanding_requests a busy
// target gets no new request while an idle one is serving.
func TestLeastOutstandingRequests(t *testing.T) {
	f := newProxyFixture(t, 2, true)
	f.targets[0].inflight.Add(5)
	for range 4 {
		if code, body := f.get(t, "/"); code != 200 || !strings.HasPrefix(body, "target 0") && !strings.HasPrefix(body, "target 1") {
			t.Fatalf("%d %s", code, body)
		}
	}
	f.mu.Lock()
	rr := f.hits[0]
	f.mu.Unlock()
	if rr != 2 {
		t.Fatalf("round robin sent %d of 4 to the first target, want 2", rr)
	}
	f.pl.leastOutstanding.Store(true)
	for range 4 {
		f.get(t, "/")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hits[0] != rr || f.hits[1] != 6 {
		t.Fatalf("least outstanding requests: hits %v, want the busy target to get none", f.hits)
	}
	if n := f.targets[1].inflight.Load(); n != 0 {
		t.Errorf("%d requests still counted in flight", n)
	}
}
