// Package bench measures Gantry against its floor. Run it with
//
//	go test -run '^$' -bench . -benchtime 50x -timeout 30m ./bench
//
// and read docs/benchmarks.md for the figures and how to compare them: these
// machines are noisy, so only ratios within one run mean anything.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

const image = "gantry-test/busybox:latest"

// A container that exits promptly on SIGTERM, so stopping does not wait out
// the stop timeout and skew the next start.
var idle = []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"}

// runcIsolation pins a benchmark's server to container isolation: its
// floor (ctr run, the host, a direct connection) runs on runc and the
// host's kernel. Sandbox isolation, the default, has its own benchmarks
// against the runsc floor (isolation_test.go).
var runcIsolation = []string{"--default-isolation", "container"}

type env struct {
	s      *testenv.Server
	ecs    *ecs.Client
	subnet string
}

func setup(b *testing.B) *env {
	b.Helper()
	s := testenv.Start(b, runcIsolation...)
	s.LoadImage(testimage.Busybox(b))
	e := &env{s: s, ecs: s.ECS(), subnet: s.DefaultSubnet()}
	ctx := context.Background()
	if _, err := e.ecs.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String("bench")}); err != nil {
		b.Fatal(err)
	}
	_, err := e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family:                  aws.String("idle"),
		NetworkMode:             types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("256"),
		Memory:                  aws.String("512"),
		ContainerDefinitions: []types.ContainerDefinition{{
			Name: aws.String("idle"), Image: aws.String(image), Command: idle, StopTimeout: aws.Int32(2),
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func (e *env) run(ctx context.Context, count int32) ([]string, error) {
	out, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
		Cluster: aws.String("bench"), TaskDefinition: aws.String("idle"), Count: aws.Int32(count),
		LaunchType: types.LaunchTypeFargate,
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
			Subnets: []string{e.subnet},
		}},
	})
	if err != nil {
		return nil, err
	}
	if len(out.Failures) > 0 {
		return nil, fmt.Errorf("run-task failures: %+v", out.Failures)
	}
	arns := make([]string, len(out.Tasks))
	for i, t := range out.Tasks {
		arns[i] = aws.ToString(t.TaskArn)
	}
	return arns, nil
}

// waitStatus polls DescribeTasks until every task reaches status.
func (e *env) waitStatus(ctx context.Context, arns []string, status string, poll time.Duration) error {
	for {
		pending := 0
		for i := 0; i < len(arns); i += 100 {
			batch := arns[i:min(i+100, len(arns))]
			out, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("bench"), Tasks: batch})
			if err != nil {
				return err
			}
			for _, t := range out.Tasks {
				if aws.ToString(t.LastStatus) == "STOPPED" && status != "STOPPED" {
					return fmt.Errorf("task %s stopped: %s", aws.ToString(t.TaskArn), aws.ToString(t.StoppedReason))
				}
				if aws.ToString(t.LastStatus) != status {
					pending++
				}
			}
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", status, ctx.Err())
		case <-time.After(poll):
		}
	}
}

func (e *env) stopAll(b *testing.B, arns []string) {
	ctx := context.Background()
	for _, arn := range arns {
		if _, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("bench"), Task: aws.String(arn)}); err != nil {
			b.Error(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := e.waitStatus(wctx, arns, "STOPPED", 200*time.Millisecond); err != nil {
		b.Error(err)
	}
}

func report(b *testing.B, d []time.Duration) { reportAs(b, "", d) }

// reportAs reports the latencies' p50 and p99 under names starting with
// prefix.
func reportAs(b *testing.B, prefix string, d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), prefix+"p50-ms")
	b.ReportMetric(pct(0.99), prefix+"p99-ms")
	b.ReportMetric(0, "ns/op") // the per-op time is the latency above, not loop time
}

// startedAt is when the last of the tasks became RUNNING, as DescribeTasks
// reports it (the server's clock, which is this host's).
func (e *env) startedAt(ctx context.Context, arns []string) (time.Time, error) {
	out, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("bench"), Tasks: arns})
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, t := range out.Tasks {
		if t.StartedAt == nil {
			return time.Time{}, fmt.Errorf("task %s has no startedAt", aws.ToString(t.TaskArn))
		}
		if t.StartedAt.After(last) {
			last = *t.StartedAt
		}
	}
	return last, nil
}

// BenchmarkStart compares RunTask → RUNNING (cached image) with `ctr run -d`
// of the same image on the same containerd, in one run.
//
// The headline latency is from sending RunTask to the task's startedAt (the
// moment it became RUNNING, as DescribeTasks reports it). Polling
// DescribeTasks fast enough to see that moment within a few milliseconds
// would itself load this 2-core host (about a third of a core at 5 ms), so
// the poll is every 20 ms, and what it observed is reported beside
// ("observed-", up to one poll late).
func BenchmarkStart(b *testing.B) {
	e := setup(b)
	b.Run("gantry-runtask-to-running", func(b *testing.B) {
		ctx := context.Background()
		var lat, seen []time.Duration
		var all []string
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			arns, err := e.run(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			err = e.waitStatus(wctx, arns, "RUNNING", 20*time.Millisecond)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			seen = append(seen, time.Since(t0))
			at, err := e.startedAt(ctx, arns)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, at.Sub(t0))
			all = append(all, arns...)
			// Keep the host as quiet as for the floor: one task at a time.
			b.StopTimer()
			e.stopAll(b, arns)
			b.StartTimer()
		}
		report(b, lat)
		reportAs(b, "observed-", seen)
		reportSteps(b, e.s.LogPath(), "")
	})
	b.Run("ctr-run-floor", func(b *testing.B) { ctrRun(b, e) })
	// Gantry applies Docker's default seccomp profile to every container
	// (Fargate's rule); runc compiles it on each start. The same for ctr
	// shows what that part of the gap is.
	b.Run("ctr-run-seccomp-floor", func(b *testing.B) { ctrRun(b, e, "--seccomp") })
}

// ctrRun measures `ctr run -d` of the benchmark image on the server's
// containerd: the floor a task start is compared with.
func ctrRun(b *testing.B, e *env, flags ...string) {
	addr := containerd.OwnSocket(e.s.DataDir)
	ref := "docker.io/" + image
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		id := "floor-" + strconv.Itoa(len(flags)) + "-" + strconv.Itoa(i)
		t0 := time.Now()
		args := append([]string{"-a", addr, "-n", containerd.Namespace, "run", "-d"}, flags...)
		out, err := exec.Command("ctr", append(append(args, ref, id), idle...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("ctr run: %v\n%s", err, out)
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		exec.Command("ctr", "-a", addr, "-n", containerd.Namespace, "task", "kill", "-s", "KILL", id).Run()
		for j := 0; j < 100; j++ {
			if exec.Command("ctr", "-a", addr, "-n", containerd.Namespace, "task", "rm", id).Run() == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		exec.Command("ctr", "-a", addr, "-n", containerd.Namespace, "container", "rm", id).Run()
		b.StartTimer()
	}
	report(b, lat)
}

// BenchmarkDescribeTasks sends DescribeTasks for 10 running tasks at a steady
// 200 requests/s for 10 s and reports the latency percentiles.
func BenchmarkDescribeTasks(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	arns, err := e.run(ctx, 10)
	if err != nil {
		b.Fatal(err)
	}
	defer e.stopAll(b, arns)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := e.waitStatus(wctx, arns, "RUNNING", 100*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		const rate, seconds = 200, 10
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / rate)
		for i := 0; i < rate*seconds; i++ {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				_, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("bench"), Tasks: arns})
				d := time.Since(t0)
				if err != nil {
					b.Error(err)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		tick.Stop()
		wg.Wait()
		report(b, lat)
	}
}

// BenchmarkHundredTasks runs 100 tasks at once and reports the server's own
// resident memory per running task.
func BenchmarkHundredTasks(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	for n := 0; n < b.N; n++ {
		before := rssKiB(e.s.PID())
		var arns []string
		t0 := time.Now()
		for i := 0; i < 10; i++ {
			got, err := e.run(ctx, 10)
			if err != nil {
				b.Fatal(err)
			}
			arns = append(arns, got...)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		err := e.waitStatus(wctx, arns, "RUNNING", 500*time.Millisecond)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "s-to-all-running")
		after := rssKiB(e.s.PID())
		b.ReportMetric(float64(after-before)/100, "server-KiB/task")
		b.ReportMetric(float64(after)/1024, "server-MiB-total")
		b.StopTimer()
		e.stopAll(b, arns)
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// reportSteps prints the median of each start step the agent logged ("task
// running" lines): where the time between RunTask and RUNNING went. With
// taskIDs, only those tasks' lines count, and label names them.
func reportSteps(b *testing.B, logPath, label string, taskIDs ...string) {
	raw, err := os.ReadFile(logPath)
	if err != nil {
		b.Logf("no server log: %v", err)
		return
	}
	want := map[string]bool{}
	for _, id := range taskIDs {
		want["task="+id] = true
	}
	steps := map[string][]time.Duration{}
	var order []string
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.Contains(line, `msg="task running"`) {
			continue
		}
		fields := strings.Fields(line)
		mine := len(want) == 0
		for _, f := range fields {
			mine = mine || want[f]
		}
		if !mine {
			continue
		}
		for _, f := range fields {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				continue
			}
			if _, seen := steps[k]; !seen {
				order = append(order, k)
			}
			steps[k] = append(steps[k], d)
		}
	}
	// One line: the benchmark's log keeps only the first few.
	var parts []string
	for _, k := range order {
		d := steps[k]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(d[len(d)/2].Microseconds())/1000))
	}
	if len(parts) > 0 {
		b.Logf("%sstart steps, median ms over %d starts: %s", label, len(steps["total"]), strings.Join(parts, ", "))
	}
}
