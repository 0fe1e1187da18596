package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// lbSetup is a load balancer with one HTTP listener on port 80 forwarding
// to one ip target group, made through the CLI.
type lbSetup struct {
	lbARN, dns, tg, listener string
	vpc, sn1, sn2            string
}

// newALB creates load balancer name in the first two default subnets;
// lbArgs are added to create-load-balancer. Only the subnets, VPC, ARN
// and DNS name are set.
func newALB(t *testing.T, s *testenv.Server, name string, lbArgs ...string) lbSetup {
	t.Helper()
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
	l := lbSetup{sn1: subnets.Subnets[0].SubnetID, sn2: subnets.Subnets[1].SubnetID, vpc: subnets.Subnets[0].VpcID}
	var lbOut struct {
		LoadBalancers []struct {
			LoadBalancerArn string `json:"LoadBalancerArn"`
			DNSName         string `json:"DNSName"`
		}
	}
	s.MustAWS(&lbOut, append([]string{"elbv2", "create-load-balancer", "--name", name, "--subnets", l.sn1, l.sn2}, lbArgs...)...)
	l.lbARN, l.dns = lbOut.LoadBalancers[0].LoadBalancerArn, lbOut.LoadBalancers[0].DNSName
	return l
}

// newLB is a load balancer in the two default subnets with an HTTP:80
// listener forwarding to a new ip target group checked every 5 seconds.
func newLB(t *testing.T, s *testenv.Server, name string, tgArgs ...string) lbSetup {
	t.Helper()
	l := newALB(t, s, name)
	var tgOut struct {
		TargetGroups []struct {
			TargetGroupArn string `json:"TargetGroupArn"`
		}
	}
	args := append([]string{"elbv2", "create-target-group", "--name", name, "--protocol", "HTTP", "--port", "80", "--vpc-id", l.vpc,
		"--target-type", "ip", "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2",
		"--healthy-threshold-count", "2", "--unhealthy-threshold-count", "2"}, tgArgs...)
	s.MustAWS(&tgOut, args...)
	l.tg = tgOut.TargetGroups[0].TargetGroupArn
	var lsOut struct {
		Listeners []struct {
			ListenerArn string `json:"ListenerArn"`
		}
	}
	s.MustAWS(&lsOut, "elbv2", "create-listener", "--load-balancer-arn", l.lbARN, "--protocol", "HTTP", "--port", "80",
		"--default-actions", "Type=forward,TargetGroupArn="+l.tg)
	l.listener = lsOut.Listeners[0].ListenerArn
	return l
}

// versionedWeb registers a web task definition whose server answers its
// version on / and "ok" on /health; extra is shell run before the server
// starts (in the background, with the web root in /srv).
func versionedWeb(t *testing.T, s *testenv.Server, family, version, extra string) {
	t.Helper()
	script := fmt.Sprintf("trap 'exit 0' TERM; mkdir -p /srv; echo %s > /srv/index.html; echo ok > /srv/health; %s httpd -f -p 80 -h /srv & wait", version, extra)
	cmd := fmt.Sprintf(`["sh","-c",%q]`, script)
	registerJSON(t, s, fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"web","image":"nginx:latest","command":%s,"portMappings":[{"containerPort":80}],"stopTimeout":2}]}`, family, cmd))
}

// load keeps GETs going to a URL from several workers, counting answers
// by body and every failure: an error or a status other than 200, with
// client-side timeouts and each status code counted apart so a failure
// says what kind it was.
type load struct {
	mu       sync.Mutex
	bodies   map[string]int
	codes    map[int]int // non-200 answers by status
	last     []string    // the newest bodies, oldest first
	failed   atomic.Int64
	timeouts atomic.Int64 // the client gave up waiting (no answer at all)
	firstErr atomic.Value
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func startLoad(url string, workers int, pause time.Duration) *load {
	l := &load{bodies: map[string]int{}, codes: map[int]int{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: workers}}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil {
					l.failed.Add(1)
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						l.timeouts.Add(1)
					}
					l.firstErr.CompareAndSwap(nil, time.Now().Format("15:04:05.000 ")+err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.failed.Add(1)
					l.mu.Lock()
					l.codes[resp.StatusCode]++
					l.mu.Unlock()
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s %d %s", time.Now().Format("15:04:05.000"), resp.StatusCode, b))
					continue
				}
				body := strings.TrimSpace(string(b))
				l.mu.Lock()
				l.bodies[body]++
				l.last = append(l.last, body)
				if len(l.last) > 50 {
					l.last = l.last[1:]
				}
				l.mu.Unlock()
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	return l
}

// summary is every answer counted: bodies, failed statuses, timeouts.
func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := 0
	for _, n := range l.bodies {
		ok += n
	}
	return fmt.Sprintf("%d answered 200 %v, failed %d (statuses %v, client timeouts %d)", ok, l.bodies, l.failed.Load(), l.codes, l.timeouts.Load())
}

// end stops the load and waits for its workers; a test may end it
// itself and defer end as well.
func (l *load) end() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

func (l *load) count(body string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bodies[body]
}

// webBehindLB creates service web in cluster: 3 tasks of taskDef behind
// lb's target group, deploying with minimumHealthyPercent 100 and
// maximumPercent 200, and waits until the group has exactly 3 healthy
// targets.
func webBehindLB(t *testing.T, s *testenv.Server, lb lbSetup, cluster, taskDef string) {
	t.Helper()
	s.MustAWS(nil, "ecs", "create-service", "--cluster", cluster, "--service-name", "web", "--task-definition", taskDef,
		"--desired-count", "3", "--launch-type", "FARGATE", "--network-configuration", awsvpc(lb.sn1),
		"--deployment-configuration", "minimumHealthyPercent=100,maximumPercent=200",
		"--load-balancers", "targetGroupArn="+lb.tg+",containerName=web,containerPort=80")
	waitTargets(t, s, lb.tg, "3 healthy", 90*time.Second, threeHealthy)
}

// threeHealthy is a target group holding exactly 3 targets, all healthy.
func threeHealthy(m map[string]string) bool { return countState(m, "healthy") == 3 && len(m) == 3 }

// TestLBRollingDeployment rolls a service of 3 behind a load balancer from
// v1 to v2 with `update-service --force-new-deployment` while requests
// keep coming through the listener: none may fail, and the answers switch
// from v1 to v2. Old tasks must only go once new ones pass their health
// checks, and must keep serving until their targets have drained.
func TestLBRollingDeployment(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "roll")
	forceDeleteServices(t, s, "roll")
	lb := newLB(t, s, "roll", "--health-check-path", "/health")
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", lb.tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=5")

	versionedWeb(t, s, "roll", "v1", "")
	versionedWeb(t, s, "roll", "v2", "")
	webBehindLB(t, s, lb, "roll", "roll:1")

	ld := startLoad("http://"+lb.dns+"/", 4, 5*time.Millisecond)
	defer ld.end()
	time.Sleep(time.Second)
	s.MustAWS(nil, "ecs", "update-service", "--cluster", "roll", "--service", "web", "--task-definition", "roll:2", "--force-new-deployment")

	// During the deployment there are never fewer than 3 healthy targets
	// (minimumHealthyPercent 100) nor more than 6 tasks (maximumPercent 200).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		m := targetStates(t, s, lb.tg)
		if n := countState(m, "healthy"); n < 3 {
			t.Errorf("only %d healthy targets during the deployment: %v", n, m)
		}
		svc := describeService(t, s, "roll", "web")
		if svc.RunningCount+svc.PendingCount > 6 {
			t.Errorf("%d tasks running and %d pending, more than maximumPercent allows", svc.RunningCount, svc.PendingCount)
		}
		if stable(svc) && svc.Deployments[0].RolloutState == "COMPLETED" && strings.HasSuffix(svc.Deployments[0].TaskDefinition, ":2") &&
			countState(m, "healthy") == 3 && len(m) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment not done after 3m: %+v %v", svc, m)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	ld.end()

	v1, v2 := ld.count("v1"), ld.count("v2")
	t.Logf("requests during the deployment: v1 %d, v2 %d, failed %d", v1, v2, ld.failed.Load())
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rolling deployment (first: %v)", n, ld.firstErr.Load())
	}
	if v1 < 50 || v2 < 50 {
		t.Errorf("answers did not switch from v1 to v2: v1 %d, v2 %d", v1, v2)
	}
	for _, b := range ld.last {
		if b != "v2" {
			t.Errorf("after the deployment the load balancer still answers %q: %v", b, ld.last)
			break
		}
	}
	svc := describeService(t, s, "roll", "web")
	for _, ev := range []string{"has begun draining connections on", " targets in (target-group " + lb.tg + ")", "deployment completed"} {
		if !svc.hasEvent(ev) {
			t.Errorf("no service event %q: %+v", ev, svc.Events)
		}
	}
	// The old tasks were stopped by the scheduler, after draining.
	var stopped struct {
		TaskArns []string `json:"taskArns"`
	}
	s.MustAWS(&stopped, "ecs", "list-tasks", "--cluster", "roll", "--service-name", "web", "--desired-status", "STOPPED")
	if len(stopped.TaskArns) != 3 {
		t.Fatalf("stopped tasks: %v", stopped.TaskArns)
	}
	for _, arn := range stopped.TaskArns {
		task := describeTask(t, s, "roll", arn)
		if task.StopCode != "ServiceSchedulerInitiated" || !strings.HasPrefix(task.StoppedReason, "Scaling activity initiated by (deployment ecs-svc/") {
			t.Errorf("old task %s: stopCode %q (%s)", arn, task.StopCode, task.StoppedReason)
		}
		// DEACTIVATING from stoppingAt for the 5 s deregistration delay.
		if task.StoppedAt != nil && task.StoppingAt != nil {
			if d := anyTime(t, task.StoppedAt).Sub(anyTime(t, task.StoppingAt)); d < 5*time.Second {
				t.Errorf("old task %s stopped %v after stoppingAt, before its target drained", arn, d)
			}
		}
	}
}
