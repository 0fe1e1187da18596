// Package local is the Agent for the host Gantry runs on: containerd for
// containers, CNI for each task's network namespace, cgroups for limits.
//
// Every task is one goroutine (see task.run) that owns the task's
// containers; it records each change in DataDir/agent/tasks/<id>.json
// before reporting it, so a new agent on the same data directory picks the
// task up where the last one left it: containerd's shims keep containers
// running while no agent is there.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/firewall"
	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/netw"
)

// Config wires an agent to its host.
type Config struct {
	DataDir           string // agent state lives under DataDir/agent
	ContainerdAddress string
	Reporter          agent.Reporter
	// LogSink receives the output of containers using the awslogs driver;
	// nil: such containers fail to start, as without CloudWatch Logs.
	LogSink agent.LogSink
	Log     *slog.Logger
	// InitBinary is the statically linked init run as pid 1 of containers
	// with initProcessEnabled (containerd and runc have none built in). It
	// is bind-mounted read-only into the container, so it must not need
	// the image's libraries. Empty: Debian's tini-static (apt package tini).
	InitBinary string
	// Secrets reads the values of containers' secrets and registry
	// credentials when a task starts; nil: tasks that reference any fail
	// to start.
	Secrets agent.SecretSource
	// Metadata is the task metadata endpoint whose URLs containers get in
	// ECS_CONTAINER_METADATA_URI_V4 and _URI; nil: none.
	Metadata *metadata.Server
	// EphemeralMiB, when set, replaces every task's ephemeral storage size
	// (ephemeralStorageGiB, at least 20 GiB): tests fill a small one.
	EphemeralMiB int64
	// EFSMode "nfs" makes the agent mount EFS volumes over NFS from the
	// mount target's address, as an agent on a host without the file
	// system's tree does (internal/efsnfs), instead of from the local
	// tree ("" or "local").
	EFSMode string
	// ExecURL is the base URL of the stream endpoint that serves ECS Exec
	// sessions (Agent.ExecHandler mounted there), e.g.
	// ws://127.0.0.1:8910/exec/; a session's StreamURL is it plus its id.
	ExecURL string
	// Runsc is gVisor's runsc for tasks with sandbox isolation; empty:
	// $GANTRY_RUNSC, else DefaultRunsc. Without a runsc that can start a
	// sandbox here, the agent says so at startup and refuses sandbox tasks.
	Runsc string
	// NetnsPool is how many network namespaces to keep attached to each
	// subnet in use, so that starts skip the CNI plugins (netw's pool).
	NetnsPool int
	// SandboxPool is how many gVisor sandboxes to keep booted for each
	// subnet sandboxed tasks start in, ready for the next of them
	// (sbpool.go); 0 turns the pool off.
	SandboxPool int
}

// DefaultInitBinary is tini-static from Debian's tini package.
const DefaultInitBinary = "/usr/bin/tini-static"

// Agent runs tasks on this host.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	dir    string // DataDir/agent/tasks
	client *containerd.Client
	net    *netw.Manager

	ctx    context.Context // the agent's lifetime, in Gantry's namespace
	cancel context.CancelFunc

	mu    sync.Mutex
	tasks map[string]*task

	logMu    sync.Mutex
	captures map[string]*capture // awslogs spools by task/container
	logWG    sync.WaitGroup

	stats *statsCache // latest resource samples, for the metadata endpoint

	sandbox *gvisorRuntime // sandbox isolation (see runtime.go)
	sbpool  *sandboxPool   // sandboxes booted ahead of tasks; nil: none

	fw      *firewall.Firewall
	fwMu    sync.Mutex
	fwState agent.FirewallState // the control plane's last SetFirewall

	execs execSessions // ECS Exec sessions waiting for their client
}

// New starts an agent; it recovers the tasks a previous run left.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Reporter == nil {
		cfg.Reporter = nopReporter{}
	}
	if cfg.InitBinary == "" {
		cfg.InitBinary = DefaultInitBinary
	}
	a := &Agent{cfg: cfg, log: cfg.Log, dir: filepath.Join(cfg.DataDir, "agent", "tasks"), tasks: map[string]*task{}, captures: map[string]*capture{}, stats: newStatsCache()}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	client, err := containerd.New(cfg.ContainerdAddress, containerd.WithDefaultNamespace(gcontainerd.Namespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", cfg.ContainerdAddress, err)
	}
	a.client = client
	if a.net, err = netw.New(cfg.DataDir); err != nil {
		client.Close()
		return nil, err
	}
	if err := a.net.StartPool(netw.PoolConfig{Size: cfg.NetnsPool, Log: cfg.Log}); err != nil {
		client.Close()
		return nil, err
	}
	a.ctx, a.cancel = context.WithCancel(namespaces.WithNamespace(context.Background(), gcontainerd.Namespace))
	a.fw = firewall.New(firewallTable(cfg.DataDir))
	if cfg.Runsc == "" {
		cfg.Runsc = os.Getenv("GANTRY_RUNSC")
	}
	if cfg.Runsc == "" {
		cfg.Runsc = DefaultRunsc
	}
	a.sandbox = newGvisorRuntime(cfg.Runsc, cfg.DataDir)
	if err := a.sandbox.Available(); err != nil {
		a.log.Warn("SANDBOX ISOLATION UNAVAILABLE: tasks of clusters with isolation=sandbox will be refused", "err", err)
	} else {
		a.log.Info("sandbox isolation available", "runtime", "gVisor runsc "+strings.Join(runscFlags, " "), "binary", cfg.Runsc)
	}
	a.loadFirewall()

	recs, err := a.loadRecords()
	if err != nil {
		a.Close()
		return nil, err
	}
	a.resumeCaptures()
	running := map[string]bool{}
	for _, rec := range recs {
		running[rec.Spec.TaskID] = rec.Status.Phase != agent.PhaseStopped
	}
	for key := range a.captures {
		if id, _, _ := strings.Cut(key, "/"); !running[id] {
			a.finishTaskLogs(id)
		}
	}
	a.efsNFSResume(recs)
	if cfg.SandboxPool > 0 && a.sandbox.Available() == nil {
		if err := a.startSandboxPool(cfg.SandboxPool, recs); err != nil {
			a.Close()
			return nil, err
		}
	}
	for _, rec := range recs {
		t := newTask(a, rec)
		a.tasks[rec.Spec.TaskID] = t
		if rec.Status.Phase != agent.PhaseStopped {
			a.log.Info("resuming task", "task", rec.Spec.TaskID, "phase", rec.Status.Phase)
			go t.run(a.ctx)
		} else {
			close(t.done)
		}
	}
	// Only now: the sampler reads a.tasks.
	go a.sampleLoop()
	// Tasks kept running while no agent was here, and so did their rules,
	// but the state may have moved on since (or the host rebooted).
	if err := a.applyFirewall(); err != nil {
		a.log.Warn("re-apply security groups", "err", err)
	}
	return a, nil
}

func (a *Agent) Info(ctx context.Context) (agent.HostInfo, error) {
	host, err := os.Hostname()
	if err != nil {
		return agent.HostInfo{}, err
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return agent.HostInfo{}, err
	}
	info := agent.HostInfo{
		ID:        host,
		CPUUnits:  int64(runtime.NumCPU()) * 1024,
		MemoryMiB: int64(si.Totalram) * int64(si.Unit) >> 20,
		Runtime:   "runc",
	}
	if v, err := a.client.Version(ctx); err == nil {
		info.Containerd = v.Version
	}
	info.Isolations = []string{agent.IsolationContainer}
	if err := a.sandbox.Available(); err != nil {
		info.SandboxUnavailable = err.Error()
	} else {
		info.Isolations = append(info.Isolations, agent.IsolationSandbox)
	}
	return info, nil
}

// Task ids become file names, containerd ids and cgroup names.
var taskIDRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// Container names become log file names; ECS allows no more than this.
var containerNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,255}$`)

func (a *Agent) StartTask(ctx context.Context, spec agent.TaskSpec) error {
	if !taskIDRe.MatchString(spec.TaskID) {
		return fmt.Errorf("invalid task id %q", spec.TaskID)
	}
	if len(spec.Containers) == 0 {
		return errors.New("a task needs at least one container")
	}
	names, essential := map[string]bool{}, false
	for _, c := range spec.Containers {
		essential = essential || c.Essential
		if !containerNameRe.MatchString(c.Name) || names[c.Name] {
			return fmt.Errorf("container names must be unique and of letters, digits, '-' and '_': %q", c.Name)
		}
		names[c.Name] = true
		for _, m := range c.Mounts {
			// Volume names become directory names.
			if !containerNameRe.MatchString(m.Volume) || !filepath.IsAbs(m.ContainerPath) {
				return fmt.Errorf("container %s: invalid mount of volume %q at %q", c.Name, m.Volume, m.ContainerPath)
			}
		}
	}
	if !essential {
		return errors.New("a task needs at least one essential container")
	}
	if _, err := a.runtimeFor(spec.Isolation); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctx.Err() != nil {
		return errors.New("agent is closed")
	}
	if _, ok := a.tasks[spec.TaskID]; ok {
		return nil
	}
	rec := newRecord(spec)
	if err := a.save(&rec); err != nil {
		return err
	}
	t := newTask(a, rec)
	a.tasks[spec.TaskID] = t
	go t.run(a.ctx)
	return nil
}

func (a *Agent) StopTask(ctx context.Context, req agent.StopRequest) error {
	a.mu.Lock()
	t := a.tasks[req.TaskID]
	a.mu.Unlock()
	if t == nil {
		return fmt.Errorf("unknown task %q", req.TaskID)
	}
	return t.requestStop()
}

func (a *Agent) Tasks(ctx context.Context) ([]agent.TaskStatus, error) {
	a.mu.Lock()
	ts := make([]*task, 0, len(a.tasks))
	for _, t := range a.tasks {
		ts = append(ts, t)
	}
	a.mu.Unlock()
	out := make([]agent.TaskStatus, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TaskID < out[j].TaskID })
	return out, nil
}

func (a *Agent) Forget(ctx context.Context, taskID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.tasks[taskID]
	if t == nil {
		return nil
	}
	if st := t.status(); st.Phase != agent.PhaseStopped {
		return fmt.Errorf("task %s is %s, not STOPPED", taskID, st.Phase)
	}
	if err := os.Remove(a.recordPath(taskID)); err != nil && !os.IsNotExist(err) {
		return err
	}
	delete(a.tasks, taskID)
	return nil
}

// Close releases the agent's connections; running tasks keep running.
func (a *Agent) Close() error {
	a.mu.Lock()
	a.cancel()
	ts := make([]*task, 0, len(a.tasks))
	for _, t := range a.tasks {
		ts = append(ts, t)
	}
	a.mu.Unlock()
	for _, t := range ts {
		<-t.done
	}
	a.logWG.Wait()
	if a.sbpool != nil {
		a.sbpool.stop()
	}
	a.net.StopPool()
	return a.client.Close()
}

// record is what DataDir/agent/tasks/<id>.json holds.
type record struct {
	Spec          agent.TaskSpec   `json:"spec"`
	Status        agent.TaskStatus `json:"status"`
	Network       *netw.Attachment `json:"network,omitempty"`
	StopRequested bool             `json:"stopRequested,omitempty"`
	// Sandbox is the root container of a task that took a sandbox over
	// from the pool (sbpool.go); other tasks' is sandboxOf's to say.
	Sandbox string `json:"sandbox,omitempty"`
}

func newRecord(spec agent.TaskSpec) record {
	st := agent.TaskStatus{TaskID: spec.TaskID, Phase: agent.PhasePending}
	for _, c := range spec.Containers {
		st.Containers = append(st.Containers, agent.ContainerStatus{Name: c.Name, Status: "PENDING", HealthStatus: "UNKNOWN"})
	}
	return record{Spec: spec, Status: st}
}

func (a *Agent) recordPath(id string) string { return filepath.Join(a.dir, id+".json") }

// taskDir holds a running task's files: hosts, resolv.conf, container logs.
func (a *Agent) taskDir(id string) string { return filepath.Join(a.dir, id) }

// save writes the record atomically, so a crash leaves the old or the new.
func (a *Agent) save(rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	path := a.recordPath(rec.Spec.TaskID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (a *Agent) loadRecords() ([]record, error) {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, err
	}
	var out []record
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.Spec.TaskID == "" {
			a.log.Warn("ignoring unreadable task record", "file", e.Name(), "err", err)
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}

type nopReporter struct{}

func (nopReporter) TaskChanged(context.Context, agent.TaskStatus) {}
