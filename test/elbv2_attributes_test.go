package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type cliAttrs struct{ Attributes []struct{ Key, Value string } }

func (a cliAttrs) m() map[string]string {
	m := map[string]string{}
	for _, kv := range a.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

type cliTags struct {
	TagDescriptions []struct {
		ResourceArn string
		Tags        []struct{ Key, Value string }
	}
}

// tagsOf answers describe-tags for arns as ARN -> "k=v,k=v" in stored order.
func tagsOf(t *testing.T, s *testenv.Server, arns ...string) map[string]string {
	t.Helper()
	var out cliTags
	s.MustAWS(&out, append([]string{"elbv2", "describe-tags", "--resource-arns"}, arns...)...)
	m := map[string]string{}
	for _, d := range out.TagDescriptions {
		var kv []string
		for _, tg := range d.Tags {
			kv = append(kv, tg.Key+"="+tg.Value)
		}
		m[d.ResourceArn] = strings.Join(kv, ",")
	}
	if len(out.TagDescriptions) != len(arns) {
		t.Fatalf("describe-tags for %d resources answered %d: %+v", len(arns), len(out.TagDescriptions), out)
	}
	return m
}

func expectAWSMessage(t *testing.T, s *testenv.Server, code, says string, args ...string) {
	t.Helper()
	got, msg := s.AWSError(args...)
	if got != code || !strings.Contains(msg, says) {
		t.Errorf("%v: %s %q, want %s saying %q", args[:2], got, msg, code, says)
	}
}

// TestLoadBalancerAttributesAndTags drives what Terraform's aws_lb and the
// CLI do with a load balancer's attributes and every resource's tags:
// AWS's full default attribute set, validated changes, deletion
// protection, tags given at creation and changed later, and AWS's errors.
func TestLoadBalancerAttributesAndTags(t *testing.T) {
	s := testenv.Start(t)
	alb := newALB(t, s, "attrs", "--tags", "Key=env,Value=test", "Key=team,Value=web")
	lb, vpc := alb.lbARN, alb.vpc

	// The defaults, as AWS lists them for an application load balancer.
	var attrs cliAttrs
	s.MustAWS(&attrs, "elbv2", "describe-load-balancer-attributes", "--load-balancer-arn", lb)
	want := map[string]string{
		"idle_timeout.timeout_seconds": "60", "deletion_protection.enabled": "false", "routing.http2.enabled": "true",
		"access_logs.s3.enabled": "false", "access_logs.s3.bucket": "", "access_logs.s3.prefix": "",
		"load_balancing.cross_zone.enabled": "true", "routing.http.desync_mitigation_mode": "defensive",
		"routing.http.drop_invalid_header_fields.enabled": "false", "routing.http.xff_header_processing.mode": "append",
		"routing.http.xff_client_port.enabled": "false", "routing.http.preserve_host_header.enabled": "false",
		"client_keep_alive.seconds": "3600", "waf.fail_open.enabled": "false", "zonal_shift.config.enabled": "false",
		"routing.http.x_amzn_tls_version_and_cipher_suite.enabled": "false", "connection_logs.s3.enabled": "false",
		"health_check_logs.s3.enabled": "false",
	}
	got := attrs.m()
	for k, v := range want {
		if gv, ok := got[k]; !ok || gv != v {
			t.Errorf("default %s = %q (present %v), want %q", k, gv, ok, v)
		}
	}
	if len(attrs.Attributes) != 22 {
		t.Errorf("%d default attributes, want AWS's 22: %+v", len(attrs.Attributes), attrs)
	}

	// Changes are checked, kept and answered with the whole set.
	s.MustAWS(&attrs, "elbv2", "modify-load-balancer-attributes", "--load-balancer-arn", lb, "--attributes",
		"Key=idle_timeout.timeout_seconds,Value=120", "Key=deletion_protection.enabled,Value=true",
		"Key=routing.http.xff_header_processing.mode,Value=preserve")
	if m := attrs.m(); m["idle_timeout.timeout_seconds"] != "120" || m["deletion_protection.enabled"] != "true" || len(m) != 22 {
		t.Errorf("modify-load-balancer-attributes answered %+v", attrs)
	}
	s.MustAWS(&attrs, "elbv2", "describe-load-balancer-attributes", "--load-balancer-arn", lb)
	if m := attrs.m(); m["idle_timeout.timeout_seconds"] != "120" || m["routing.http.xff_header_processing.mode"] != "preserve" || m["routing.http2.enabled"] != "true" {
		t.Errorf("after modify: %+v", attrs)
	}
	modify := func(kv string) []string {
		return []string{"elbv2", "modify-load-balancer-attributes", "--load-balancer-arn", lb, "--attributes", kv}
	}
	expectAWSMessage(t, s, "ValidationError", "Load balancer attribute key 'idle_timeout.seconds' is not recognized", modify("Key=idle_timeout.seconds,Value=30")...)
	expectAWSMessage(t, s, "ValidationError", "idle_timeout.timeout_seconds", modify("Key=idle_timeout.timeout_seconds,Value=0")...)
	expectAWSMessage(t, s, "ValidationError", "between 1 and 4000", modify("Key=idle_timeout.timeout_seconds,Value=4001")...)
	expectAWSMessage(t, s, "ValidationError", "deletion_protection.enabled", modify("Key=deletion_protection.enabled,Value=maybe")...)
	expectAWSMessage(t, s, "ValidationError", "access_logs.s3.bucket", modify("Key=access_logs.s3.enabled,Value=true")...)
	expectAWSMessage(t, s, "LoadBalancerNotFound", "", "elbv2", "describe-load-balancer-attributes", "--load-balancer-arn",
		"arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/nope/0123456789abcdef")
	s.MustAWS(&attrs, "elbv2", "describe-load-balancer-attributes", "--load-balancer-arn", lb)
	if m := attrs.m(); m["idle_timeout.timeout_seconds"] != "120" || m["access_logs.s3.enabled"] != "false" {
		t.Errorf("a refused change changed something: %+v", attrs)
	}

	// Deletion protection holds until it is turned off.
	expectAWSMessage(t, s, "OperationNotPermitted", fmt.Sprintf("Load balancer '%s' cannot be deleted because deletion protection is enabled", lb),
		"elbv2", "delete-load-balancer", "--load-balancer-arn", lb)
	var lbs struct {
		LoadBalancers []struct{ LoadBalancerArn string }
	}
	s.MustAWS(&lbs, "elbv2", "describe-load-balancers", "--load-balancer-arns", lb)
	if len(lbs.LoadBalancers) != 1 {
		t.Fatalf("protected load balancer gone: %+v", lbs)
	}

	// Tags given at creation, on every kind of resource.
	var tgOut struct {
		TargetGroups []struct{ TargetGroupArn string }
	}
	s.MustAWS(&tgOut, "elbv2", "create-target-group", "--name", "attrs", "--protocol", "HTTP", "--port", "80", "--vpc-id", vpc,
		"--target-type", "ip", "--tags", "Key=env,Value=test")
	tg := tgOut.TargetGroups[0].TargetGroupArn
	var lsOut struct {
		Listeners []struct{ ListenerArn string }
	}
	s.MustAWS(&lsOut, "elbv2", "create-listener", "--load-balancer-arn", lb, "--protocol", "HTTP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+tg, "--tags", "Key=kind,Value=listener")
	ls := lsOut.Listeners[0].ListenerArn

	// The listener closes a client connection left idle for the idle
	// timeout, as set now on a load balancer already serving.
	s.MustAWS(nil, "elbv2", "modify-load-balancer-attributes", "--load-balancer-arn", lb, "--attributes", "Key=idle_timeout.timeout_seconds,Value=1")
	c, err := net.Dial("tcp", alb.dns+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: attrs\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Close {
		t.Fatalf("listener without targets: %d (close %v), want 503 on a kept connection", resp.StatusCode, resp.Close)
	}
	idleFrom := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle client connection: %v, want it closed after the 1 s idle timeout", err)
	}
	if d := time.Since(idleFrom); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("idle client connection closed after %v, want about 1 s", d)
	}
	var ruleOut struct{ Rules []struct{ RuleArn string } }
	s.MustAWS(&ruleOut, "elbv2", "create-rule", "--listener-arn", ls, "--priority", "10",
		"--conditions", "Field=path-pattern,Values=/api/*", "--actions", "Type=forward,TargetGroupArn="+tg, "--tags", "Key=kind,Value=rule")
	rule := ruleOut.Rules[0].RuleArn
	m := tagsOf(t, s, lb, tg, ls, rule)
	if m[lb] != "env=test,team=web" || m[tg] != "env=test" || m[ls] != "kind=listener" || m[rule] != "kind=rule" {
		t.Errorf("tags from creation: %v", m)
	}

	// add-tags sets values of keys a resource has and adds the rest;
	// remove-tags takes keys away, whether a resource has them or not.
	s.MustAWS(nil, "elbv2", "add-tags", "--resource-arns", lb, tg, "--tags", "Key=env,Value=prod", "Key=owner,Value=ops@example.com")
	s.MustAWS(nil, "elbv2", "add-tags", "--resource-arns", ls, rule, "--tags", "Key=empty")
	m = tagsOf(t, s, lb, tg, ls, rule)
	if m[lb] != "env=prod,team=web,owner=ops@example.com" || m[tg] != "env=prod,owner=ops@example.com" ||
		m[ls] != "kind=listener,empty=" || m[rule] != "kind=rule,empty=" {
		t.Errorf("after add-tags: %v", m)
	}
	s.MustAWS(nil, "elbv2", "remove-tags", "--resource-arns", lb, tg, ls, "--tag-keys", "env", "kind", "absent")
	m = tagsOf(t, s, lb, tg, ls, rule)
	if m[lb] != "team=web,owner=ops@example.com" || m[tg] != "owner=ops@example.com" || m[ls] != "empty=" || m[rule] != "kind=rule,empty=" {
		t.Errorf("after remove-tags: %v", m)
	}

	// AWS's errors and limits.
	expectAWSMessage(t, s, "DuplicateTagKeys", "a", "elbv2", "add-tags", "--resource-arns", lb, "--tags", "Key=a,Value=1", "Key=a,Value=2")
	expectAWSMessage(t, s, "DuplicateTagKeys", "a", "elbv2", "create-target-group", "--name", "dup", "--protocol", "HTTP", "--port", "80",
		"--vpc-id", vpc, "--target-type", "ip", "--tags", "Key=a,Value=1", "Key=a,Value=2")
	expectAWSMessage(t, s, "ValidationError", "aws:", "elbv2", "add-tags", "--resource-arns", lb, "--tags", "Key=aws:owner,Value=x")
	var many []string
	for i := range 48 {
		many = append(many, fmt.Sprintf("Key=k%d,Value=v", i))
	}
	s.MustAWS(nil, append([]string{"elbv2", "add-tags", "--resource-arns", tg, "--tags"}, many...)...) // 49 now
	expectAWSMessage(t, s, "TooManyTags", "", "elbv2", "add-tags", "--resource-arns", tg, "--tags", "Key=x1,Value=1", "Key=x2,Value=2")
	s.MustAWS(nil, "elbv2", "add-tags", "--resource-arns", tg, "--tags", "Key=x1,Value=1", "Key=k0,Value=changed") // 50 is the limit
	if n := strings.Count(tagsOf(t, s, tg)[tg], "="); n != 50 {
		t.Errorf("%d tags, want 50", n)
	}
	missing := "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/nope/0123456789abcdef"
	expectAWSMessage(t, s, "LoadBalancerNotFound", "", "elbv2", "describe-tags", "--resource-arns", missing)
	expectAWSMessage(t, s, "TargetGroupNotFound", "", "elbv2", "add-tags", "--resource-arns", tg+"0", "--tags", "Key=a,Value=b")
	expectAWSMessage(t, s, "ListenerNotFound", "", "elbv2", "remove-tags", "--resource-arns", ls+"0", "--tag-keys", "a")
	expectAWSMessage(t, s, "RuleNotFound", "", "elbv2", "describe-tags", "--resource-arns", rule+"0")
	var arns21 []string
	for range 21 {
		arns21 = append(arns21, lb)
	}
	expectAWSMessage(t, s, "ValidationError", "20", append([]string{"elbv2", "describe-tags", "--resource-arns"}, arns21...)...)
	// A failed call changes nothing, even on the resources named before the bad one.
	expectAWSMessage(t, s, "TargetGroupNotFound", "", "elbv2", "add-tags", "--resource-arns", lb, tg+"0", "--tags", "Key=partial,Value=1")
	if strings.Contains(tagsOf(t, s, lb)[lb], "partial") {
		t.Error("add-tags that failed tagged the resource named first")
	}

	// With protection off the load balancer goes, listener, rule and all.
	s.MustAWS(nil, "elbv2", "modify-load-balancer-attributes", "--load-balancer-arn", lb, "--attributes", "Key=deletion_protection.enabled,Value=false")
	s.MustAWS(nil, "elbv2", "delete-load-balancer", "--load-balancer-arn", lb)
	expectAWSMessage(t, s, "LoadBalancerNotFound", "", "elbv2", "describe-tags", "--resource-arns", lb)
	expectAWSMessage(t, s, "ListenerNotFound", "", "elbv2", "describe-tags", "--resource-arns", ls)
	s.MustAWS(nil, "elbv2", "delete-target-group", "--target-group-arn", tg)
}

// TestTargetGroupAndListenerAttributes drives what the CLI, Terraform and
// CDK do on a health check change and with the target group and listener
// attributes: modify-target-group answers and keeps the new health check,
// the attribute sets are AWS's, checked and kept, and a listener's
// response header attributes act on what its load balancer answers.
func TestTargetGroupAndListenerAttributes(t *testing.T) {
	s := testenv.Start(t)
	alb := newALB(t, s, "tgattrs")
	lb, dns := alb.lbARN, alb.dns
	type tgJSON struct {
		TargetGroupArn             string
		HealthCheckPath            string
		HealthCheckIntervalSeconds int
		HealthCheckTimeoutSeconds  int
		HealthyThresholdCount      int
		UnhealthyThresholdCount    int
		HealthCheckPort            string
		HealthCheckEnabled         bool
		Matcher                    struct{ HttpCode string }
		LoadBalancerArns           []string
	}
	var tgOut struct{ TargetGroups []tgJSON }
	s.MustAWS(&tgOut, "elbv2", "create-target-group", "--name", "tgattrs", "--protocol", "HTTP", "--port", "8080",
		"--vpc-id", alb.vpc, "--target-type", "ip")
	tg := tgOut.TargetGroups[0].TargetGroupArn
	var lsOut struct {
		Listeners []struct{ ListenerArn string }
	}
	s.MustAWS(&lsOut, "elbv2", "create-listener", "--load-balancer-arn", lb, "--protocol", "HTTP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+tg)
	ls := lsOut.Listeners[0].ListenerArn

	// modify-target-group: the answer and describe-target-groups carry
	// the change and keep what was not given.
	s.MustAWS(&tgOut, "elbv2", "modify-target-group", "--target-group-arn", tg, "--health-check-path", "/healthz",
		"--health-check-interval-seconds", "10", "--health-check-timeout-seconds", "3", "--healthy-threshold-count", "3",
		"--unhealthy-threshold-count", "4", "--matcher", "HttpCode=200-299")
	want := tgJSON{TargetGroupArn: tg, HealthCheckPath: "/healthz", HealthCheckIntervalSeconds: 10, HealthCheckTimeoutSeconds: 3,
		HealthyThresholdCount: 3, UnhealthyThresholdCount: 4, HealthCheckPort: "traffic-port", HealthCheckEnabled: true,
		Matcher: struct{ HttpCode string }{"200-299"}, LoadBalancerArns: []string{lb}}
	if got := tgOut.TargetGroups; len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("modify-target-group answered %+v, want %+v", got, want)
	}
	s.MustAWS(&tgOut, "elbv2", "modify-target-group", "--target-group-arn", tg, "--health-check-port", "8081")
	s.MustAWS(&tgOut, "elbv2", "describe-target-groups", "--target-group-arns", tg)
	want.HealthCheckPort = "8081"
	if got := tgOut.TargetGroups; len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("describe-target-groups after modify: %+v, want %+v", got, want)
	}
	modifyTG := func(args ...string) []string {
		return append([]string{"elbv2", "modify-target-group", "--target-group-arn", tg}, args...)
	}
	expectAWSMessage(t, s, "TargetGroupNotFound", "", "elbv2", "modify-target-group", "--target-group-arn", tg+"0", "--health-check-path", "/")
	expectAWSMessage(t, s, "ValidationError", "smaller than the interval", modifyTG("--health-check-timeout-seconds", "10")...)
	expectAWSMessage(t, s, "ValidationError", "between 5 and 300", modifyTG("--health-check-interval-seconds", "301")...)
	expectAWSMessage(t, s, "ValidationError", "between 2 and 10", modifyTG("--healthy-threshold-count", "11")...)
	expectAWSMessage(t, s, "ValidationError", "200-499", modifyTG("--matcher", "HttpCode=600")...)
	expectAWSMessage(t, s, "ValidationError", "must begin with '/'", modifyTG("--health-check-path", "healthz")...)
	s.MustAWS(&tgOut, "elbv2", "describe-target-groups", "--target-group-arns", tg)
	if got := tgOut.TargetGroups; len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("a refused modify-target-group changed the group: %+v", got)
	}

	// Target group attributes: AWS's set for an ip group, and what
	// Terraform sends on every apply.
	var attrs cliAttrs
	s.MustAWS(&attrs, "elbv2", "describe-target-group-attributes", "--target-group-arn", tg)
	tgDefaults := map[string]string{
		"stickiness.enabled": "false", "deregistration_delay.timeout_seconds": "300", "stickiness.app_cookie.cookie_name": "",
		"stickiness.type": "lb_cookie", "stickiness.lb_cookie.duration_seconds": "86400", "slow_start.duration_seconds": "0",
		"stickiness.app_cookie.duration_seconds": "86400", "load_balancing.algorithm.type": "round_robin",
		"load_balancing.algorithm.anomaly_mitigation": "off", "load_balancing.cross_zone.enabled": "use_load_balancer_configuration",
		"target_group_health.dns_failover.minimum_healthy_targets.count":                 "1",
		"target_group_health.dns_failover.minimum_healthy_targets.percentage":            "off",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.count":      "1",
		"target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage": "off",
	}
	if got := attrs.m(); fmt.Sprint(got) != fmt.Sprint(tgDefaults) || len(attrs.Attributes) != 14 {
		t.Errorf("target group attributes %v, want AWS's %v", got, tgDefaults)
	}
	s.MustAWS(&attrs, "elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes",
		"Key=deregistration_delay.timeout_seconds,Value=30", "Key=stickiness.enabled,Value=false", "Key=stickiness.type,Value=lb_cookie",
		"Key=stickiness.lb_cookie.duration_seconds,Value=3600", "Key=load_balancing.algorithm.type,Value=least_outstanding_requests")
	if m := attrs.m(); m["deregistration_delay.timeout_seconds"] != "30" || m["stickiness.lb_cookie.duration_seconds"] != "3600" ||
		m["load_balancing.algorithm.type"] != "least_outstanding_requests" || len(m) != 14 {
		t.Errorf("modify-target-group-attributes answered %v", m)
	}
	modifyTGA := func(kv ...string) []string {
		return append([]string{"elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes"}, kv...)
	}
	expectAWSMessage(t, s, "ValidationError", "Target group attribute key 'proxy_protocol_v2.enabled' is not recognized", modifyTGA("Key=proxy_protocol_v2.enabled,Value=true")...)
	expectAWSMessage(t, s, "ValidationError", "between 30 and 900", modifyTGA("Key=slow_start.duration_seconds,Value=10")...)
	expectAWSMessage(t, s, "ValidationError", "round_robin", modifyTGA("Key=slow_start.duration_seconds,Value=60")...)

	// Listener attributes: AWS's defaults for an HTTP listener, and the
	// response headers acting on the load balancer's own 503 (the group
	// has no targets).
	s.MustAWS(&attrs, "elbv2", "describe-listener-attributes", "--listener-arn", ls)
	const p = "routing.http.response."
	if m := attrs.m(); len(attrs.Attributes) != 11 || m[p+"server.enabled"] != "true" || m[p+"x_frame_options.header_value"] != "" ||
		m[p+"strict_transport_security.header_value"] != "" {
		t.Errorf("listener attributes %+v, want AWS's 11 defaults", attrs)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func() (int, http.Header) {
		t.Helper()
		resp, err := client.Get("http://" + dns + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	if code, h := get(); code != 503 || h.Get("Server") != "awselb/2.0" || h.Get("X-Frame-Options") != "" {
		t.Errorf("before modify-listener-attributes: %d %v", code, h)
	}
	s.MustAWS(&attrs, "elbv2", "modify-listener-attributes", "--listener-arn", ls, "--attributes",
		"Key="+p+"server.enabled,Value=false", "Key="+p+"x_frame_options.header_value,Value=DENY",
		"Key="+p+"strict_transport_security.header_value,Value=max-age=31536000; includeSubDomains")
	if m := attrs.m(); len(m) != 11 || m[p+"server.enabled"] != "false" || m[p+"x_frame_options.header_value"] != "DENY" {
		t.Errorf("modify-listener-attributes answered %+v", attrs)
	}
	if code, h := get(); code != 503 || h.Get("Server") != "" || h.Get("X-Frame-Options") != "DENY" ||
		h.Get("Strict-Transport-Security") != "max-age=31536000; includeSubDomains" {
		t.Errorf("after modify-listener-attributes: %d %v", code, h)
	}
	modifyLA := func(kv string) []string {
		return []string{"elbv2", "modify-listener-attributes", "--listener-arn", ls, "--attributes", kv}
	}
	expectAWSMessage(t, s, "ValidationError", "Listener attribute key 'routing.http.response.x_xss_protection.header_value' is not recognized",
		modifyLA("Key="+p+"x_xss_protection.header_value,Value=1")...)
	expectAWSMessage(t, s, "ValidationError", "x_content_type_options", modifyLA("Key="+p+"x_content_type_options.header_value,Value=sniff")...)
	expectAWSMessage(t, s, "ValidationError", "not supported on HTTP listeners", modifyLA("Key=tcp.idle_timeout.seconds,Value=350")...)
	expectAWSMessage(t, s, "ListenerNotFound", "", "elbv2", "describe-listener-attributes", "--listener-arn", ls+"0")
	s.MustAWS(&attrs, "elbv2", "describe-listener-attributes", "--listener-arn", ls)
	if m := attrs.m(); m[p+"x_content_type_options.header_value"] != "" || m[p+"x_frame_options.header_value"] != "DENY" {
		t.Errorf("after refused changes: %+v", attrs)
	}

	s.MustAWS(nil, "elbv2", "delete-load-balancer", "--load-balancer-arn", lb)
	s.MustAWS(nil, "elbv2", "delete-target-group", "--target-group-arn", tg)
}
