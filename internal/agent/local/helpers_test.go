package local_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/snapshots"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/containerd/containerdtest"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/netw"
	"github.com/gantry-dev/gantry/internal/testimage"
	"github.com/gantry-dev/gantry/internal/testnet"
)

const (
	busybox = "gantry-test/busybox:latest"
	web     = "nginx:latest"
)

// env is a real containerd with the test images loaded and an agent on it.
type env struct {
	t       *testing.T
	ctx     context.Context
	client  *containerd.Client
	dataDir string
	rep     *recorder
	agent   *local.Agent
	net     agent.NetworkSpec
	ids     []string // every task the test started
	// config, if set, changes the agent's configuration at its next start.
	config func(*local.Config)
}

var subnetSeq atomic.Int32

func newEnv(t *testing.T) *env {
	t.Helper()
	if _, err := os.Stat(local.DefaultInitBinary); err != nil {
		t.Fatalf("%s is missing: apt-get install tini", local.DefaultInitBinary)
	}
	client, dataDir := containerdtest.Start(t)
	e := &env{t: t, ctx: containerdtest.Context(t), client: client, dataDir: dataDir, rep: newRecorder()}
	for _, tarball := range []string{testimage.Busybox(t), testimage.Web(t)} {
		f, err := os.Open(tarball)
		if err != nil {
			t.Fatal(err)
		}
		_, err = images.Load(e.ctx, client, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A made-up VPC per test, on addresses nothing else here uses.
	n := subnetSeq.Add(1)
	vpc := fmt.Sprintf("vpc-c2test%d", n)
	e.net = agent.NetworkSpec{
		VPCID: vpc, SubnetID: fmt.Sprintf("subnet-c2test%d", n),
		SubnetCIDR: fmt.Sprintf("10.197.%d.0/24", n), Gateway: fmt.Sprintf("10.197.%d.1", n),
	}
	t.Cleanup(func() {
		if m, err := netw.New(dataDir); err == nil {
			exec.Command("ip", "link", "del", m.BridgeName(vpc)).Run()
		}
	})
	t.Cleanup(e.checkClean)
	e.startAgent()
	return e
}

func (e *env) startAgent() {
	e.t.Helper()
	cfg := local.Config{
		DataDir:           e.dataDir,
		ContainerdAddress: gcontainerd.OwnSocket(e.dataDir),
		Reporter:          e.rep,
	}
	if e.config != nil {
		e.config(&cfg)
	}
	a, err := local.New(e.ctx, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.agent = a
}

func (e *env) restartAgent() {
	e.t.Helper()
	if err := e.agent.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.startAgent()
}

var taskSeq atomic.Int64

// task is a task spec with this test's network and the given containers.
func (e *env) task(cs ...agent.ContainerSpec) agent.TaskSpec {
	id := fmt.Sprintf("%016x%016x", time.Now().UnixNano(), taskSeq.Add(1))
	for i := range cs {
		if cs[i].Image == "" {
			cs[i].Image = busybox
		}
		if cs[i].StopTimeout == 0 {
			cs[i].StopTimeout = 2 * time.Second
		}
	}
	return agent.TaskSpec{TaskID: id, Family: "test", CPU: 256, MemoryMiB: 512, Network: e.net, Containers: cs}
}

func (e *env) start(spec agent.TaskSpec) string {
	e.t.Helper()
	e.ids = append(e.ids, spec.TaskID)
	if err := e.agent.StartTask(e.ctx, spec); err != nil {
		e.t.Fatal(err)
	}
	return spec.TaskID
}

// wait returns the task's status once ok holds for it.
func (e *env) wait(id string, timeout time.Duration, what string, ok func(agent.TaskStatus) bool) agent.TaskStatus {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, found := e.rep.last(id)
		if found && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("task %s: not %s after %s; last status: %+v", id, what, timeout, st)
		}
		select {
		case <-e.rep.changed(id):
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) waitPhase(id, phase string, timeout time.Duration) agent.TaskStatus {
	e.t.Helper()
	return e.wait(id, timeout, phase, func(st agent.TaskStatus) bool { return st.Phase == phase })
}

func ctrStatus(t *testing.T, st agent.TaskStatus, name string) agent.ContainerStatus {
	t.Helper()
	for _, c := range st.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in %+v", name, st)
	return agent.ContainerStatus{}
}

func exitCode(t *testing.T, st agent.TaskStatus, name string) int {
	t.Helper()
	c := ctrStatus(t, st, name)
	if c.ExitCode == nil {
		t.Fatalf("container %s has no exit code: %+v", name, c)
	}
	return *c.ExitCode
}

// checkClean fails the test if a task left anything on the host, then
// removes what is left so the next test starts clean.
func (e *env) checkClean() {
	t := e.t
	ctx := e.ctx
	if !t.Failed() {
		for _, id := range e.ids {
			st, _ := e.rep.last(id)
			if st.Phase != agent.PhaseStopped {
				t.Errorf("task %s ended the test %s; every test must stop its tasks", id, st.Phase)
			}
		}
	}
	e.agent.Close()
	cs, err := e.client.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		t.Errorf("containerd container left: %s", c.ID())
		if tk, err := c.Task(ctx, nil); err == nil {
			tk.Delete(ctx, containerd.WithProcessKill)
		}
		c.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	err = e.client.SnapshotService(images.Snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			t.Errorf("active snapshot left: %s", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := netw.New(e.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	left, err := m.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range left {
		t.Errorf("network left: %s", l)
	}
	for _, id := range e.ids {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", id))
		for _, d := range dirs {
			t.Errorf("cgroup left: %s", d)
			subs, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
			for _, s := range subs {
				os.Remove(filepath.Dir(s))
			}
			os.Remove(d)
		}
		if _, err := os.Stat(filepath.Join(e.dataDir, "agent", "tasks", id)); err == nil {
			t.Errorf("task directory left for %s", id)
		}
		m.Teardown(context.Background(), id, e.net)
		e.clearStorage(id)
	}
}

// recorder keeps every report, in order, per task.
type recorder struct {
	mu      sync.Mutex
	reports map[string][]agent.TaskStatus
	notify  map[string]chan struct{}
}

func newRecorder() *recorder {
	return &recorder{reports: map[string][]agent.TaskStatus{}, notify: map[string]chan struct{}{}}
}

func (r *recorder) TaskChanged(_ context.Context, st agent.TaskStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports[st.TaskID] = append(r.reports[st.TaskID], st)
	if ch, ok := r.notify[st.TaskID]; ok {
		close(ch)
		delete(r.notify, st.TaskID)
	}
}

func (r *recorder) changed(id string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.notify[id]
	if !ok {
		ch = make(chan struct{})
		r.notify[id] = ch
	}
	return ch
}

func (r *recorder) last(id string) (agent.TaskStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := r.reports[id]
	if len(rs) == 0 {
		return agent.TaskStatus{}, false
	}
	return rs[len(rs)-1], true
}

func (r *recorder) all(id string) []agent.TaskStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agent.TaskStatus(nil), r.reports[id]...)
}

// phases is the task's reported phases, repeats dropped.
func (r *recorder) phases(id string) string {
	var out []string
	for _, st := range r.all(id) {
		if len(out) == 0 || out[len(out)-1] != st.Phase {
			out = append(out, st.Phase)
		}
	}
	return strings.Join(out, " ")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// getPage GETs / on port 80 of a task that has just started, waiting for it
// to answer (at most 15 s).
func getPage(t *testing.T, ip string) string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, err := testnet.HTTPGet(t, ip, 80, "/")
		if err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", ip, err)
		}
	}
}
