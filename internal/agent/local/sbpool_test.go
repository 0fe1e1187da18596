package local_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
)

// pooledRoots are the pool's sandboxes no task has taken, by id.
func (e *env) pooledRoots() []string {
	e.t.Helper()
	cs, err := e.client.Containers(e.ctx, `labels."gantry.pool"`)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		labels, err := c.Labels(e.ctx)
		if err != nil {
			continue
		}
		if _, taken := labels["gantry.task"]; !taken {
			out = append(out, c.ID())
		}
	}
	return out
}

// waitPooled waits for a running pooled sandbox and returns its id.
func (e *env) waitPooled() string {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, id := range e.pooledRoots() {
			if c, err := e.client.LoadContainer(e.ctx, id); err == nil {
				if tk, err := c.Task(e.ctx, nil); err == nil {
					if st, err := tk.Status(e.ctx); err == nil && st.Status == containerd.Running {
						return id
					}
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the sandbox pool made no sandbox within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A sandboxed task takes over a sandbox the pool booted ahead of it, and
// then behaves as one that booted its own: its address and hostname, its
// limits on its own cgroup (the pooled one, renamed), its exit code, a
// memory hog killed, an agent restart survived, and nothing left after.
func TestSandboxPool(t *testing.T) {
	e := newEnv(t)
	e.config = func(c *local.Config) { c.SandboxPool = 1 }
	e.restartAgent()
	if left := e.pooledRoots(); len(left) != 0 {
		t.Fatalf("pooled sandboxes before any task: %v", left)
	}
	// The first task of a subnet finds none and boots its own; the pool
	// then makes one for the next.
	first := e.start(e.sandboxed(agent.ContainerSpec{Name: "app", Essential: true, Command: sh("exit 0")}))
	e.waitPhase(first, agent.PhaseStopped, time.Minute)

	var groups []string // the pooled cgroups tasks took
	pooled := e.waitPooled()
	web := e.start(e.sandboxed(agent.ContainerSpec{Name: "web", Essential: true, Command: sh(
		`mkdir /tmp/w && { hostname; dmesg | grep -c gVisor; } > /tmp/w/index.html && exec httpd -f -p 80 -h /tmp/w`)}))
	st := e.waitPhase(web, agent.PhaseRunning, time.Minute)
	if left := e.pooledRoots(); len(left) > 0 && left[0] == pooled {
		t.Fatalf("the task did not take the pooled sandbox %s", pooled)
	}
	cs, err := e.client.Containers(e.ctx, fmt.Sprintf(`labels."gantry.task"==%s`, web))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	if !strings.Contains(strings.Join(ids, " "), pooled) {
		t.Fatalf("the task's containers %v do not include the pooled sandbox %s", ids, pooled)
	}
	checkServes := func() {
		t.Helper()
		body := getPage(t, st.IPv4Address)
		host, gvisor, _ := strings.Cut(strings.TrimSpace(body), "\n")
		if want := "ip-" + strings.ReplaceAll(st.IPv4Address, ".", "-") + ".ec2.internal"; host != want || gvisor == "0" {
			t.Errorf("the task says hostname %q, gVisor in dmesg %s times; want %q, and gVisor", host, gvisor, want)
		}
	}
	checkServes()
	// The pooled sandbox's cgroup is the task's now, with the task's
	// limits, and holds the sandbox.
	group := strings.TrimSuffix(pooled, "-sandbox")
	cg := func(hier, file string) string {
		return readFile(t, filepath.Join("/sys/fs/cgroup", hier, "gantry", group, file))
	}
	if got := cg("memory", "memory.limit_in_bytes"); got != fmt.Sprint(512<<20) {
		t.Errorf("the task's memory limit is %s, want %d", got, 512<<20)
	}
	if got := cg("cpu", "cpu.cfs_quota_us"); got != "25000" {
		t.Errorf("the task's CPU quota is %s, want 25000", got)
	}
	if procs := cg("memory", pooled+"/cgroup.procs"); procs == "" {
		t.Errorf("the sandbox's processes are not in the task's cgroup")
	}
	if got := cg("pids", pooled+"/pids.max"); got != "4096" {
		t.Errorf("the sandbox's pids.max is %s, want 4096", got)
	}
	groups = append(groups, group)

	// A restarted agent keeps the task, and still knows its sandbox.
	e.restartAgent()
	checkServes()

	// From the pool again: exit codes and the memory limit are the task's.
	groups = append(groups, strings.TrimSuffix(e.waitPooled(), "-sandbox"))
	exits := e.start(e.sandboxed(agent.ContainerSpec{Name: "exits", Essential: true, Command: sh("exit 42")}))
	st2 := e.waitPhase(exits, agent.PhaseStopped, time.Minute)
	if code := exitCode(t, st2, "exits"); code != 42 || st2.StopCode != agent.StopEssentialExited {
		t.Errorf("exit code %d stopCode %q, want 42 and %s", code, st2.StopCode, agent.StopEssentialExited)
	}
	groups = append(groups, strings.TrimSuffix(e.waitPooled(), "-sandbox"))
	hogSpec := e.sandboxed(agent.ContainerSpec{Name: "hog", Essential: true, Command: sh("sleep 0.5; tail /dev/zero")})
	hogSpec.MemoryMiB = 64
	hog := e.start(hogSpec)
	st3 := e.waitPhase(hog, agent.PhaseStopped, time.Minute)
	if c := ctrStatus(t, st3, "hog"); c.ExitCode == nil || *c.ExitCode != 137 {
		t.Errorf("memory hog: exit %v reason %q, want 137", deref(c.ExitCode), c.Reason)
	}

	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: web}); err != nil {
		t.Fatal(err)
	}
	e.waitPhase(web, agent.PhaseStopped, 30*time.Second)
	for _, id := range append(groups, first, web, exits, hog) {
		if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", id)); len(dirs) > 0 {
			t.Errorf("cgroups of task %s left: %v", id, dirs)
		}
	}
	// A clean shutdown destroys the pool's sandboxes (checkClean then
	// finds no container and no network left).
	last := e.waitPooled()
	e.agent.Close()
	if left := e.pooledRoots(); len(left) > 0 {
		t.Errorf("pooled sandboxes left after the agent closed: %v", left)
	}
	for _, g := range append(groups, strings.TrimSuffix(last, "-sandbox")) {
		if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", g)); len(dirs) > 0 {
			t.Errorf("cgroups of pooled sandbox %s left: %v", g, dirs)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dataDir, "agent", "sandbox-pool")); len(ents) > 0 {
		t.Errorf("pool entries' markers left: %d", len(ents))
	}
	e.startAgent()
}
