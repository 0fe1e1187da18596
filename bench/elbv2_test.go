package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// Load balancer benchmarks. Run them with
//
//	go test -run '^$' -bench 'LB' -benchtime 3x -timeout 30m ./bench
//
// BenchmarkLBThroughput sends the same closed-loop load (lbConns
// connections for lbLoadFor) through a listener to a service of 3 tasks,
// and straight to one task's address: requests/s, p99, and requests/s per
// core used: the server process (which holds the proxy), the tasks'
// cgroups and the load generator (this process), since a direct client
// pays for a connection per request to busybox httpd (no keep-alive) that
// the proxy pays for behind a kept-alive client connection. It also
// reports each part's CPU per request (server, tasks, load generator) and
// the idle server's CPU, to show where the load balancer's cost goes, and
// the TCP connections each path opens per request (load generator, and
// accepted by the tasks), to show both paths do the work they must. As a
// diagnostic outside the ratio it also sends the direct load to the 3
// tasks in turn, to tell the tasks' cost of taking the load in three
// parts from the load balancer's own.
// BenchmarkLBScaleOut times a load step to the first answer from a task
// the step made the service start (ALBRequestCountPerTarget target
// tracking), next to the floor: the same scale-out asked for directly
// with update-service.

const (
	lbConns   = 16
	lbLoadFor = 5 * time.Second
)

type lbBench struct {
	s        *testenv.Server
	dns, tg  string
	lbARN    string
	subnet   string
	cluster  string
	tasks    []string
	taskIPs  []string
	serverPI int
}

func (e *lbBench) aws(out any, args ...string) { e.s.MustAWS(out, args...) }

// setupLB makes a load balancer and a service of n web tasks (1 vCPU each)
// behind it, every task answering its own hostname.
func setupLB(b *testing.B, n int, extraTG ...string) *lbBench {
	s := testenv.Start(b, runcIsolation...)
	s.LoadImage(testimage.Web(b))
	e := &lbBench{s: s, cluster: "lbb", serverPI: s.PID()}
	// Container isolation (runc), as every earlier run of these benchmarks:
	// what they measure is the load balancer, and under a gVisor sandbox
	// the tasks' network stack would dwarf it.
	e.aws(nil, "ecs", "create-cluster", "--cluster-name", e.cluster, "--settings", "name=isolation,value=container")
	b.Cleanup(func() { s.AWS("ecs", "delete-service", "--cluster", e.cluster, "--service", "web", "--force") })
	var subnets struct {
		Subnets []struct{ SubnetId, VpcId string }
	}
	e.aws(&subnets, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	e.subnet = subnets.Subnets[0].SubnetId
	var lb struct {
		LoadBalancers []struct{ LoadBalancerArn, DNSName string }
	}
	e.aws(&lb, "elbv2", "create-load-balancer", "--name", "bench", "--subnets", subnets.Subnets[0].SubnetId, subnets.Subnets[1].SubnetId)
	e.lbARN, e.dns = lb.LoadBalancers[0].LoadBalancerArn, lb.LoadBalancers[0].DNSName
	var tg struct {
		TargetGroups []struct{ TargetGroupArn string }
	}
	e.aws(&tg, append([]string{"elbv2", "create-target-group", "--name", "bench", "--protocol", "HTTP", "--port", "80", "--vpc-id", subnets.Subnets[0].VpcId,
		"--target-type", "ip", "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2", "--healthy-threshold-count", "2"}, extraTG...)...)
	e.tg = tg.TargetGroups[0].TargetGroupArn
	e.aws(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", e.tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0")
	e.aws(nil, "elbv2", "create-listener", "--load-balancer-arn", e.lbARN, "--protocol", "HTTP", "--port", "80", "--default-actions", "Type=forward,TargetGroupArn="+e.tg)
	script := "trap 'exit 0' TERM; mkdir -p /srv; hostname > /srv/index.html; httpd -f -p 80 -h /srv & wait"
	cmd, _ := json.Marshal([]string{"sh", "-c", script})
	e.aws(nil, "ecs", "register-task-definition", "--cli-input-json", fmt.Sprintf(`{"family":"lbweb","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"1024","memory":"2048",
		"containerDefinitions":[{"name":"web","image":"nginx:latest","command":%s,"portMappings":[{"containerPort":80}],"stopTimeout":2}]}`, cmd))
	e.aws(nil, "ecs", "create-service", "--cluster", e.cluster, "--service-name", "web", "--task-definition", "lbweb",
		"--desired-count", strconv.Itoa(n), "--launch-type", "FARGATE",
		"--network-configuration", fmt.Sprintf("awsvpcConfiguration={subnets=[%s],assignPublicIp=DISABLED}", e.subnet),
		"--load-balancers", "targetGroupArn="+e.tg+",containerName=web,containerPort=80")
	e.waitHealthy(b, n, 3*time.Minute)
	return e
}

// waitHealthy waits for n healthy targets and notes the tasks behind them.
func (e *lbBench) waitHealthy(b *testing.B, n int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		var th struct {
			TargetHealthDescriptions []struct {
				Target       struct{ Id string }
				TargetHealth struct{ State string }
			}
		}
		e.aws(&th, "elbv2", "describe-target-health", "--target-group-arn", e.tg)
		healthy := 0
		for _, d := range th.TargetHealthDescriptions {
			if d.TargetHealth.State == "healthy" {
				healthy++
			}
		}
		if healthy == n && len(th.TargetHealthDescriptions) == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("targets not %d healthy after %v: %+v", n, timeout, th)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var lt struct{ TaskArns []string }
	e.aws(&lt, "ecs", "list-tasks", "--cluster", e.cluster, "--service-name", "web", "--desired-status", "RUNNING")
	e.tasks, e.taskIPs = nil, nil
	for _, arn := range lt.TaskArns {
		var dt struct {
			Tasks []struct {
				Attachments []struct {
					Details []struct{ Name, Value string } `json:"details"`
				} `json:"attachments"`
			} `json:"tasks"`
		}
		e.aws(&dt, "ecs", "describe-tasks", "--cluster", e.cluster, "--tasks", arn)
		for _, a := range dt.Tasks[0].Attachments {
			for _, d := range a.Details {
				if d.Name == "privateIPv4Address" {
					e.tasks = append(e.tasks, arn[strings.LastIndex(arn, "/")+1:])
					e.taskIPs = append(e.taskIPs, d.Value)
				}
			}
		}
	}
}

// cpuNanos is CPU time used so far by the server process and the tasks.
func (e *lbBench) cpuNanos(b *testing.B, tasks []string) (server, taskCPU int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.serverPI))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	server = (ut + st) * int64(time.Second) / 100 // USER_HZ
	for _, id := range tasks {
		v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct/gantry", id, "cpuacct.usage"))
		if err != nil {
			b.Fatalf("task cgroup: %v", err)
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		taskCPU += n
	}
	return server, taskCPU
}

type loadResult struct {
	rps, p99ms, cores float64
	// The parts of cores: the gantry server, the tasks, the load generator.
	server, tasks, client float64
	errors                int
	// What each path really does per request: TCP connections the load
	// generator opened, and connections the tasks accepted (from the
	// PassiveOpens counter of their network namespaces).
	clientConns, taskConns float64
}

// tcpPassiveOpens is the number of TCP connections accepted so far in the
// network namespaces of the given tasks.
func tcpPassiveOpens(b *testing.B, tasks []string) int64 {
	var total int64
	for _, id := range tasks {
		// The cgroup also holds httpd's short-lived children (one per
		// connection): any process of the task that is still there will do.
		var data []byte
		filepath.WalkDir(filepath.Join("/sys/fs/cgroup/cpuacct/gantry", id), func(path string, d os.DirEntry, err error) error {
			if err != nil || data != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			procs, _ := os.ReadFile(path)
			for _, pid := range strings.Fields(string(procs)) {
				if data, err = os.ReadFile("/proc/" + pid + "/net/snmp"); err == nil {
					return nil
				}
			}
			data = nil
			return nil
		})
		if data == nil {
			b.Fatalf("task %s: no process to read its TCP counters from", id)
		}
		// Two "Tcp:" lines: the field names, then the values.
		var names []string
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Tcp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			if i := slices.Index(names, "PassiveOpens"); i > 0 && i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				total += n
			}
		}
	}
	return total
}

// drive runs lbConns closed-loop clients for lbLoadFor, sending requests
// to urls in turn.
func drive(urls []string) (n int, lat []time.Duration, errs int, wall time.Duration, dials int64) {
	var next atomic.Uint64
	var mu sync.Mutex
	var wg sync.WaitGroup
	var dialed atomic.Int64
	d := &net.Dialer{}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: lbConns,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Add(1)
			return d.DialContext(ctx, network, addr)
		}}}
	start := time.Now()
	end := start.Add(lbLoadFor)
	for range lbConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(end) {
				t0 := time.Now()
				resp, err := client.Get(urls[next.Add(1)%uint64(len(urls))])
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return len(lat), lat, errs, time.Since(start), dialed.Load()
}

// selfCPU is this process's CPU time: the load generator's.
func selfCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func (e *lbBench) measure(b *testing.B, urls []string, tasks []string, withServer bool) loadResult {
	o0 := tcpPassiveOpens(b, tasks)
	s0, t0 := e.cpuNanos(b, tasks)
	c0 := selfCPU()
	n, lat, errs, wall, dials := drive(urls)
	c1 := selfCPU()
	s1, t1 := e.cpuNanos(b, tasks)
	o1 := tcpPassiveOpens(b, tasks)
	r := loadResult{rps: float64(n) / wall.Seconds(), errors: errs,
		tasks: float64(t1-t0) / float64(wall), client: float64(c1-c0) / float64(wall),
		clientConns: float64(dials) / float64(max(n, 1)), taskConns: float64(o1-o0) / float64(max(n, 1))}
	if withServer {
		r.server = float64(s1-s0) / float64(wall)
	}
	r.cores = r.server + r.tasks + r.client
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p99ms = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	return r
}

func BenchmarkLBThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	e := setupLB(b, 3)
	// What the server burns with the service up and no traffic (health
	// checks, reconcile, metrics, the ECS scheduler) is part of what the
	// load balancer's cores include.
	s0, _ := e.cpuNanos(b, nil)
	idleFor := 10 * time.Second
	time.Sleep(idleFor)
	s1, _ := e.cpuNanos(b, nil)
	idleCores := float64(s1-s0) / float64(idleFor)
	// spreads is a diagnostic, not part of the ratio: the direct load sent
	// to the 3 tasks in turn, which tells how much of the load balancer's
	// extra cost is the tasks' own cost of taking the load in three parts.
	var lbs, directs, spreads []loadResult
	var spreadURLs []string
	for _, ip := range e.taskIPs {
		spreadURLs = append(spreadURLs, "http://"+ip+"/")
	}
	for b.Loop() {
		settleTimeWait(b)
		lbs = append(lbs, e.measure(b, []string{"http://" + e.dns + "/"}, e.tasks, true))
		settleTimeWait(b)
		directs = append(directs, e.measure(b, []string{"http://" + e.taskIPs[0] + "/"}, e.tasks[:1], false))
		settleTimeWait(b)
		spreads = append(spreads, e.measure(b, spreadURLs, e.tasks, false))
		l, d, sp := lbs[len(lbs)-1], directs[len(directs)-1], spreads[len(spreads)-1]
		b.Logf("lb %.0f req/s on %.2f cores (server %.2f, tasks %.2f, client %.2f); direct %.0f req/s on %.2f cores (task %.2f, client %.2f); per core %.2f",
			l.rps, l.cores, l.server, l.tasks, l.client, d.rps, d.cores, d.tasks, d.client, (l.rps/l.cores)/(d.rps/d.cores))
		b.Logf("connections per request: lb: client %.3f, tasks accepted %.3f; direct: client %.3f, task accepted %.3f",
			l.clientConns, l.taskConns, d.clientConns, d.taskConns)
		b.Logf("CPU us per request: lb: server %.0f, tasks %.0f, client %.0f; direct: task %.0f, client %.0f; direct to 3 tasks in turn (%.0f req/s): tasks %.0f, client %.0f",
			l.server/l.rps*1e6, l.tasks/l.rps*1e6, l.client/l.rps*1e6, d.tasks/d.rps*1e6, d.client/d.rps*1e6, sp.rps, sp.tasks/sp.rps*1e6, sp.client/sp.rps*1e6)
	}
	med := func(rs []loadResult, f func(loadResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	errs := 0
	for _, r := range append(slices.Clone(lbs), directs...) {
		errs += r.errors
	}
	lbRPS, dRPS := med(lbs, func(r loadResult) float64 { return r.rps }), med(directs, func(r loadResult) float64 { return r.rps })
	lbPer := med(lbs, func(r loadResult) float64 { return r.rps / r.cores })
	dPer := med(directs, func(r loadResult) float64 { return r.rps / r.cores })
	b.ReportMetric(lbRPS, "lb-req/s")
	b.ReportMetric(dRPS, "direct-req/s")
	b.ReportMetric(med(lbs, func(r loadResult) float64 { return r.p99ms }), "lb-p99-ms")
	b.ReportMetric(med(directs, func(r loadResult) float64 { return r.p99ms }), "direct-p99-ms")
	b.ReportMetric(med(lbs, func(r loadResult) float64 { return r.cores }), "lb-cores")
	b.ReportMetric(med(directs, func(r loadResult) float64 { return r.cores }), "direct-cores")
	// Where the cores went, in CPU microseconds per request, to show what
	// the extra hop costs.
	perReq := func(rs []loadResult, f func(loadResult) float64) float64 {
		return med(rs, func(r loadResult) float64 { return f(r) / r.rps * 1e6 })
	}
	b.ReportMetric(perReq(lbs, func(r loadResult) float64 { return r.server }), "lb-server-us/req")
	b.ReportMetric(perReq(lbs, func(r loadResult) float64 { return r.tasks }), "lb-tasks-us/req")
	b.ReportMetric(perReq(lbs, func(r loadResult) float64 { return r.client }), "lb-client-us/req")
	b.ReportMetric(perReq(directs, func(r loadResult) float64 { return r.tasks }), "direct-task-us/req")
	b.ReportMetric(perReq(directs, func(r loadResult) float64 { return r.client }), "direct-client-us/req")
	b.ReportMetric(perReq(spreads, func(r loadResult) float64 { return r.tasks }), "direct3-tasks-us/req")
	b.ReportMetric(perReq(spreads, func(r loadResult) float64 { return r.client }), "direct3-client-us/req")
	b.ReportMetric(med(lbs, func(r loadResult) float64 { return r.clientConns }), "lb-client-conns/req")
	b.ReportMetric(med(lbs, func(r loadResult) float64 { return r.taskConns }), "lb-task-conns/req")
	b.ReportMetric(med(directs, func(r loadResult) float64 { return r.clientConns }), "direct-client-conns/req")
	b.ReportMetric(med(directs, func(r loadResult) float64 { return r.taskConns }), "direct-task-conns/req")
	b.ReportMetric(lbPer, "lb-req/s/core")
	b.ReportMetric(dPer, "direct-req/s/core")
	b.ReportMetric(lbPer/dPer, "lb/direct-per-core")
	// The same ratio taken within each iteration, whose two measurements
	// are seconds apart, then the median: on a shared machine whose load
	// drifts between iterations this pairs like with like.
	paired := make([]float64, len(lbs))
	for i := range lbs {
		paired[i] = (lbs[i].rps / lbs[i].cores) / (directs[i].rps / directs[i].cores)
	}
	slices.Sort(paired)
	b.ReportMetric(paired[len(paired)/2], "lb/direct-per-core-paired")
	b.ReportMetric(idleCores, "idle-server-cores")
	b.ReportMetric(float64(errs), "errors")
	b.ReportMetric(0, "ns/op")
}

// settleTimeWait waits for the host's TIME_WAIT sockets from earlier
// measurements to expire (60 s at most). busybox httpd closes every
// connection, so each 5-second measurement leaves some ten thousand; with
// the default 28,232 local ports, connect() to one address then spends
// its time searching for a free port, and the direct path, all to one
// task, slowed down fourfold by its third measurement.
func settleTimeWait(b *testing.B) {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile("/proc/net/sockstat")
		if err != nil {
			return
		}
		_, rest, _ := strings.Cut(string(data), " tw ")
		tw, _ := strconv.Atoi(strings.Fields(rest + " 0")[0])
		if tw < 1000 {
			return
		}
		time.Sleep(time.Second)
	}
	b.Logf("TIME_WAIT sockets did not drain; measuring anyway")
}

// firstNewAnswer polls the listener until a task not in old answers.
func firstNewAnswer(b *testing.B, url string, old map[string]bool, timeout time.Duration) time.Time {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if h := strings.TrimSpace(string(body)); resp.StatusCode == 200 && h != "" && !old[h] {
				return time.Now()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("no answer from a new task within %v", timeout)
	return time.Time{}
}

func (e *lbBench) hostnames(b *testing.B) map[string]bool {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	out := map[string]bool{}
	for _, ip := range e.taskIPs {
		resp, err := client.Get("http://" + ip + "/")
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out[strings.TrimSpace(string(body))] = true
	}
	return out
}

func BenchmarkLBScaleOut(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	// Alarm periods of 5 s instead of a minute: target tracking needs 3
	// datapoints above the target, so the policy alone waits about 15 s.
	const period = 5 * time.Second
	b.Setenv("GANTRY_AUTOSCALING_PERIOD", period.String())
	e := setupLB(b, 1)
	url := "http://" + e.dns + "/"
	target := []string{"--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount", "--resource-id", "service/" + e.cluster + "/web"}
	label := e.lbARN[strings.Index(e.lbARN, ":loadbalancer/")+len(":loadbalancer/"):] + "/" + e.tg[strings.LastIndex(e.tg, ":")+1:]
	scaleTo := func(n int) {
		e.aws(nil, "ecs", "update-service", "--cluster", e.cluster, "--service", "web", "--desired-count", strconv.Itoa(n))
		e.waitHealthy(b, n, 3*time.Minute)
	}
	var viaPolicy, floor []time.Duration
	for b.Loop() {
		// Floor: the scale-out asked for directly.
		old := e.hostnames(b)
		t0 := time.Now()
		e.aws(nil, "ecs", "update-service", "--cluster", e.cluster, "--service", "web", "--desired-count", "2")
		floor = append(floor, firstNewAnswer(b, url, old, 3*time.Minute).Sub(t0))
		e.waitHealthy(b, 2, 3*time.Minute)
		scaleTo(1)

		// The same through a target-tracking policy on the request count.
		e.aws(nil, append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "1", "--max-capacity", "2"}, target...)...)
		e.aws(nil, append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "req", "--policy-type", "TargetTrackingScaling",
			"--target-tracking-scaling-policy-configuration", `{"TargetValue":50,"PredefinedMetricSpecification":{"PredefinedMetricType":"ALBRequestCountPerTarget","ResourceLabel":"` + label + `"},"ScaleOutCooldown":0,"ScaleInCooldown":3600}`}, target...)...)
		old = e.hostnames(b)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // about 100 requests/s: 500 per period against a target of 50
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if resp, err := client.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
		t0 = time.Now()
		viaPolicy = append(viaPolicy, firstNewAnswer(b, url, old, 3*time.Minute).Sub(t0))
		close(stop)
		wg.Wait()
		e.aws(nil, append([]string{"application-autoscaling", "deregister-scalable-target"}, target...)...)
		e.waitHealthy(b, 2, 3*time.Minute)
		scaleTo(1)
	}
	med := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2].Seconds()
	}
	b.ReportMetric(med(viaPolicy), "step-to-serving-s")
	b.ReportMetric(med(floor), "floor-update-service-s")
	b.ReportMetric(med(viaPolicy)/med(floor), "ratio")
	b.ReportMetric(3*period.Seconds(), "alarm-wait-s")
	b.ReportMetric(0, "ns/op")
}
