package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type cliTargetHealth struct {
	TargetHealthDescriptions []struct {
		Target struct {
			ID   string `json:"Id"`
			Port int    `json:"Port"`
		} `json:"Target"`
		TargetHealth struct {
			State  string `json:"State"`
			Reason string `json:"Reason"`
		} `json:"TargetHealth"`
	} `json:"TargetHealthDescriptions"`
}

func targetStates(t *testing.T, s *testenv.Server, tg string) map[string]string {
	t.Helper()
	var out cliTargetHealth
	s.MustAWS(&out, "elbv2", "describe-target-health", "--target-group-arn", tg)
	m := map[string]string{}
	for _, d := range out.TargetHealthDescriptions {
		m[fmt.Sprintf("%s:%d", d.Target.ID, d.Target.Port)] = d.TargetHealth.State + "/" + d.TargetHealth.Reason
	}
	return m
}

func waitTargets(t *testing.T, s *testenv.Server, tg, what string, timeout time.Duration, ok func(map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := targetStates(t, s, tg)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("targets not %s after %v: %v", what, timeout, m)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func countState(m map[string]string, state string) int {
	n := 0
	for _, v := range m {
		if strings.HasPrefix(v, state+"/") {
			n++
		}
	}
	return n
}

func countEvents(svc cliService, msg string) int {
	n := 0
	for _, e := range svc.Events {
		if e.Message == msg {
			n++
		}
	}
	return n
}

func expectAWSError(t *testing.T, s *testenv.Server, code string, args ...string) {
	t.Helper()
	if got, msg := s.AWSError(args...); got != code {
		t.Errorf("%v: error %q (%s), want %s", args[:2], got, msg, code)
	}
}

// TestLoadBalancedService puts a service of 2 web tasks behind a load
// balancer through the ELBv2 CLI: the listener answers HTTP through the
// healthy targets; a task stopped by the user is DEACTIVATING while its
// target drains, then stops, and is replaced once while constant load
// loses no request; a scale-in drains the same way across a server
// restart; the listener comes back after the restart.
func TestLoadBalancedService(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "lb")
	forceDeleteServices(t, s, "lb")

	var subnets struct {
		Subnets []struct {
			SubnetID string `json:"SubnetId"`
			VpcID    string `json:"VpcId"`
		}
	}
	s.MustAWS(&subnets, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	if len(subnets.Subnets) < 2 {
		t.Fatalf("need two default subnets: %+v", subnets)
	}
	sn1, sn2, vpc := subnets.Subnets[0].SubnetID, subnets.Subnets[1].SubnetID, subnets.Subnets[0].VpcID

	// Bad input gets AWS's errors.
	expectAWSError(t, s, "SubnetNotFound", "elbv2", "create-load-balancer", "--name", "x", "--subnets", "subnet-00000000", sn2)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-load-balancer", "--name", "x", "--subnets", sn1)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-load-balancer", "--name=-bad-", "--subnets", sn1, sn2)
	expectAWSError(t, s, "LoadBalancerNotFound", "elbv2", "describe-load-balancers", "--names", "nope")
	expectAWSError(t, s, "TargetGroupNotFound", "elbv2", "describe-target-groups", "--target-group-arns", "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nope/0123456789abcdef")
	expectAWSError(t, s, "ValidationError", "elbv2", "create-target-group", "--name", "tg", "--protocol", "HTTP", "--port", "80", "--vpc-id", "vpc-00000000", "--target-type", "ip")
	expectAWSError(t, s, "ValidationError", "elbv2", "create-target-group", "--name", "tg", "--protocol", "HTTP", "--port", "80", "--vpc-id", vpc, "--target-type", "ip", "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "6")

	var lbOut struct {
		LoadBalancers []struct {
			LoadBalancerArn string `json:"LoadBalancerArn"`
			DNSName         string `json:"DNSName"`
			State           struct{ Code string }
			VpcID           string `json:"VpcId"`
		}
	}
	s.MustAWS(&lbOut, "elbv2", "create-load-balancer", "--name", "web-lb", "--type", "application", "--subnets", sn1, sn2)
	lb := lbOut.LoadBalancers[0]
	addr, err := netip.ParseAddr(lb.DNSName)
	if err != nil || !addr.IsLoopback() || lb.VpcID != vpc || lb.State.Code != "active" {
		t.Fatalf("create-load-balancer: %+v", lb)
	}
	expectAWSError(t, s, "DuplicateLoadBalancerName", "elbv2", "create-load-balancer", "--name", "web-lb", "--subnets", sn1, sn2)

	var tgOut struct {
		TargetGroups []struct {
			TargetGroupArn        string `json:"TargetGroupArn"`
			HealthyThresholdCount int
			LoadBalancerArns      []string
		}
	}
	s.MustAWS(&tgOut, "elbv2", "create-target-group", "--name", "web", "--protocol", "HTTP", "--port", "80", "--vpc-id", vpc,
		"--target-type", "ip", "--health-check-path", "/", "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2",
		"--healthy-threshold-count", "2", "--unhealthy-threshold-count", "2", "--matcher", "HttpCode=200-299")
	tg := tgOut.TargetGroups[0].TargetGroupArn
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=5")
	var attrs struct{ Attributes []struct{ Key, Value string } }
	s.MustAWS(&attrs, "elbv2", "describe-target-group-attributes", "--target-group-arn", tg)
	if !strings.Contains(fmt.Sprint(attrs), "{deregistration_delay.timeout_seconds 5}") {
		t.Errorf("attributes: %+v", attrs)
	}

	var lsOut struct {
		Listeners []struct {
			ListenerArn string `json:"ListenerArn"`
			Port        int    `json:"Port"`
		}
	}
	s.MustAWS(&lsOut, "elbv2", "create-listener", "--load-balancer-arn", lb.LoadBalancerArn, "--protocol", "HTTP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+tg)
	expectAWSError(t, s, "DuplicateListener", "elbv2", "create-listener", "--load-balancer-arn", lb.LoadBalancerArn, "--protocol", "HTTP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+tg)
	expectAWSError(t, s, "ResourceInUse", "elbv2", "delete-target-group", "--target-group-arn", tg)
	url := "http://" + lb.DNSName + "/"
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}}
	get := func() (int, error) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("listener without targets: %d %v, want 503", code, err)
	}

	registerJSON(t, s, `{"family":"web","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"web","image":"nginx:latest","portMappings":[{"containerPort":80}],"stopTimeout":2}]}`)
	s.MustAWS(nil, "ecs", "create-service", "--cluster", "lb", "--service-name", "web", "--task-definition", "web",
		"--desired-count", "2", "--launch-type", "FARGATE", "--network-configuration", awsvpc(sn1),
		"--load-balancers", "targetGroupArn="+tg+",containerName=web,containerPort=80")
	m := waitTargets(t, s, tg, "2 healthy", 90*time.Second, func(m map[string]string) bool { return countState(m, "healthy") == 2 })
	for _, v := range m {
		if v != "healthy/" {
			t.Errorf("target health %v", m)
		}
	}
	// ECS tells in the service's events what it registered, in which group.
	if svc := describeService(t, s, "lb", "web"); registeredEvents(svc, "web", tg) != 2 {
		t.Errorf("after registering 2 tasks, events: %+v", svc.Events)
	}
	var tgs struct {
		TargetGroups []struct{ LoadBalancerArns []string }
	}
	s.MustAWS(&tgs, "elbv2", "describe-target-groups", "--load-balancer-arn", lb.LoadBalancerArn)
	if len(tgs.TargetGroups) != 1 || len(tgs.TargetGroups[0].LoadBalancerArns) != 1 {
		t.Errorf("describe-target-groups --load-balancer-arn: %+v", tgs)
	}
	for i := 0; i < 4; i++ {
		if code, err := get(); code != http.StatusOK {
			t.Fatalf("GET through the listener: %d %v", code, err)
		}
	}

	// Constant load while a task is stopped and replaced.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, err := get()
				if code == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %v", code, err))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	arns := serviceTaskArns(t, s, "lb", "web", "RUNNING")
	victim := describeTask(t, s, "lb", arns[0])
	ip := ""
	for _, a := range victim.Attachments {
		for _, d := range a.Details {
			if d.Name == "privateIPv4Address" {
				ip = d.Value
			}
		}
	}
	// As in ECS, a stopped task behind a load balancer is deregistered
	// first: it keeps running, DEACTIVATING with desiredStatus STOPPED,
	// while its target drains, and only then stops.
	var stopOut struct{ Task cliTask }
	s.MustAWS(&stopOut, "ecs", "stop-task", "--cluster", "lb", "--task", arns[0])
	if st := stopOut.Task; st.DesiredStatus != "STOPPED" || st.LastStatus != "DEACTIVATING" || st.StopCode != "UserInitiated" || st.StoppingAt == nil {
		t.Errorf("stop-task of a load-balanced task: desired %s, last %s, stopCode %s, stoppingAt %v", st.DesiredStatus, st.LastStatus, st.StopCode, st.StoppingAt)
	}
	old := ip + ":80"
	waitTargets(t, s, tg, "draining the stopped task", 10*time.Second, func(m map[string]string) bool {
		return m[old] == "draining/Target.DeregistrationInProgress"
	})
	if st := describeTask(t, s, "lb", arns[0]); st.LastStatus != "DEACTIVATING" || st.DesiredStatus != "STOPPED" {
		t.Errorf("task while its target drains: last %s, desired %s", st.LastStatus, st.DesiredStatus)
	}
	waitTargets(t, s, tg, "replaced", 90*time.Second, func(m map[string]string) bool {
		_, still := m[old]
		return !still && countState(m, "healthy") == 2
	})
	if svc := describeService(t, s, "lb", "web"); registeredEvents(svc, "web", tg) != 3 ||
		!svc.hasEvent("(service web) deregistered 1 targets in (target-group "+tg+")") || !svc.hasEvent("(service web) has begun draining connections on 1 tasks.") {
		t.Errorf("after the replacement (3 registered, 1 deregistered and drained), events: %+v", svc.Events)
	}
	close(stop)
	wg.Wait()
	t.Logf("during replacement: %d requests answered, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 || ok.Load() < 100 {
		t.Errorf("load during replacement: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	st := waitStatus(t, s, "lb", arns[0], "STOPPED", 30*time.Second)
	if d := anyTime(t, st.StoppedAt).Sub(anyTime(t, st.StoppingAt)); st.StopCode != "UserInitiated" || st.StoppedReason != "Task stopped by user" || d < 5*time.Second {
		t.Errorf("stopped task: %s %q, stopped %v after stoppingAt (deregistration delay 5s)", st.StopCode, st.StoppedReason, d)
	}
	// Replaced once: two running, the stopped one, nothing else.
	if running, stopped := serviceTaskArns(t, s, "lb", "web", "RUNNING"), serviceTaskArns(t, s, "lb", "web", "STOPPED"); len(running) != 2 || len(stopped) != 1 {
		t.Errorf("after the replacement: running %v, stopped %v", running, stopped)
	}

	// Scale-in drains the task it stops; a server restart in the middle of
	// the drain neither cuts it short nor leaves the task behind.
	expectAWSError(t, s, "InvalidTarget", "elbv2", "register-targets", "--target-group-arn", tg, "--targets", "Id=10.255.255.1")
	const delay = 20 * time.Second
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=20")
	s.MustAWS(nil, "ecs", "update-service", "--cluster", "lb", "--service", "web", "--desired-count", "1")
	// One CLI call per poll until the drain begins (its event), then the
	// task is looked for: on a loaded machine a poll that also lists and
	// describes tasks can take longer than the drain.
	svc := waitService(t, s, "lb", "web", "draining one task", 60*time.Second, func(v cliService) bool {
		return countEvents(v, "(service web) has begun draining connections on 1 tasks.") == 2
	})
	var drained cliTask
	for _, arn := range serviceTaskArns(t, s, "lb", "web", "STOPPED") {
		if task := describeTask(t, s, "lb", arn); task.LastStatus == "DEACTIVATING" {
			drained = task
		}
	}
	if drained.TaskArn == "" {
		t.Fatalf("no DEACTIVATING task once the scale-in's drain began: %+v", svc.Events)
	}
	if drained.DesiredStatus != "STOPPED" || drained.StopCode != "ServiceSchedulerInitiated" || !strings.HasPrefix(drained.StoppedReason, "Scaling activity initiated by (deployment ecs-svc/") {
		t.Errorf("scaled-in task: desired %s, stopCode %s, reason %q", drained.DesiredStatus, drained.StopCode, drained.StoppedReason)
	}
	if svc.RunningCount != 1 || svc.DesiredCount != 1 || !svc.hasEvent("(service web) has begun draining connections on 1 tasks.") ||
		!svc.hasEvent("(service web) deregistered 1 targets in (target-group "+tg+")") {
		t.Errorf("service while a task drains: running %d, desired %d, events %+v", svc.RunningCount, svc.DesiredCount, svc.Events)
	}
	s.Restart()
	stoppingAt := anyTime(t, drained.StoppingAt)
	if task := describeTask(t, s, "lb", drained.TaskArn); task.LastStatus != "DEACTIVATING" && time.Since(stoppingAt) < delay-2*time.Second {
		t.Errorf("after a restart %v into the drain, the task is %s", time.Since(stoppingAt), task.LastStatus)
	}
	st = waitStatus(t, s, "lb", drained.TaskArn, "STOPPED", delay+30*time.Second)
	if d := anyTime(t, st.StoppedAt).Sub(stoppingAt); d < delay || st.StopCode != "ServiceSchedulerInitiated" {
		t.Errorf("scaled-in task stopped %v after stoppingAt (delay %v): %s", d, delay, st.StopCode)
	}
	svc = describeService(t, s, "lb", "web")
	// Stopped once: one stop event names it.
	id := drained.TaskArn[strings.LastIndex(drained.TaskArn, "/")+1:]
	if n := countEvents(svc, "(service web) has stopped 1 running tasks: (task "+id+")."); n != 1 {
		t.Errorf("%d stop events for %s: %+v", n, id, svc.Events)
	}
	if r := serviceTaskArns(t, s, "lb", "web", "RUNNING"); len(r) != 1 || svc.RunningCount != 1 {
		t.Errorf("after scale-in: running %v (runningCount %d)", r, svc.RunningCount)
	}
	waitTargets(t, s, tg, "healthy after restart", 60*time.Second, func(m map[string]string) bool { return countState(m, "healthy") == 1 && len(m) == 1 })
	if code, err := get(); code != http.StatusOK {
		t.Fatalf("GET after restart: %d %v", code, err)
	}
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=3")
	s.MustAWS(nil, "ecs", "delete-service", "--cluster", "lb", "--service", "web", "--force")
	waitTargets(t, s, tg, "draining", 30*time.Second, func(m map[string]string) bool { return countState(m, "draining") == 1 })
	s.MustAWS(nil, "elbv2", "delete-listener", "--listener-arn", lsOut.Listeners[0].ListenerArn)
	if _, err := net.DialTimeout("tcp", lb.DNSName+":80", time.Second); err == nil {
		t.Errorf("listener still accepts connections after delete-listener")
	}
	s.MustAWS(nil, "elbv2", "delete-load-balancer", "--load-balancer-arn", lb.LoadBalancerArn)
	waitTargets(t, s, tg, "gone", 30*time.Second, func(m map[string]string) bool { return len(m) == 0 })
	s.MustAWS(nil, "elbv2", "delete-target-group", "--target-group-arn", tg)
	expectAWSError(t, s, "LoadBalancerNotFound", "elbv2", "describe-load-balancers", "--load-balancer-arns", lb.LoadBalancerArn)
}

// registeredEvents adds up the targets a service's "registered N targets
// in (target-group ARN)" events say it registered in tg.
func registeredEvents(svc cliService, name, tg string) int {
	re := regexp.MustCompile(`^\(service ` + regexp.QuoteMeta(name) + `\) registered (\d+) targets in \(target-group ` + regexp.QuoteMeta(tg) + `\)$`)
	n := 0
	for _, e := range svc.Events {
		if m := re.FindStringSubmatch(e.Message); m != nil {
			k, _ := strconv.Atoi(m[1])
			n += k
		}
	}
	return n
}
