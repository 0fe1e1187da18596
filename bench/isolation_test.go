package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/containerd/containerd"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent/local"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// isoEnv is a server with one cluster per isolation mode.
type isoEnv struct {
	s      *testenv.Server
	ecs    *ecs.Client
	subnet string
}

func isoSetup(b *testing.B, families map[string][]string, serverArgs ...string) *isoEnv {
	b.Helper()
	// Without the sandbox pool unless asked: the benchmarks measure what a
	// sandbox's own boot costs, and read tasks' cgroups by their ids.
	s := testenv.Start(b, append([]string{"--sandbox-pool", "0"}, serverArgs...)...)
	s.LoadImage(testimage.Busybox(b))
	e := &isoEnv{s: s, ecs: s.ECS(), subnet: s.DefaultSubnet()}
	ctx := context.Background()
	for _, mode := range []string{"container", "sandbox"} {
		_, err := e.ecs.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String(mode),
			Settings: []types.ClusterSetting{{Name: "isolation", Value: aws.String(mode)}}})
		if err != nil {
			b.Fatalf("create %s cluster: %v", mode, err)
		}
	}
	for family, cmd := range families {
		_, err := e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
			Family: aws.String(family), NetworkMode: types.NetworkModeAwsvpc,
			RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
			Cpu:                     aws.String("1024"), Memory: aws.String("2048"),
			ContainerDefinitions: []types.ContainerDefinition{{
				Name: aws.String("main"), Image: aws.String(image), Command: cmd, StopTimeout: aws.Int32(2),
			}},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return e
}

// start runs one task of family in the mode's cluster and waits until it
// is RUNNING; it returns the task's ARN and RunTask → startedAt.
func (e *isoEnv) start(b *testing.B, mode, family string) (string, time.Duration) {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now()
	out, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
		Cluster: aws.String(mode), TaskDefinition: aws.String(family), LaunchType: types.LaunchTypeFargate,
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
	})
	if err != nil || len(out.Tasks) != 1 {
		b.Fatalf("run-task in %s: %v %+v", mode, err, out)
	}
	arn := aws.ToString(out.Tasks[0].TaskArn)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		d, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(mode), Tasks: []string{arn}})
		if err != nil {
			b.Fatal(err)
		}
		t := d.Tasks[0]
		switch aws.ToString(t.LastStatus) {
		case "RUNNING":
			return arn, t.StartedAt.Sub(t0)
		case "STOPPED":
			b.Fatalf("%s task stopped: %s", mode, aws.ToString(t.StoppedReason))
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s task not RUNNING after 2 minutes", mode)
		}
	}
}

// startStop starts a task as start does, and stops it with the timer
// stopped; it returns the task's id and RunTask → startedAt.
func (e *isoEnv) startStop(b *testing.B, mode, family string) (string, time.Duration) {
	b.Helper()
	arn, d := e.start(b, mode, family)
	b.StopTimer()
	e.stop(b, mode, arn)
	b.StartTimer()
	return arn[strings.LastIndex(arn, "/")+1:], d
}

// settle gives each start a settled host: what the one before left to do
// in the background (its clean-up, a pool's refill) would otherwise fall
// on the next, the floor's included.
func settle(b *testing.B) {
	b.StopTimer()
	time.Sleep(time.Second)
	b.StartTimer()
}

func (e *isoEnv) stop(b *testing.B, mode string, arns ...string) {
	b.Helper()
	ctx := context.Background()
	for _, arn := range arns {
		if _, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(mode), Task: aws.String(arn)}); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		d, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(mode), Tasks: arns})
		if err != nil {
			b.Fatal(err)
		}
		left := 0
		for _, t := range d.Tasks {
			if aws.ToString(t.LastStatus) != "STOPPED" {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d %s tasks not STOPPED after 2 minutes", left, mode)
		}
	}
}

func median(d []time.Duration) time.Duration {
	d = append([]time.Duration(nil), d...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkIsolationStart compares RunTask → RUNNING (cached image, one
// idle container) in a sandbox cluster and a container cluster with the
// floor for a sandbox: `runsc run --detach` of a bundle of the same
// busybox, with the flags Gantry gives runsc (local.RunscFlags: the same
// platform and root file system handling), in a network namespace of its
// own with loopback up (what each sandbox needs) and a cgroup. A fourth
// start splits the gap: the same bundle through containerd and the shim
// Gantry uses, with nothing of Gantry's own (viaContainerd). The four are
// interleaved in each iteration, so the host's noise falls on all.
func BenchmarkIsolationStart(b *testing.B) {
	e := isoSetup(b, map[string][]string{"idle": idle})
	floor := newRunscFloor(b)
	client, err := containerd.New(e.s.ContainerdAddress())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	var sandbox, container, runsc, bare []time.Duration
	var sandboxIDs, containerIDs []string
	for i := 0; i < b.N; i++ {
		settle(b)
		id, d := e.startStop(b, "sandbox", "idle")
		sandbox, sandboxIDs = append(sandbox, d), append(sandboxIDs, id)

		settle(b)
		id, d = e.startStop(b, "container", "idle")
		container, containerIDs = append(container, d), append(containerIDs, id)

		settle(b)
		runsc = append(runsc, floor.run(b, i))

		settle(b)
		bare = append(bare, floor.viaContainerd(b, client, i))
	}
	b.ReportMetric(ms(median(sandbox)), "sandbox-p50-ms")
	b.ReportMetric(ms(median(container)), "container-p50-ms")
	b.ReportMetric(ms(median(runsc)), "runsc-floor-p50-ms")
	b.ReportMetric(float64(median(sandbox))/float64(median(runsc)), "sandbox/floor")
	b.ReportMetric(ms(median(bare)), "containerd-alone-p50-ms")
	b.ReportMetric(float64(median(bare))/float64(median(runsc)), "containerd-alone/floor")
	b.ReportMetric(0, "ns/op")
	reportSteps(b, e.s.LogPath(), "sandbox ", sandboxIDs...)
	reportSteps(b, e.s.LogPath(), "container ", containerIDs...)
}

// BenchmarkIsolationStartPooled is BenchmarkIsolationStart's sandbox start
// with the server's sandbox pool on (--sandbox-pool 1): each task takes
// over a sandbox booted before its RunTask, next to the same runsc floor.
// Every measured start must have come from the pool: each waits for the
// pool to have one ready, and the server's log must say it was taken.
func BenchmarkIsolationStartPooled(b *testing.B) {
	e := isoSetup(b, map[string][]string{"idle": idle}, "--sandbox-pool", "1")
	floor := newRunscFloor(b)
	client, err := containerd.New(e.s.ContainerdAddress())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	// The pool fills for a subnet once a sandboxed task starts in it.
	b.StopTimer()
	arn, _ := e.start(b, "sandbox", "idle")
	e.stop(b, "sandbox", arn)
	b.StartTimer()
	var pooled, runsc []time.Duration
	var ids []string
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		waitPooled(b, client)
		b.StartTimer()
		settle(b)
		id, d := e.startStop(b, "sandbox", "idle")
		pooled, ids = append(pooled, d), append(ids, id)

		settle(b)
		runsc = append(runsc, floor.run(b, i))
	}
	raw, err := os.ReadFile(e.s.LogPath())
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		if !regexp.MustCompile(`msg="sandbox taken from the pool" task=` + id).Match(raw) {
			b.Fatalf("task %s did not take a pooled sandbox", id)
		}
	}
	b.ReportMetric(ms(median(pooled)), "pooled-sandbox-p50-ms")
	b.ReportMetric(ms(median(runsc)), "runsc-floor-p50-ms")
	b.ReportMetric(float64(median(pooled))/float64(median(runsc)), "pooled-sandbox/floor")
	b.ReportMetric(0, "ns/op")
	reportSteps(b, e.s.LogPath(), "pooled sandbox ", ids...)
}

// waitPooled waits until the server's sandbox pool has a sandbox ready: a
// running root container of the pool's that no task has taken.
func waitPooled(b *testing.B, client *containerd.Client) {
	b.Helper()
	ctx := namespaces.WithNamespace(context.Background(), gcontainerd.Namespace)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cs, err := client.Containers(ctx, `labels."gantry.pool"`)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range cs {
			labels, _ := c.Labels(ctx)
			if _, taken := labels["gantry.task"]; taken {
				continue
			}
			if tk, err := c.Task(ctx, nil); err == nil {
				if st, err := tk.Status(ctx); err == nil && st.Status == containerd.Running {
					return
				}
			}
		}
	}
	b.Fatal("the sandbox pool had no sandbox ready within a minute")
}

// runscFloor starts sandboxes with runsc alone.
type runscFloor struct {
	dir     string // the bundle: rootfs and config.json
	root    string // runsc's state
	wrapper string // runsc with local.RunscFlags, for containerd's shim
}

func newRunscFloor(b *testing.B) *runscFloor {
	b.Helper()
	f := &runscFloor{dir: b.TempDir(), root: b.TempDir()}
	f.wrapper = filepath.Join(f.dir, "runsc")
	script := "#!/bin/sh\nexec " + local.DefaultRunsc + " " + strings.Join(local.RunscFlags(), " ") + ` "$@"` + "\n"
	if err := os.WriteFile(f.wrapper, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	// runsc makes /gbench9/<id> in every hierarchy and removes <id>, and
	// keeps an empty network namespace mounted in its root directory.
	b.Cleanup(func() {
		unix.Unmount(filepath.Join(f.root, "null-netns"), unix.MNT_DETACH)
		unix.Unmount(filepath.Join("/run/containerd/runc", floorNamespace, "null-netns"), unix.MNT_DETACH)
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/gbench9")
		for _, d := range dirs {
			subs, _ := filepath.Glob(d + "/gbench9-*")
			for _, sub := range subs {
				os.Remove(sub)
			}
			os.Remove(d)
		}
	})
	rootfs := filepath.Join(f.dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	bb, err := os.ReadFile(testimage.BusyboxPath)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(local.DefaultRunsc, "spec", "--bundle", f.dir, "--")
	cmd.Args = append(cmd.Args, idle...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("runsc spec: %v\n%s", err, out)
	}
	return f
}

// prepare makes what the floor's sandbox id needs, as Gantry's sandboxes
// have it: a network namespace of its own with loopback up (removed by
// the returned func), and a cgroup; it returns the bundle's spec for them.
func (f *runscFloor) prepare(b *testing.B, id string) (spec *specs.Spec, undo func()) {
	b.Helper()
	ns := id
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v %s", err, out)
	}
	undo = func() { exec.Command("ip", "netns", "del", ns).Run() }
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		undo()
		b.Fatalf("lo up: %v %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(f.dir, "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		b.Fatal(err)
	}
	spec.Linux.CgroupsPath = "/gbench9/" + id
	nss := spec.Linux.Namespaces[:0]
	for _, n := range spec.Linux.Namespaces {
		if n.Type != specs.NetworkNamespace {
			nss = append(nss, n)
		}
	}
	spec.Linux.Namespaces = append(nss, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/" + ns})
	spec.Root = &specs.Root{Path: filepath.Join(f.dir, "rootfs")}
	return spec, undo
}

// run starts the floor's i-th sandbox, returns how long `runsc run
// --detach` took, and removes it.
func (f *runscFloor) run(b *testing.B, i int) time.Duration {
	b.Helper()
	id := fmt.Sprintf("gbench9-%d-%d", os.Getpid(), i)
	spec, undo := f.prepare(b, id)
	defer undo()
	bundle := filepath.Join(f.dir, id)
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(bundle)
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o644); err != nil {
		b.Fatal(err)
	}
	runsc := func(args ...string) *exec.Cmd {
		return exec.Command(local.DefaultRunsc, append(append([]string{"--root", f.root}, local.RunscFlags()...), args...)...)
	}
	// The detached sandbox keeps the stdio it was given: a file, not a
	// pipe whose reader would wait for it to exit.
	logf, err := os.CreateTemp(f.root, "out-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(logf.Name())
	defer logf.Close()
	cmd := runsc("run", "--detach", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		out, _ := os.ReadFile(logf.Name())
		b.Fatalf("runsc run: %v\n%s", err, out)
	}
	b.StopTimer()
	runsc("kill", id, "KILL").Run()
	if out, err := runsc("delete", "--force", id).CombinedOutput(); err != nil {
		b.Errorf("runsc delete: %v %s", err, out)
	}
	b.StartTimer()
	return d
}

// viaContainerd starts the floor's i-th sandbox the way Gantry's reach
// runsc, through containerd and its runc v2 shim (a new one) with runsc as
// the runtime binary, but with none of Gantry's own work: the bundle's
// spec and root as they are, as `ctr run --rootfs` would. It returns
// NewContainer → Start returned, and removes the sandbox.
func (f *runscFloor) viaContainerd(b *testing.B, client *containerd.Client, i int) time.Duration {
	b.Helper()
	id := fmt.Sprintf("gbench9-ctrd-%d-%d", os.Getpid(), i)
	spec, undo := f.prepare(b, id)
	defer undo()
	ctx := namespaces.WithNamespace(context.Background(), floorNamespace)
	t0 := time.Now()
	c, err := client.NewContainer(ctx, id, containerd.WithSpec(spec),
		containerd.WithRuntime("io.containerd.runc.v2", &runcoptions.Options{BinaryName: f.wrapper}))
	if err != nil {
		b.Fatal(err)
	}
	tk, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		c.Delete(ctx)
		b.Fatal(err)
	}
	err = tk.Start(ctx)
	d := time.Since(t0)
	b.StopTimer()
	if _, derr := tk.Delete(ctx, containerd.WithProcessKill); derr != nil {
		b.Errorf("delete %s: %v", id, derr)
	}
	if derr := c.Delete(ctx); derr != nil {
		b.Errorf("delete %s: %v", id, derr)
	}
	b.StartTimer()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkIsolationIdleMemory runs idle tasks in each mode and reports the
// memory their processes hold per task: the proportional set size (PSS,
// shared pages split between their users) of every process in the task's
// cgroups and of those serving it from outside (the containerd shim, in
// sandbox mode runsc's gofer), found by the container's id on their
// command lines.
func BenchmarkIsolationIdleMemory(b *testing.B) {
	e := isoSetup(b, map[string][]string{"idle": idle})
	const tasks = 4
	for i := 0; i < b.N; i++ {
		per := map[string]float64{}
		for _, mode := range []string{"container", "sandbox"} {
			var arns []string
			for j := 0; j < tasks; j++ {
				arn, _ := e.start(b, mode, "idle")
				arns = append(arns, arn)
			}
			time.Sleep(3 * time.Second) // past start-up's transient allocations
			var total float64
			for _, arn := range arns {
				total += taskPSSMiB(b, e.s.DataDir, arn[strings.LastIndex(arn, "/")+1:])
			}
			per[mode] = total / tasks
			e.stop(b, mode, arns...)
		}
		b.ReportMetric(per["sandbox"], "sandbox-MiB/task")
		b.ReportMetric(per["container"], "container-MiB/task")
		b.ReportMetric(per["sandbox"]-per["container"], "sandbox-overhead-MiB/task")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkIsolationIdleMemoryPooled is BenchmarkIsolationIdleMemory's
// sandbox measurement for tasks that took a sandbox from the server's pool
// (--sandbox-pool 1), each waiting for the pool to have one ready, and what
// the pool's one ready sandbox holds itself.
func BenchmarkIsolationIdleMemoryPooled(b *testing.B) {
	e := isoSetup(b, map[string][]string{"idle": idle}, "--sandbox-pool", "1")
	client, err := containerd.New(e.s.ContainerdAddress())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	arn, _ := e.start(b, "sandbox", "idle") // the pool fills for the subnet
	e.stop(b, "sandbox", arn)
	const tasks = 4
	for i := 0; i < b.N; i++ {
		var ids, arns []string
		for j := 0; j < tasks; j++ {
			waitPooled(b, client)
			arn, _ := e.start(b, "sandbox", "idle")
			arns, ids = append(arns, arn), append(ids, arn[strings.LastIndex(arn, "/")+1:])
		}
		waitPooled(b, client)
		time.Sleep(3 * time.Second) // past start-up's transient allocations
		var total float64
		for _, id := range ids {
			name := testenv.TaskCgroup(e.s.DataDir, id)
			if name == id {
				b.Fatalf("task %s did not take a pooled sandbox", id)
			}
			total += cgroupPSSMiB(b, name)
		}
		ready, _ := os.ReadDir(filepath.Join(e.s.DataDir, "agent", "sandbox-pool"))
		if len(ready) != 1 {
			b.Fatalf("%d pooled sandboxes ready, want 1", len(ready))
		}
		b.ReportMetric(total/tasks, "pooled-sandbox-MiB/task")
		b.ReportMetric(cgroupPSSMiB(b, ready[0].Name()), "ready-pooled-sandbox-MiB")
		e.stop(b, "sandbox", arns...)
	}
	b.ReportMetric(0, "ns/op")
}

// taskPSSMiB sums the PSS of the task's processes.
func taskPSSMiB(b *testing.B, dataDir, taskID string) float64 {
	b.Helper()
	return cgroupPSSMiB(b, testenv.TaskCgroup(dataDir, taskID))
}

// cgroupPSSMiB sums the PSS of the processes in the cgroup /gantry/<name>
// and of those serving its containers from outside (the shim, runsc's
// gofers), found by the container ids on their command lines.
func cgroupPSSMiB(b *testing.B, name string) float64 {
	b.Helper()
	pids := map[int]bool{}
	var ids []string
	cg := filepath.Join("/sys/fs/cgroup/memory/gantry", name)
	ents, err := os.ReadDir(cg)
	if err != nil {
		b.Fatal(err)
	}
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		ids = append(ids, ent.Name())
		raw, _ := os.ReadFile(filepath.Join(cg, ent.Name(), "cgroup.procs"))
		for _, f := range strings.Fields(string(raw)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids[pid] = true
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if strings.Contains(string(raw), id) {
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				pids[pid] = true
			}
		}
	}
	var kib int64
	for pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				kib += n
			}
		}
	}
	return float64(kib) / 1024
}

// BenchmarkIsolationWorkload times a syscall-heavy workload (dd of one
// byte at a time: 400,000 read/write calls) and a CPU-bound one (an awk
// loop) inside a task of each mode (1 vCPU) and on the host, with the same
// busybox, in one run.
func BenchmarkIsolationWorkload(b *testing.B) {
	const (
		syscalls = "dd if=/dev/zero of=/dev/null bs=1 count=400000"
		cpu      = "awk 'BEGIN{for(i=0;i<3000000;i++)s+=i*i}'"
	)
	script := fmt.Sprintf(`time -f "syscall %%e" %s 2>&1 | grep ^syscall; time -f "cpu %%e" %s 2>&1; echo done; exec sleep 600`, syscalls, cpu)
	e := isoSetup(b, map[string][]string{"work": {"sh", "-c", script}})
	times := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		for _, mode := range []string{"container", "sandbox"} {
			arn, _ := e.start(b, mode, "work")
			log := filepath.Join(e.s.DataDir, "agent", "tasks", arn[strings.LastIndex(arn, "/")+1:], "main.log")
			var out string
			for deadline := time.Now().Add(3 * time.Minute); !strings.Contains(out, "done"); time.Sleep(100 * time.Millisecond) {
				raw, _ := os.ReadFile(log)
				out = string(raw)
				if time.Now().After(deadline) {
					b.Fatalf("%s workload did not finish: %q", mode, out)
				}
			}
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) == 2 && (f[0] == "syscall" || f[0] == "cpu") {
					v, _ := strconv.ParseFloat(f[1], 64)
					times[mode+"-"+f[0]] = append(times[mode+"-"+f[0]], v)
				}
			}
			e.stop(b, mode, arn)
		}
		for name, cmd := range map[string]string{"syscall": syscalls, "cpu": cpu} {
			out, err := exec.Command(testimage.BusyboxPath, "sh", "-c", fmt.Sprintf(`time -f "%%e" %s 2>&1 >/dev/null | tail -n 1`, cmd)).CombinedOutput()
			if err != nil {
				b.Fatalf("host %s: %v %s", name, err, out)
			}
			v, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			times["host-"+name] = append(times["host-"+name], v)
		}
	}
	med := func(k string) float64 {
		v := append([]float64(nil), times[k]...)
		if len(v) == 0 {
			b.Fatalf("no %s times", k)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, w := range []string{"syscall", "cpu"} {
		b.ReportMetric(med("host-"+w), w+"-host-s")
		b.ReportMetric(med("container-"+w), w+"-container-s")
		b.ReportMetric(med("sandbox-"+w), w+"-sandbox-s")
		b.ReportMetric(med("sandbox-"+w)/med("host-"+w), w+"-sandbox/host")
		b.ReportMetric(med("container-"+w)/med("host-"+w), w+"-container/host")
	}
	b.ReportMetric(0, "ns/op")
}

// watchWindow is how long the watch benchmarks count CPU over:
// GANTRY_BENCH_WATCH_WINDOW, or 30 seconds.
func watchWindow() time.Duration {
	if v, err := time.ParseDuration(os.Getenv("GANTRY_BENCH_WATCH_WINDOW")); err == nil {
		return v
	}
	return 30 * time.Second
}

// registerPair registers family as a quarter-vCPU Fargate task of two
// containers, a and b, that run cmd, each with a hard memory limit of mem
// MiB (nil: none): two containers share one sandbox.
func (e *isoEnv) registerPair(b *testing.B, family string, cmd []string, mem *int32) {
	b.Helper()
	var defs []types.ContainerDefinition
	for _, name := range []string{"a", "b"} {
		defs = append(defs, types.ContainerDefinition{Name: aws.String(name), Image: aws.String(image), Command: cmd, StopTimeout: aws.Int32(2), Memory: mem})
	}
	_, err := e.ecs.RegisterTaskDefinition(context.Background(), &ecs.RegisterTaskDefinitionInput{
		Family: aws.String(family), NetworkMode: types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("256"), Memory: aws.String("512"), ContainerDefinitions: defs,
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIsolationMemoryWatch measures what watching the hard memory
// limits of containers that share a sandbox costs the host: 10 idle
// sandboxed tasks of 2 containers each, with a memory limit per container
// (watched) and then without (not watched), and the CPU used over the same
// window by the server with the processes it ran and reaped (the runsc
// calls), and by the tasks' cgroups (the sentries answering them). It also
// reports what an idle task's host cgroup holds: the watch asks the sentry
// only for containers whose limit is below that.
func BenchmarkIsolationMemoryWatch(b *testing.B) {
	e := isoSetup(b, nil)
	const tasks = 10
	window := watchWindow()
	for _, limited := range []bool{true, false} {
		family := "unlimited"
		var mem *int32
		if limited {
			family, mem = "limited", aws.Int32(64)
		}
		e.registerPair(b, family, idle, mem)
	}
	cpu := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		for _, family := range []string{"limited", "unlimited"} {
			var arns, ids []string
			for j := 0; j < tasks; j++ {
				arn, _ := e.start(b, "sandbox", family)
				arns = append(arns, arn)
				ids = append(ids, arn[strings.LastIndex(arn, "/")+1:])
			}
			time.Sleep(3 * time.Second) // past the starts
			server0, tasks0 := procCPU(b, e.s.PID()), cgroupCPU(ids)
			time.Sleep(window)
			server, tk := procCPU(b, e.s.PID())-server0, cgroupCPU(ids)-tasks0
			var held float64
			for _, id := range ids {
				raw, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/gantry", id, "memory.usage_in_bytes"))
				n, _ := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
				held += n / (1 << 20) / tasks
			}
			cpu[family+"-held"] = append(cpu[family+"-held"], held)
			cpu[family+"-server"] = append(cpu[family+"-server"], server.Seconds()/window.Seconds()*100)
			cpu[family+"-tasks"] = append(cpu[family+"-tasks"], tk.Seconds()/window.Seconds()*100)
			e.stop(b, "sandbox", arns...)
		}
	}
	med := func(k string) float64 {
		v := append([]float64(nil), cpu[k]...)
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, family := range []string{"limited", "unlimited"} {
		b.ReportMetric(med(family+"-server"), family+"-server-cpu%")
		b.ReportMetric(med(family+"-tasks"), family+"-tasks-cpu%")
		b.ReportMetric(med(family+"-held"), family+"-task-cgroup-MiB")
	}
	b.ReportMetric(med("limited-server")+med("limited-tasks")-med("unlimited-server")-med("unlimited-tasks"), "watch-cpu%")
	b.ReportMetric(0, "ns/op")
	// Where a start of a task whose containers join its sandbox goes: what
	// a task would pay were its sandbox started ahead of it.
	reportSteps(b, e.s.LogPath(), "two-container sandbox ")
}

// procCPU is the CPU time of a process and of its children it has reaped.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command's closing parenthesis: utime, stime,
	// cutime, cstime are the 14th to 17th of the line.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	var ticks int64
	for _, s := range f[11:15] {
		n, _ := strconv.ParseInt(s, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
}

// cgroupCPU is the CPU time the tasks' cgroups (their sandboxes) used.
func cgroupCPU(taskIDs []string) time.Duration {
	var ns int64
	for _, id := range taskIDs {
		raw, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct/gantry", id, "cpuacct.usage"))
		n, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		ns += n
	}
	return time.Duration(ns)
}

// BenchmarkIsolationSandboxStats measures what per-container stats of
// containers sharing a sandbox cost: 5 sandboxed tasks of 2 containers
// each, every container reading its metadata /stats once a second (each
// read of a container's own numbers is a runsc call, at most one a second
// per container), against the same tasks idle. The CPU counted over the
// window is the server's with the processes it ran and reaped (the runsc
// calls) plus the tasks' cgroups (the sentries answering them, and the
// readers). The floor is the same number of `runsc events --stats` calls
// made directly from here on the idle tasks' containers, with the CPU of
// those processes, of the server and of the tasks' cgroups; both are
// reported above the idle tasks' CPU. The same readers in container
// isolation (host cgroup files, no runsc) show what the reading itself
// costs: a wget process a second in each container, and the endpoint.
func BenchmarkIsolationSandboxStats(b *testing.B) {
	e := isoSetup(b, nil)
	ctx := context.Background()
	const tasks = 5
	window := watchWindow()
	read := []string{"sh", "-c", "trap 'exit 0' TERM; while true; do wget -q -O /dev/null $ECS_CONTAINER_METADATA_URI_V4/stats; sleep 1; done"}
	for family, cmd := range map[string][]string{"reading": read, "idle": idle} {
		e.registerPair(b, family, cmd, nil)
	}
	cpu := map[string][]float64{}
	pct := func(d time.Duration) float64 { return d.Seconds() / window.Seconds() * 100 }
	for i := 0; i < b.N; i++ {
		for _, run := range [][2]string{{"sandbox", "reading"}, {"sandbox", "idle"}, {"container", "reading"}, {"container", "idle"}} {
			mode, family := run[0], run[1]
			var arns, ids []string
			for j := 0; j < tasks; j++ {
				arn, _ := e.start(b, mode, family)
				arns = append(arns, arn)
				ids = append(ids, arn[strings.LastIndex(arn, "/")+1:])
			}
			time.Sleep(3 * time.Second) // past the starts and the first reads
			server0, tasks0 := procCPU(b, e.s.PID()), cgroupCPU(ids)
			time.Sleep(window)
			server, tk := procCPU(b, e.s.PID())-server0, cgroupCPU(ids)-tasks0
			cpu[mode+"-"+family] = append(cpu[mode+"-"+family], pct(server+tk))
			if mode == "sandbox" && family == "idle" {
				d, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(mode), Tasks: arns})
				if err != nil {
					b.Fatal(err)
				}
				var ctrs []string
				for _, t := range d.Tasks {
					for _, c := range t.Containers {
						ctrs = append(ctrs, aws.ToString(c.RuntimeId))
					}
				}
				self0, server0, tasks0 := childrenCPU(), procCPU(b, e.s.PID()), cgroupCPU(ids)
				for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(time.Second) {
					for _, id := range ctrs {
						out, err := exec.Command(local.DefaultRunsc, "--root", "/run/containerd/runc/gantry", "events", "--stats", id).Output()
						if err != nil || !strings.Contains(string(out), `"stats"`) {
							b.Fatalf("runsc events --stats %s: %v %s", id, err, out)
						}
					}
				}
				cpu["floor"] = append(cpu["floor"], pct(childrenCPU()-self0+procCPU(b, e.s.PID())-server0+cgroupCPU(ids)-tasks0))
			}
			e.stop(b, mode, arns...)
		}
	}
	med := func(k string) float64 {
		v := append([]float64(nil), cpu[k]...)
		sort.Float64s(v)
		return v[len(v)/2]
	}
	for _, k := range []string{"sandbox-reading", "sandbox-idle", "container-reading", "container-idle", "floor"} {
		b.ReportMetric(med(k), k+"-cpu%")
	}
	stats, floor := med("sandbox-reading")-med("sandbox-idle"), med("floor")-med("sandbox-idle")
	b.ReportMetric(stats, "stats-cpu%")
	b.ReportMetric(floor, "floor-runsc-cpu%")
	b.ReportMetric(med("container-reading")-med("container-idle"), "container-stats-cpu%")
	if floor > 0 {
		b.ReportMetric(stats/floor, "stats/floor")
	}
	b.ReportMetric(0, "ns/op")
}

// childrenCPU is the CPU time of the processes this one ran and reaped.
func childrenCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
