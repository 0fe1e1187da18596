package local_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
)

// sandboxed is a task spec with sandbox isolation (gVisor).
func (e *env) sandboxed(cs ...agent.ContainerSpec) agent.TaskSpec {
	s := e.task(cs...)
	s.Isolation = agent.IsolationSandbox
	return s
}

// A sandboxed task runs on gVisor's kernel, not the host's: the host
// reaches it on its own address, its exit code and the memory limit are
// the task's, and nothing of it is left after it stops (checkClean).
func TestSandboxTask(t *testing.T) {
	e := newEnv(t)
	info, err := e.agent.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.SandboxUnavailable != "" || len(info.Isolations) != 2 {
		t.Fatalf("sandbox isolation unavailable on this host (run scripts/build-runsc.sh): %+v", info)
	}
	web := e.start(e.sandboxed(agent.ContainerSpec{Name: "web", Essential: true, Command: sh(
		`mkdir /tmp/w && { uname -r; dmesg; } > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w`)}))
	exits := e.start(e.sandboxed(agent.ContainerSpec{Name: "exits", Essential: true, Command: sh("exit 42")}))
	hogSpec := e.sandboxed(agent.ContainerSpec{Name: "hog", Essential: true, Command: sh("sleep 0.5; tail /dev/zero")})
	hogSpec.MemoryMiB = 64
	hog := e.start(hogSpec)

	st := e.waitPhase(web, agent.PhaseRunning, time.Minute)
	body := getPage(t, st.IPv4Address)
	// A task of one container is its own sandbox (no root container):
	// the sandbox lives in the container's cgroup, with its limits.
	rid := ctrStatus(t, st, "web").RuntimeID
	if got := readFile(t, filepath.Join("/sys/fs/cgroup/pids/gantry", web, rid, "pids.max")); got != "4096" {
		t.Errorf("pids.max %s, want 4096", got)
	}
	if procs := readFile(t, filepath.Join("/sys/fs/cgroup/memory/gantry", web, rid, "cgroup.procs")); procs == "" {
		t.Errorf("the sandbox's processes are not in the container's cgroup")
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/gantry", web, web+"-sandbox")); err == nil {
		t.Errorf("a task of one container got a root container")
	}
	host, _ := exec.Command("uname", "-r").Output()
	kernel, dmesg, _ := strings.Cut(body, "\n")
	if kernel == strings.TrimSpace(string(host)) || !strings.Contains(dmesg, "gVisor") {
		t.Errorf("the task does not run on gVisor's kernel: uname -r %q (host %q), dmesg %q", kernel, strings.TrimSpace(string(host)), dmesg)
	}

	t.Logf("in the sandbox: uname -r %s; dmesg: %.80q", kernel, dmesg)
	st = e.waitPhase(exits, agent.PhaseStopped, time.Minute)
	if code := exitCode(t, st, "exits"); code != 42 || st.StopCode != agent.StopEssentialExited {
		t.Errorf("exit code %d stopCode %q, want 42 and %s", code, st.StopCode, agent.StopEssentialExited)
	}
	st = e.waitPhase(hog, agent.PhaseStopped, time.Minute)
	if c := ctrStatus(t, st, "hog"); c.ExitCode == nil || *c.ExitCode != 137 {
		t.Errorf("memory hog: exit %v reason %q, want 137", deref(c.ExitCode), c.Reason)
	} else {
		t.Logf("memory hog: exit %d reason %q", *c.ExitCode, c.Reason)
	}

	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: web}); err != nil {
		t.Fatal(err)
	}
	e.waitPhase(web, agent.PhaseStopped, 30*time.Second)
	for _, id := range []string{web, exits, hog} {
		if out, _ := exec.Command("pgrep", "-f", id).Output(); len(out) > 0 {
			t.Errorf("processes of task %s left: %s", id, out)
		}
	}
}

// A sandboxed task's containers share its network namespace as runc's do:
// one serves on localhost, the other reaches it, and the host reaches the
// task's address.
func TestSandboxTaskContainersShareNetwork(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.sandboxed(
		agent.ContainerSpec{Name: "server", Command: sh("mkdir /tmp/w && echo hi-from-server > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w")},
		agent.ContainerSpec{Name: "client", Essential: true,
			DependsOn: []agent.Dependency{{Container: "server", Condition: "START"}},
			Command: sh(`dmesg | grep -q gVisor || exit 4
			for i in $(seq 100); do
				if [ "$(wget -q -O - http://127.0.0.1:8080/)" = hi-from-server ]; then exit 3; fi
				sleep 0.1
			done; exit 1`)},
	))
	st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if code := exitCode(t, st, "client"); code != 3 {
		t.Errorf("client exited %d, want 3 (it runs on gVisor and reached the server on localhost)", code)
	}
}

// A sandboxed task is one gVisor sandbox, whatever its number of
// containers: one sentry on the host, in the task's cgroup; every container
// on gVisor's kernel and sharing its network stack (localhost). Each
// container's exit is still its own: a non-essential container's exit code
// is reported and the task keeps running, an essential one's stops it, and
// the others get SIGTERM. Nothing of the task is left after it stops: no
// containers, cgroups or network (checkClean), no process, no waiter.
func TestSandboxTaskOneSandbox(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.sandboxed(
		agent.ContainerSpec{Name: "server", Essential: true, Command: sh(
			`trap 'exit 0' TERM; mkdir /tmp/w && uname -r > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w & wait`)},
		agent.ContainerSpec{Name: "side", Command: sh(`dmesg | grep -q gVisor || exit 4
			for i in $(seq 100); do
				case "$(wget -q -O - http://127.0.0.1:8080/)" in *gvisor*) exit 5 ;; esac
				sleep 0.1
			done; exit 1`)},
		agent.ContainerSpec{Name: "main", Essential: true,
			DependsOn: []agent.Dependency{{Container: "side", Condition: "COMPLETE"}},
			Command:   sh(`dmesg | grep -q gVisor || exit 4; touch /tmp/started; sleep 4; exit 9`)},
	))
	st := e.wait(id, time.Minute, "main running", func(st agent.TaskStatus) bool {
		return st.Phase == agent.PhaseRunning && ctrStatus(t, st, "main").Status == "RUNNING"
	})
	if c := ctrStatus(t, st, "side"); c.Status != "STOPPED" || c.ExitCode == nil || *c.ExitCode != 5 {
		t.Errorf("side: %s exit %v, want STOPPED 5 (it ran on gVisor and reached the server on localhost)", c.Status, deref(c.ExitCode))
	}
	// One sentry for the task, and it is in the task's cgroup.
	var sentries []string
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory/gantry", id, "*", "cgroup.procs"))
	for _, f := range cgroups {
		for _, pid := range strings.Fields(readFile(t, f)) {
			cmd, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			if strings.HasPrefix(string(cmd), "runsc-sandbox\x00") {
				sentries = append(sentries, pid+" in "+filepath.Base(filepath.Dir(f)))
			}
		}
	}
	out, _ := exec.Command("pgrep", "-f", "^runsc-sandbox .*"+id).Output()
	if len(sentries) != 1 || len(strings.Fields(string(out))) != 1 {
		t.Errorf("sandboxes of the task: in its cgroup %v, on the host %q; want one", sentries, out)
	}

	st = e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if st.StopCode != agent.StopEssentialExited {
		t.Errorf("stopCode %q, want %s", st.StopCode, agent.StopEssentialExited)
	}
	for name, want := range map[string]int{"main": 9, "side": 5, "server": 0} {
		if code := exitCode(t, st, name); code != want {
			t.Errorf("%s exited %d, want %d", name, code, want)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", id).Output(); len(out) > 0 {
		t.Errorf("processes of the task left: %s", out)
	}
	if left, _ := os.ReadDir(filepath.Join(e.dataDir, "agent", "runsc-waits")); len(left) > 0 {
		t.Errorf("waiters' files left: %v", left)
	}
}

// A sandboxed task keeps running across an agent restart, its sandbox
// included: the new agent follows each container's exit and removes the
// sandbox when the task stops. Health checks run in a joined container
// (exec into the sandbox), and a dependency on HEALTHY waits for them.
func TestSandboxTaskAdopted(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.sandboxed(
		agent.ContainerSpec{Name: "a", Essential: true, Command: sh(`trap 'exit 0' TERM; sleep 1 && touch /tmp/ok; sleep 1000 & wait`),
			HealthCheck: &agent.HealthCheck{Command: []string{"CMD-SHELL", "test -e /tmp/ok"}, Interval: time.Second, Timeout: 2 * time.Second, Retries: 30}},
		agent.ContainerSpec{Name: "b", Command: sh(`sleep 3; exit 6`),
			DependsOn: []agent.Dependency{{Container: "a", Condition: "HEALTHY"}}},
	))
	st := e.wait(id, time.Minute, "b running", func(st agent.TaskStatus) bool { return ctrStatus(t, st, "b").Status == "RUNNING" })
	if h := ctrStatus(t, st, "a").HealthStatus; h != "HEALTHY" {
		t.Errorf("a's health %q when b started, want HEALTHY", h)
	}
	e.restartAgent()
	e.wait(id, time.Minute, "b exited", func(st agent.TaskStatus) bool { return ctrStatus(t, st, "b").Status == "STOPPED" })
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	st = e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if a, b := exitCode(t, st, "a"), exitCode(t, st, "b"); a != 0 || b != 6 {
		t.Errorf("exit codes a %d b %d, want 0 and 6", a, b)
	}
	if out, _ := exec.Command("pgrep", "-f", id).Output(); len(out) > 0 {
		t.Errorf("processes of the task left: %s", out)
	}
}

// A host without a working runsc says why and refuses sandbox tasks; it
// never runs them as plain containers.
func TestSandboxUnavailable(t *testing.T) {
	e := newEnv(t)
	a, err := local.New(e.ctx, local.Config{DataDir: e.dataDir, ContainerdAddress: gcontainerd.OwnSocket(e.dataDir), Reporter: e.rep, Runsc: "/nonexistent/runsc"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	info, err := a.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Isolations) != 1 || info.Isolations[0] != agent.IsolationContainer || !strings.Contains(info.SandboxUnavailable, "/nonexistent/runsc") {
		t.Errorf("Info: isolations %v, sandboxUnavailable %q", info.Isolations, info.SandboxUnavailable)
	}
	err = a.StartTask(e.ctx, e.sandboxed(agent.ContainerSpec{Name: "c", Essential: true, Command: sh("exit 0")}))
	if err == nil || !strings.Contains(err.Error(), "sandbox isolation is not available") {
		t.Errorf("StartTask of a sandbox task: %v, want refused", err)
	}
	if ts, _ := a.Tasks(e.ctx); len(ts) != 0 {
		t.Errorf("refused task is known: %+v", ts)
	}
	spec := e.task(agent.ContainerSpec{Name: "c", Essential: true, Command: sh("exit 0")})
	spec.Isolation = "vm"
	if err := a.StartTask(e.ctx, spec); err == nil || !strings.Contains(err.Error(), "unknown isolation") {
		t.Errorf("StartTask with isolation vm: %v", err)
	}
}

// Escapes that must fail in both isolation modes, and the hardening that
// makes them fail; each check exits with its own code, so a failure says
// which one.
func TestHardening(t *testing.T) {
	e := newEnv(t)
	check := `
		grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || exit 10
		echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null && exit 11
		mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>/dev/null && exit 12
		ip link add dummy0 type dummy 2>/dev/null && exit 13
		ulimit -H -n 1048576 2>/dev/null && exit 14
		[ -e /proc/1/root/usr/local/bin/runsc ] && exit 15
		cat /proc/kcore >/dev/null 2>&1 && exit 16
		if [ "$ISOLATION" = container ]; then
			grep -q '^Seccomp:[[:space:]]*2' /proc/self/status || exit 17
		else
			dmesg | grep -q gVisor || exit 19
		fi
		exit 0`
	for _, isolation := range []string{agent.IsolationContainer, agent.IsolationSandbox} {
		t.Run(isolation, func(t *testing.T) {
			spec := e.task(agent.ContainerSpec{Name: "escape", Essential: true, Command: sh(check), Environment: map[string]string{"ISOLATION": isolation}})
			spec.Isolation = isolation
			id := e.start(spec)
			st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
			if code := exitCode(t, st, "escape"); code != 0 {
				t.Errorf("the check that exits %d failed", code)
			}
		})
	}
}

// A container's own memory limit inside a task's sandbox holds, though the
// host sees only the sandbox: the agent kills the container over it (137,
// OutOfMemoryError, watchMemory) and the task goes on, as under runc. What
// the host enforces is the task's limit: a container without a limit of
// its own that outgrows the task's gets the sentry killed, which ends every
// container of the task, each reported killed for memory.
func TestSandboxContainerMemoryLimit(t *testing.T) {
	e := newEnv(t)
	spec := e.sandboxed(
		agent.ContainerSpec{Name: "hog", MemoryMiB: 64, Command: sh("sleep 0.5; tail /dev/zero")},
		agent.ContainerSpec{Name: "bystander", Essential: true, StopTimeout: time.Second, Command: sh("trap 'exit 0' TERM; sleep 60 & wait")},
		// It sees its own limit where a container under runc does.
		agent.ContainerSpec{Name: "reader", MemoryMiB: 100, Command: sh(`for i in $(seq 50); do
				[ "$(cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max)" = 104857600 ] && exit 3
				sleep 0.2
			done; exit 1`)},
	)
	spec.MemoryMiB = 256
	id := e.start(spec)
	st := e.wait(id, time.Minute, "hog stopped", func(st agent.TaskStatus) bool { return ctrStatus(t, st, "hog").Status == "STOPPED" })
	if c := ctrStatus(t, st, "hog"); c.ExitCode == nil || *c.ExitCode != 137 || !strings.HasPrefix(c.Reason, "OutOfMemoryError") {
		t.Errorf("hog over its 64 MiB: exit %v reason %q, want 137 OutOfMemoryError", deref(c.ExitCode), c.Reason)
	}
	st = e.wait(id, time.Minute, "reader stopped", func(st agent.TaskStatus) bool { return ctrStatus(t, st, "reader").Status == "STOPPED" })
	if c := ctrStatus(t, st, "reader"); c.ExitCode == nil || *c.ExitCode != 3 {
		t.Errorf("reader: exit %v, want 3 (its memory.max in the sandbox's cgroup file system says its 100 MiB)", deref(c.ExitCode))
	}
	time.Sleep(time.Second)
	if st, _ := e.rep.last(id); st.Phase != agent.PhaseRunning || ctrStatus(t, st, "bystander").Status != "RUNNING" {
		t.Errorf("after the hog's kill: task %s, bystander %s; want both running", st.Phase, ctrStatus(t, st, "bystander").Status)
	}
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	e.waitPhase(id, agent.PhaseStopped, time.Minute)

	spec = e.sandboxed(
		agent.ContainerSpec{Name: "hog", Command: sh("sleep 0.5; tail /dev/zero")},
		agent.ContainerSpec{Name: "bystander", Essential: true, Command: sh("trap 'exit 0' TERM; sleep 60 & wait")},
	)
	spec.MemoryMiB = 128
	id = e.start(spec)
	st = e.waitPhase(id, agent.PhaseStopped, time.Minute)
	for _, name := range []string{"hog", "bystander"} {
		if c := ctrStatus(t, st, name); c.ExitCode == nil || *c.ExitCode != 137 || !strings.HasPrefix(c.Reason, "OutOfMemoryError") {
			t.Errorf("task over its limit: %s: exit %v reason %q, want 137 OutOfMemoryError", name, deref(c.ExitCode), c.Reason)
		}
	}
}

// The containers of one sandbox each report the sandbox's usage (the host
// cannot tell them apart); the task's usage for CloudWatch counts it once,
// not once per container.
func TestSandboxTaskUsageCountedOnce(t *testing.T) {
	e := newEnv(t)
	hold := agent.ContainerSpec{Name: "a", Essential: true, StopTimeout: time.Second, Command: sh("head -c 40m /dev/zero | tail | sleep 600")}
	idle := agent.ContainerSpec{Name: "b", Essential: true, StopTimeout: time.Second, Command: sh("sleep 600")}
	id := e.start(e.sandboxed(hold, idle))
	st := e.waitPhase(id, agent.PhaseRunning, time.Minute)
	time.Sleep(2 * time.Second) // a holds its memory
	var u agent.TaskUsage
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		e.agent.TaskMetadata(ctrStatus(t, st, "a").RuntimeID) // samples the task now
		all, err := e.agent.Usage(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range all {
			if x.TaskID == id {
				u = x
			}
		}
		// Until a has read all of its 40 MiB (slow on a busy host).
		if u.MemoryBytes >= 40<<20 || time.Now().After(deadline) {
			break
		}
	}
	cg := filepath.Join("/sys/fs/cgroup/memory/gantry", id, id+"-sandbox")
	used, _ := strconv.ParseUint(readFile(t, filepath.Join(cg, "memory.usage_in_bytes")), 10, 64)
	for _, line := range strings.Split(readFile(t, filepath.Join(cg, "memory.stat")), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "total_inactive_file" {
			c, _ := strconv.ParseUint(v, 10, 64)
			used -= min(c, used)
		}
	}
	if used == 0 || u.MemoryBytes < used/2 || u.MemoryBytes > used*3/2 {
		t.Errorf("task usage %d MiB; its sandbox holds %d MiB", u.MemoryBytes>>20, used>>20)
	}
	// a's 40 MiB live in the sentry's memory file, which the host counts
	// as cache (shared memory): the usage must not leave it out.
	if u.MemoryBytes < 40<<20 {
		t.Errorf("task usage %d MiB; a alone holds 40 MiB", u.MemoryBytes>>20)
	}
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	e.waitPhase(id, agent.PhaseStopped, time.Minute)
}
