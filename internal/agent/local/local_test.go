package local_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/testimage"
)

func sh(script string) []string { return []string{"sh", "-c", script} }

// A web task answers on its own address from the host, inside the task's
// cgroup limits, and StopTask takes it down without leaving anything.
func TestWebTaskServesAndStops(t *testing.T) {
	e := newEnv(t)
	spec := e.task(agent.ContainerSpec{Name: "web", Image: web, Essential: true, CPU: 128, MemoryMiB: 256, MemoryReservation: 128, StopTimeout: 30 * time.Second})
	id := e.start(spec)
	st := e.waitPhase(id, agent.PhaseRunning, time.Minute)

	if st.IPv4Address == "" || !strings.HasPrefix(st.IPv4Address, "10.197.") || st.MACAddress == "" {
		t.Fatalf("network not reported: %+v", st)
	}
	for name, ts := range map[string]*time.Time{"pullStartedAt": st.PullStartedAt, "pullStoppedAt": st.PullStoppedAt, "connectivityAt": st.ConnectivityAt, "startedAt": st.StartedAt} {
		if ts == nil {
			t.Errorf("%s not set", name)
		}
	}
	c := ctrStatus(t, st, "web")
	if c.Status != "RUNNING" || !strings.HasPrefix(c.RuntimeID, id+"-") || !strings.HasPrefix(c.ImageDigest, "sha256:") {
		t.Errorf("container status: %+v", c)
	}

	body := getPage(t, st.IPv4Address)
	if body != testimage.WebIndex {
		t.Errorf("body %q, want the web image's index", body)
	}

	// The task's limits on its cgroup, the container's below it.
	task := filepath.Join("/sys/fs/cgroup/%s/gantry", id)
	ctr := filepath.Join(task, c.RuntimeID)
	cg := func(ctl, dir, file string) string { return readFile(t, filepath.Join(fmt.Sprintf(dir, ctl), file)) }
	checks := []struct{ ctl, dir, file, want string }{
		{"memory", task, "memory.limit_in_bytes", fmt.Sprint(512 << 20)},
		{"cpu", task, "cpu.cfs_quota_us", "25000"},
		{"cpu", task, "cpu.cfs_period_us", "100000"},
		{"memory", ctr, "memory.limit_in_bytes", fmt.Sprint(256 << 20)},
		{"memory", ctr, "memory.soft_limit_in_bytes", fmt.Sprint(128 << 20)},
		{"cpu", ctr, "cpu.shares", "128"},
	}
	for _, c := range checks {
		if got := cg(c.ctl, c.dir, c.file); got != c.want {
			t.Errorf("%s/%s = %s, want %s", fmt.Sprintf(c.dir, c.ctl), c.file, got, c.want)
		}
	}
	if procs := cg("memory", ctr, "cgroup.procs"); procs == "" {
		t.Errorf("the container's process is not in its cgroup")
	}

	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	// The image's shell exits 0 on SIGTERM, well before the stop timeout.
	st = e.waitPhase(id, agent.PhaseStopped, 10*time.Second)
	if got, want := e.rep.phases(id), "PENDING RUNNING STOPPING STOPPED"; got != want {
		t.Errorf("phases %q, want %q", got, want)
	}
	if st.StopCode != "" || st.ExecutionStoppedAt == nil {
		t.Errorf("stopped task: %+v", st)
	}
	if code := exitCode(t, st, "web"); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	ts, _ := e.agent.Tasks(e.ctx)
	if len(ts) != 1 || ts[0].Phase != agent.PhaseStopped {
		t.Errorf("Tasks() = %+v", ts)
	}
	if err := e.agent.Forget(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if ts, _ := e.agent.Tasks(e.ctx); len(ts) != 0 {
		t.Errorf("Tasks() after Forget = %+v", ts)
	}
}

// Containers of a task share its network namespace; when the essential one
// exits the others are stopped, and each reports its own exit code.
func TestLocalhostExitCodesAndEssentialExit(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.task(
		agent.ContainerSpec{Name: "server", Command: sh("mkdir /tmp/w && echo hi-from-server > /tmp/w/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/w")},
		agent.ContainerSpec{Name: "quitter", Command: sh("exit 5")},
		agent.ContainerSpec{Name: "client", Essential: true,
			DependsOn: []agent.Dependency{{Container: "server", Condition: "START"}},
			Command: sh(`for i in $(seq 100); do
				if [ "$(wget -q -O - http://127.0.0.1:8080/)" = hi-from-server ]; then exit 3; fi
				sleep 0.1
			done; exit 1`)},
		agent.ContainerSpec{Name: "sleeper", Command: sh("trap 'exit 7' TERM; while true; do sleep 0.1; done")},
	))
	st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if st.StopCode != agent.StopEssentialExited || st.StoppedReason != "Essential container in task exited" {
		t.Errorf("stopCode %q reason %q", st.StopCode, st.StoppedReason)
	}
	want := map[string]int{"client": 3, "quitter": 5, "sleeper": 7, "server": 137}
	for name, code := range want {
		if got := exitCode(t, st, name); got != code {
			t.Errorf("%s exited %d, want %d", name, got, code)
		}
	}
	// The non-essential quitter's exit did not end the task: the client
	// kept going until it reached the server.
	for _, r := range e.rep.all(id) {
		if r.Phase == agent.PhaseStopping && ctrStatus(t, r, "client").ExitCode == nil {
			t.Fatalf("the task was stopping before the essential container exited: %+v", r)
		}
	}
}

// A container that uses more memory than the task has is killed by the
// kernel and reported as Fargate does; its sibling, stopped by the agent,
// is not blamed.
func TestOutOfMemory(t *testing.T) {
	e := newEnv(t)
	spec := e.task(
		agent.ContainerSpec{Name: "hog", Essential: true, Command: sh("sleep 0.5; tail /dev/zero")},
		agent.ContainerSpec{Name: "idle", Command: sh("sleep 1000")},
	)
	spec.MemoryMiB = 64
	id := e.start(spec)
	st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
	hog := ctrStatus(t, st, "hog")
	if hog.ExitCode == nil || *hog.ExitCode != 137 || hog.Reason != "OutOfMemoryError: Container killed due to memory usage" {
		t.Errorf("hog: exit %v reason %q", deref(hog.ExitCode), hog.Reason)
	}
	idle := ctrStatus(t, st, "idle")
	if idle.Reason != "" || idle.ExitCode == nil || *idle.ExitCode != 137 {
		t.Errorf("idle: exit %v reason %q, want 137 and no reason", deref(idle.ExitCode), idle.Reason)
	}
	if st.StopCode != agent.StopEssentialExited {
		t.Errorf("stopCode %q", st.StopCode)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// StopTask sends SIGTERM, and SIGKILL only after each container's stop
// timeout.
func TestStopTaskTermThenKill(t *testing.T) {
	e := newEnv(t)
	spec := e.task(
		agent.ContainerSpec{Name: "stubborn", Essential: true, StopTimeout: 3 * time.Second, Command: sh("trap '' TERM; while true; do sleep 0.1; done")},
		agent.ContainerSpec{Name: "polite", Essential: true, StopTimeout: 30 * time.Second, Command: sh("trap 'exit 9' TERM; while true; do sleep 0.1; done")},
	)
	id := e.start(spec)
	e.waitPhase(id, agent.PhaseRunning, time.Minute)
	time.Sleep(300 * time.Millisecond) // let the shells set their traps
	begin := time.Now()
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	e.wait(id, 2*time.Second, "polite stopped", func(st agent.TaskStatus) bool {
		return ctrStatus(t, st, "polite").ExitCode != nil
	})
	politeAt := time.Since(begin)
	st := e.waitPhase(id, agent.PhaseStopped, 30*time.Second)
	took := time.Since(begin)
	if got := exitCode(t, st, "polite"); got != 9 {
		t.Errorf("polite exited %d, want 9 (its TERM trap)", got)
	}
	if got := exitCode(t, st, "stubborn"); got != 137 {
		t.Errorf("stubborn exited %d, want 137 (SIGKILL)", got)
	}
	if took < 3*time.Second || took > 10*time.Second || politeAt > 2*time.Second {
		t.Errorf("polite stopped after %s, the task after %s; want at once and after the 3s stop timeout", politeAt, took)
	}
	if st.StopCode != "" {
		t.Errorf("stopCode %q for a requested stop; the control plane sets it", st.StopCode)
	}
	if got, want := e.rep.phases(id), "PENDING RUNNING STOPPING STOPPED"; got != want {
		t.Errorf("phases %q, want %q", got, want)
	}
}

// An image that is neither local nor pullable fails the task quickly.
func TestUnpullableImage(t *testing.T) {
	e := newEnv(t)
	// Nothing listens on port 1 of loopback: the pull fails at once
	// without leaving the host.
	id := e.start(e.task(
		agent.ContainerSpec{Name: "ok", Essential: true, Command: sh("sleep 1000")},
		agent.ContainerSpec{Name: "bad", Essential: true, Image: "127.0.0.1:1/nope:latest"},
	))
	begin := time.Now()
	st := e.waitPhase(id, agent.PhaseStopped, 40*time.Second)
	if st.StopCode != agent.StopFailedToStart || !strings.HasPrefix(st.StoppedReason, "CannotPullContainerError") {
		t.Errorf("stopCode %q reason %q", st.StopCode, st.StoppedReason)
	}
	if r := ctrStatus(t, st, "bad").Reason; !strings.HasPrefix(r, "CannotPullContainerError") {
		t.Errorf("container reason %q", r)
	}
	if time.Since(begin) > 20*time.Second {
		t.Errorf("took %s", time.Since(begin))
	}
	for _, r := range e.rep.all(id) {
		if r.Phase == agent.PhaseRunning {
			t.Errorf("reported RUNNING")
		}
	}
}

// A command that cannot run fails the task to start, not hang it.
func TestBadCommand(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.task(agent.ContainerSpec{Name: "app", Essential: true, Command: []string{"/no/such/binary"}}))
	st := e.waitPhase(id, agent.PhaseStopped, 30*time.Second)
	if st.StopCode != agent.StopFailedToStart || !strings.HasPrefix(st.StoppedReason, "CannotStartContainerError") {
		t.Errorf("stopCode %q reason %q", st.StopCode, st.StoppedReason)
	}
}

// dependsOn: app starts only once init has exited 0 and db is HEALTHY;
// health checks report HEALTHY and UNHEALTHY, in CMD-SHELL and CMD form.
func TestDependsOnAndHealth(t *testing.T) {
	e := newEnv(t)
	hc := func(cmd ...string) *agent.HealthCheck {
		return &agent.HealthCheck{Command: cmd, Interval: 300 * time.Millisecond, Timeout: time.Second, Retries: 2}
	}
	id := e.start(e.task(
		agent.ContainerSpec{Name: "init", Command: sh("sleep 1; exit 0")},
		agent.ContainerSpec{Name: "db", Command: sh("sleep 1.5; touch /tmp/ready; sleep 1000"),
			HealthCheck: &agent.HealthCheck{Command: []string{"CMD-SHELL", "test -f /tmp/ready"}, Interval: 300 * time.Millisecond, Timeout: time.Second, Retries: 2, StartPeriod: 5 * time.Second}},
		agent.ContainerSpec{Name: "sick", Command: sh("sleep 1000"), HealthCheck: hc("CMD", "/bin/false")},
		agent.ContainerSpec{Name: "app", Essential: true, Command: sh("sleep 1000"),
			DependsOn: []agent.Dependency{{Container: "init", Condition: "SUCCESS"}, {Container: "db", Condition: "HEALTHY"}}},
		agent.ContainerSpec{Name: "sidecar", Command: sh("sleep 1000"),
			DependsOn: []agent.Dependency{{Container: "app", Condition: "START"}, {Container: "init", Condition: "COMPLETE"}}},
	))
	st := e.wait(id, time.Minute, "running with sidecar and health known", func(st agent.TaskStatus) bool {
		return st.Phase == agent.PhaseRunning && ctrStatus(t, st, "sidecar").Status == "RUNNING" &&
			ctrStatus(t, st, "sick").HealthStatus == "UNHEALTHY"
	})
	if h := ctrStatus(t, st, "db").HealthStatus; h != "HEALTHY" {
		t.Errorf("db health %q", h)
	}
	// In the first report where app ran, its dependencies were met.
	sawApp, sawSidecar := false, false
	for _, r := range e.rep.all(id) {
		if !sawApp && ctrStatus(t, r, "app").Status == "RUNNING" {
			sawApp = true
			if c := ctrStatus(t, r, "init"); c.ExitCode == nil || *c.ExitCode != 0 {
				t.Errorf("app started before init succeeded: %+v", c)
			}
			if h := ctrStatus(t, r, "db").HealthStatus; h != "HEALTHY" {
				t.Errorf("app started while db was %s", h)
			}
		}
		// The task runs once its essential container does (in the same
		// report at the earliest), never before.
		if !sawApp && r.Phase != agent.PhasePending {
			t.Errorf("task was %s before its essential container started", r.Phase)
		}
		if !sawSidecar && ctrStatus(t, r, "sidecar").Status == "RUNNING" {
			sawSidecar = true
			if !sawApp {
				t.Errorf("sidecar started before app")
			}
		}
	}
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	e.waitPhase(id, agent.PhaseStopped, time.Minute)

	// A SUCCESS dependency that fails keeps the dependent from starting.
	id = e.start(e.task(
		agent.ContainerSpec{Name: "init", Command: sh("exit 4")},
		agent.ContainerSpec{Name: "app", Essential: true, Command: sh("sleep 1000"),
			DependsOn: []agent.Dependency{{Container: "init", Condition: "SUCCESS"}}},
	))
	st = e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if st.StopCode != agent.StopFailedToStart || !strings.Contains(st.StoppedReason, "init exited with 4") {
		t.Errorf("stopCode %q reason %q", st.StopCode, st.StoppedReason)
	}
	if c := ctrStatus(t, st, "app"); c.RuntimeID != "" || c.ExitCode != nil {
		t.Errorf("app was created: %+v", c)
	}
}

// The container definition's settings reach the process: each check exits
// with its own code, so a failure says which one.
func TestContainerSettings(t *testing.T) {
	e := newEnv(t)
	check := `
		[ "$(id -u):$(id -g)" = "1000:1000" ] || exit 10
		[ "$GREETING" = hello ] || exit 11
		case "$PATH" in */bin*) ;; *) exit 12;; esac
		[ "$(pwd)" = /home/app ] || exit 13
		touch /tmp/newfile 2>/dev/null && exit 14
		[ "$(ulimit -n)" = 1000 ] || exit 15
		[ "$(ulimit -H -n)" = 2000 ] || exit 16
		[ "$(hostname)" = myhost ] || exit 17
		grep -q myhost /etc/hosts || exit 18
		[ "$$" != 1 ] || exit 19
		case "$(tr '\0' ' ' < /proc/1/cmdline)" in "/dev/init -- /bin/sh -c "*) ;; *) exit 20;; esac
		exit 0`
	id := e.start(e.task(
		agent.ContainerSpec{Name: "configured", Essential: true,
			EntryPoint: []string{"/bin/sh", "-c"}, Command: []string{check},
			User: "app", Environment: map[string]string{"GREETING": "hello"}, WorkingDirectory: "/home/app",
			ReadonlyRootfs: true, Ulimits: []agent.Ulimit{{Name: "nofile", Soft: 1000, Hard: 2000}},
			Hostname: "myhost", InitProcess: true},
		agent.ContainerSpec{Name: "plain", Essential: true, Command: sh(`
			[ "$(id -u):$(id -g)" = "65534:65534" ] || exit 30
			[ "$$" = 1 ] || exit 31
			touch /tmp/newfile || exit 32
			[ "$(ulimit -n)" -le 65535 ] && [ "$(ulimit -n)" -gt 1024 ] || exit 33
			grep -q "^nameserver 127" /etc/resolv.conf && exit 34
			ip=$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
			grep -q "^$ip	ip-" /etc/hosts || exit 35
			sleep 1000`), User: "65534:65534"},
	))
	st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if got := exitCode(t, st, "configured"); got != 0 {
		t.Errorf("configured exited %d (see the check with that code)", got)
	}
	if got := exitCode(t, st, "plain"); got != 137 {
		t.Errorf("plain exited %d, want 137 from the stop (see the check with that code)", got)
	}
}

// A new agent on the same data directory takes over: a running task is
// supervised again, and one whose container exited meanwhile is reported
// with its real exit code and cleaned up.
func TestAgentRestart(t *testing.T) {
	e := newEnv(t)
	long := e.start(e.task(agent.ContainerSpec{Name: "app", Essential: true, Command: sh("sleep 1000")}))
	short := e.start(e.task(agent.ContainerSpec{Name: "app", Essential: true, Command: sh("sleep 2; exit 42")}))
	e.waitPhase(long, agent.PhaseRunning, time.Minute)
	st := e.waitPhase(short, agent.PhaseRunning, time.Minute)
	startedAt := st.StartedAt

	if err := e.agent.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // short's container exits while no agent runs
	if last, _ := e.rep.last(short); last.Phase != agent.PhaseRunning {
		t.Fatalf("a closed agent reported %s", last.Phase)
	}
	e.startAgent()

	st = e.waitPhase(short, agent.PhaseStopped, 30*time.Second)
	if got := exitCode(t, st, "app"); got != 42 || st.StopCode != agent.StopEssentialExited {
		t.Errorf("short: exit %d stopCode %q, want 42 and EssentialContainerExited", got, st.StopCode)
	}
	if !st.StartedAt.Equal(*startedAt) {
		t.Errorf("startedAt changed across the restart: %v then %v", startedAt, st.StartedAt)
	}
	ts, err := e.agent.Tasks(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	phases := map[string]string{}
	for _, s := range ts {
		phases[s.TaskID] = s.Phase
	}
	if phases[long] != agent.PhaseRunning || phases[short] != agent.PhaseStopped {
		t.Fatalf("Tasks() after restart: %v", phases)
	}

	// The new agent watches long's container: kill it behind its back.
	last, _ := e.rep.last(long)
	c, err := e.client.LoadContainer(e.ctx, ctrStatus(t, last, "app").RuntimeID)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := c.Task(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Kill(e.ctx, 9); err != nil {
		t.Fatal(err)
	}
	st = e.waitPhase(long, agent.PhaseStopped, 30*time.Second)
	if got := exitCode(t, st, "app"); got != 137 || st.StopCode != agent.StopEssentialExited {
		t.Errorf("long: exit %d stopCode %q", got, st.StopCode)
	}

	// Records of stopped tasks survive a restart until forgotten.
	e.restartAgent()
	ts, _ = e.agent.Tasks(e.ctx)
	if len(ts) != 2 {
		t.Fatalf("Tasks() = %+v", ts)
	}
	for _, id := range []string{long, short} {
		if err := e.agent.Forget(e.ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

// StopTask while a task is still starting ends it without starting the
// containers that waited.
func TestStopWhilePending(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.task(
		agent.ContainerSpec{Name: "db", Command: sh("sleep 1000"),
			HealthCheck: &agent.HealthCheck{Command: []string{"CMD", "false"}, Interval: time.Second, Timeout: time.Second, Retries: 1000}},
		agent.ContainerSpec{Name: "app", Essential: true, Command: sh("sleep 1000"),
			DependsOn: []agent.Dependency{{Container: "db", Condition: "HEALTHY"}}},
	))
	e.wait(id, time.Minute, "db running", func(st agent.TaskStatus) bool { return ctrStatus(t, st, "db").Status == "RUNNING" })
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	st := e.waitPhase(id, agent.PhaseStopped, 30*time.Second)
	if got, want := e.rep.phases(id), "PENDING STOPPING STOPPED"; got != want {
		t.Errorf("phases %q, want %q", got, want)
	}
	if c := ctrStatus(t, st, "app"); c.RuntimeID != "" || c.Status != "STOPPED" {
		t.Errorf("app: %+v", c)
	}
	if st.StopCode != "" {
		t.Errorf("stopCode %q", st.StopCode)
	}
}

// A hundred tasks run at once on a small host, with a few goroutines each.
func TestHundredTasks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 100 tasks")
	}
	e := newEnv(t)
	before := runtime.NumGoroutine()
	var ids []string
	for i := 0; i < 100; i++ {
		spec := e.task(agent.ContainerSpec{Name: "app", Essential: true, Command: sh("trap 'exit 0' TERM; sleep 1000 & wait")})
		spec.MemoryMiB = 512
		ids = append(ids, e.start(spec))
	}
	for _, id := range ids {
		e.waitPhase(id, agent.PhaseRunning, 5*time.Minute)
	}
	perTask := float64(runtime.NumGoroutine()-before) / 100
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("100 tasks running: %.1f goroutines per task, heap %d MiB", perTask, ms.HeapInuse>>20)
	if perTask > 8 {
		t.Errorf("%.1f goroutines per task", perTask)
	}
	for _, id := range ids {
		if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		e.waitPhase(id, agent.PhaseStopped, 5*time.Minute)
	}
}
