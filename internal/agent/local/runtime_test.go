package local_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/testnet"
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
	var body string
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := testnet.HTTPGet(t, st.IPv4Address, 80, "/")
		if err == nil {
			body = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", st.IPv4Address, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The sandbox lives in the container's cgroup, with its limits.
	rid := ctrStatus(t, st, "web").RuntimeID
	if got := readFile(t, filepath.Join("/sys/fs/cgroup/pids/gantry", web, rid, "pids.max")); got != "4096" {
		t.Errorf("pids.max %s, want 4096", got)
	}
	if procs := readFile(t, filepath.Join("/sys/fs/cgroup/memory/gantry", web, rid, "cgroup.procs")); procs == "" {
		t.Errorf("the sandbox's processes are not in the container's cgroup")
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
