package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/images"
)

const (
	defaultStopTimeout = 30 * time.Second
	maxStopTimeout     = 120 * time.Second

	reasonEssentialExited = "Essential container in task exited"
	reasonOOM             = "OutOfMemoryError: Container killed due to memory usage"
)

// task is one task: its record, guarded by mu, and the goroutine (run)
// that alone changes it after StartTask.
type task struct {
	a   *Agent
	id  string
	log *slog.Logger

	mu  sync.Mutex
	rec record

	stopOnce sync.Once
	stopCh   chan struct{} // closed by StopTask
	events   chan event    // from the containers' watchers and health checks
	done     chan struct{} // closed when run returns
}

func newTask(a *Agent, rec record) *task {
	t := &task{
		a: a, id: rec.Spec.TaskID, log: a.log.With("task", rec.Spec.TaskID), rec: rec,
		stopCh: make(chan struct{}), events: make(chan event, 8), done: make(chan struct{}),
	}
	if rec.StopRequested {
		close(t.stopCh)
		t.stopOnce.Do(func() {})
	}
	return t
}

func (t *task) status() agent.TaskStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return copyStatus(t.rec.Status)
}

func copyStatus(st agent.TaskStatus) agent.TaskStatus {
	st.Containers = append([]agent.ContainerStatus(nil), st.Containers...)
	return st
}

func (t *task) requestStop() error {
	var err error
	t.stopOnce.Do(func() {
		t.mu.Lock()
		stopped := t.rec.Status.Phase == agent.PhaseStopped
		if !stopped {
			t.rec.StopRequested = true
			err = t.a.save(&t.rec)
		}
		t.mu.Unlock()
		close(t.stopCh)
	})
	return err
}

// update changes the record, stores it and reports it. Only run calls it,
// so reports for a task go out in order.
func (t *task) update(ctx context.Context, change func(rec *record)) {
	t.mu.Lock()
	change(&t.rec)
	if err := t.a.save(&t.rec); err != nil {
		t.log.Error("cannot store task record", "err", err)
	}
	st := copyStatus(t.rec.Status)
	t.mu.Unlock()
	t.a.cfg.Reporter.TaskChanged(ctx, st)
}

// keep changes the record in memory only; the next update stores and
// reports it. For what nothing needs after a crash (a restarted agent finds
// containers by id and label), off a start's critical path.
func (t *task) keep(change func(rec *record)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	change(&t.rec)
}

func (t *task) record() record {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rec
	r.Status = copyStatus(r.Status)
	return r
}

type event struct {
	idx    int
	exit   *containerd.ExitStatus // the container's process ended
	lost   string                 // the container vanished; why
	health string                 // its health status changed
}

// ctr is run's view of one container.
type ctr struct {
	idx     int
	spec    *agent.ContainerSpec
	id      string // containerd id, also runtimeId
	image   containerd.Image
	c       containerd.Container
	t       containerd.Task
	started bool
	exited  bool
	code    *int
	health  string
	skipped bool // will never start

	fresh      bool  // created by this run: its upper layer starts empty
	viewReady  bool  // its image view exists (made while the network was)
	createErr  error // creating it ahead of its start failed
	stopHealth context.CancelFunc
	stopMemory context.CancelFunc
	overLimit  atomic.Bool // watchMemory killed it for its hard limit
	kill       *time.Timer
}

// runner is the state of one run of a task's goroutine.
type runner struct {
	t        *task
	ctx      context.Context // ends when run returns
	ctrs     []*ctr
	stopping bool
	ready    time.Time    // when preparation finished: start timeouts count from here
	secrets  *taskSecrets // read by loadSecrets; memory only

	// firewall delivers the result of applying the task's security
	// groups, which runs while the containers are created; nothing starts
	// before it is in.
	firewall chan error

	// Where a start's time went, logged once the task runs: the start
	// path is what users wait on, and the benchmark's breakdown reads it.
	begun time.Time
	marks []mark

	// startDone ends the task's hold on the network pool's refills
	// (netw.HoldRefills), taken while it starts: once it runs or stops.
	startDone func()
	// pooled is set when this runner took the task's sandbox from the
	// pool (takePooled).
	pooled bool
}

type mark struct {
	step string
	at   time.Time
}

func (r *runner) mark(step string) {
	r.marks = append(r.marks, mark{step, time.Now()})
}

// timings lists each step's duration since the step before it.
func (r *runner) timings() []any {
	out := []any{"total", time.Since(r.begun).Round(100 * time.Microsecond)}
	prev := r.begun
	for _, m := range r.marks {
		out = append(out, m.step, m.at.Sub(prev).Round(100*time.Microsecond))
		prev = m.at
	}
	return out
}

func (t *task) run(agentCtx context.Context) {
	defer close(t.done)
	ctx, cancel := context.WithCancel(agentCtx)
	defer cancel()
	rec := t.record()
	r := &runner{t: t, ctx: ctx, begun: time.Now(), startDone: func() {}}
	if rec.Status.Phase == agent.PhasePending && !rec.StopRequested {
		r.startDone = t.a.net.HoldRefills()
		defer r.startDone()
	}
	used := map[string]bool{}
	for i := range rec.Spec.Containers {
		id := runtimeID(t.id, rec.Spec.Containers[i].Name)
		if used[id] { // two names with one checksum: the spec's order decides, as stably
			id = fmt.Sprintf("%s-%d", id, i)
		}
		used[id] = true
		r.ctrs = append(r.ctrs, &ctr{
			idx: i, spec: &rec.Spec.Containers[i], id: id,
			health: rec.Status.Containers[i].HealthStatus,
		})
	}
	if rec.Status.Phase == agent.PhasePending && !rec.StopRequested {
		t.a.cfg.Reporter.TaskChanged(ctx, rec.Status)
	}
	if err := r.reattach(rec); err != nil {
		if ctx.Err() != nil {
			return
		}
		r.fail(agent.StopFailedToStart, err)
	}
	if !r.stopping && rec.Status.Phase == agent.PhasePending {
		if err := r.prepare(); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.fail(agent.StopFailedToStart, err)
		}
	}
	r.ready = time.Now()
	if !r.loop() {
		return
	}
	r.cleanup()
}

// reattach finds the containers an earlier agent created. Those that ran
// are watched again (a stopped one reports its exit at once); those created
// but never started are removed, to be created afresh.
func (r *runner) reattach(rec record) error {
	if rec.StopRequested || rec.Status.Phase == agent.PhaseStopping {
		r.stopping = true
	}
	for _, c := range r.ctrs {
		st := rec.Status.Containers[c.idx]
		wasStarted := st.Status != "PENDING"
		if st.Status == "STOPPED" {
			c.started, c.exited, c.code = wasStarted, true, st.ExitCode
		}
		cc, err := r.t.a.client.LoadContainer(r.ctx, c.id)
		if errdefs.IsNotFound(err) {
			if wasStarted && !c.exited {
				c.started = true
				r.lost(c, "the container disappeared while the agent was down")
			}
			continue
		}
		if err != nil {
			return err
		}
		c.c = cc
		if c.exited {
			continue
		}
		tk, err := cc.Task(r.ctx, nil)
		if errdefs.IsNotFound(err) {
			if wasStarted {
				c.started = true
				r.lost(c, "the container's process disappeared while the agent was down")
				continue
			}
			if err := cc.Delete(r.ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			c.c = nil
			continue
		}
		if err != nil {
			return err
		}
		s, err := tk.Status(r.ctx)
		if err != nil {
			return err
		}
		if lc := c.spec.LogConfig; lc != nil && lc.Driver == "awslogs" && s.Status == containerd.Running {
			// Read the output the container wrote while no agent was
			// there; it waited in containerd's pipes.
			cp, err := r.t.a.openCapture(r.ctx, rec.Spec, c.spec)
			if err != nil {
				return err
			}
			stdout, stderr := cp.writers()
			if tk, err = cc.Task(r.ctx, cio.NewAttach(cio.WithStreams(nil, stdout, stderr))); err != nil {
				return err
			}
		}
		if s.Status == containerd.Created {
			tk.Delete(r.ctx, containerd.WithProcessKill)
			if err := cc.Delete(r.ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			c.c = nil
			continue
		}
		c.t, c.started = tk, true
		if err := r.watch(c); err != nil {
			return err
		}
		if s.Status == containerd.Running && !r.stopping {
			r.startHealth(c)
			r.watchMemory(c)
		}
		if r.stopping {
			r.stopContainer(c)
		}
	}
	return nil
}

// prepare gets the images, the network, the cgroup and the files the
// containers mount. Each step is skipped when a run before this one did it.
// StopTask cancels it.
func (r *runner) prepare() error {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go func() {
		select {
		case <-r.t.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	// Secrets first, as the ECS agent: registry credentials are one.
	if err := r.loadSecrets(ctx); err != nil {
		return err
	}
	r.mark("secrets")
	rec := r.t.record()
	if rec.Status.PullStartedAt == nil {
		r.t.update(r.ctx, func(rec *record) { rec.Status.PullStartedAt = now() })
	}
	for _, c := range r.ctrs {
		img, err := r.ensureImage(ctx, c)
		if err != nil {
			return err
		}
		c.image = img
	}
	if r.stopRequested() {
		return nil
	}
	if rec.Status.PullStoppedAt == nil {
		r.t.update(r.ctx, func(rec *record) { rec.Status.PullStoppedAt = now() })
	}
	r.mark("images")
	if rec.Network == nil && rec.Sandbox == "" && r.takePooled(rec) {
		rec = r.t.record()
		r.mark("pool")
	}

	// The task's cgroup and filesystem do not depend on its network, and
	// each costs tens of milliseconds: make them while CNI runs. Every
	// return below waits for them, so clean-up never races a half-made one.
	host, cgroup := make(chan error, 1), make(chan error, 1)
	go func() { host <- r.prepareHost(rec, cgroup) }()
	hostDone := false
	defer func() {
		if !hostDone {
			<-host
		}
	}()
	// So are the image views of the containers created below; a view
	// that fails here is made again, and its error reported, by create.
	views := make(chan struct{})
	go func() {
		defer close(views)
		for _, c := range r.ctrs {
			if c.c == nil && len(c.spec.DependsOn) == 0 && c.image != nil {
				c.viewReady = r.rootfsView(r.ctx, c, c.image) == nil
			}
		}
	}()
	defer func() { <-views }() // clean-up removes views: none may come after

	if rec.Network == nil {
		// An earlier agent may have died between Setup and recording it.
		// netw records a task before touching the host, so a task it has
		// no record of has nothing to clear (and skipping the CNI DEL
		// saves a plugin run on every start).
		if left, err := r.t.a.net.Has(r.t.id); err != nil || left {
			if err := r.t.a.net.Teardown(ctx, r.t.id, rec.Spec.Network); err != nil {
				return fmt.Errorf("network set-up: clearing an earlier attempt: %w", err)
			}
		}
		att, err := r.t.a.net.Setup(ctx, r.t.id, rec.Spec.Network)
		if err != nil {
			if r.stopRequested() {
				return nil
			}
			// Setup may have got half-way; Teardown at clean-up undoes it.
			return fmt.Errorf("network set-up: %w", err)
		}
		r.t.update(r.ctx, func(rec *record) {
			rec.Network = att
			rec.Status.IPv4Address = att.IPv4
			rec.Status.MACAddress = att.MAC
			rec.Status.ConnectivityAt = now()
		})
		rec = r.t.record()
	}
	r.mark("network")
	// Before any container starts (start waits for it): a task is never
	// reachable past its security groups, not even for a moment.
	fw := make(chan error, 1)
	go func() { fw <- r.t.a.applyFirewall() }()
	r.firewall = fw // applyFirewall is serialized: clean-up cannot race it
	if err := r.writeFiles(rec); err != nil {
		return err
	}
	if err := r.t.a.efsNFSMountAll(r.t.id, rec.Spec); err != nil {
		return err
	}
	// The containers that start first need the network (their specs
	// name the namespace) but not the task's file system or cgroup:
	// create them while those and the firewall are made. A failure is
	// reported when the container would start, as if it were created
	// then. Containers that wait on others are created only when they
	// may start, as ECS does: one whose dependency fails never exists.
	<-views
	// A task in one sandbox starts it first, in the task's cgroup (so
	// once that is made): its containers' processes are created into it.
	// The ephemeral file system (for the containers' roots) and their
	// containerd records need no sandbox and are made meanwhile.
	rt, err := r.t.a.runtimeFor(rec.Spec.Isolation)
	if err != nil {
		return err
	}
	sandboxed := sandboxOf(&rec) != ""
	sandbox := make(chan error, 1)
	switch {
	case !sandboxed || r.pooled:
		sandbox <- nil
	case rec.Sandbox != "":
		// Taken from the pool by an earlier agent: it must still run.
		_, err := r.t.a.runningRoot(r.ctx, rec.Sandbox)
		sandbox <- err
	default:
		if err := <-cgroup; err != nil {
			return err
		}
		go func() { sandbox <- r.startSandbox(rt) }()
	}
	for _, c := range r.ctrs {
		if c.c == nil && len(c.spec.DependsOn) == 0 && !r.stopRequested() {
			c.createErr = r.create(c)
			if c.createErr != nil {
				break
			}
		}
	}
	serr := <-sandbox
	if sandboxed {
		r.mark("sandbox")
	}
	hostDone = true
	err = <-host
	r.mark("host")
	if serr != nil {
		return fmt.Errorf("ResourceInitializationError: %w", serr)
	}
	return err
}

// waitFirewall waits for the security groups applied during prepare.
func (r *runner) waitFirewall() error {
	if r.firewall == nil {
		return nil
	}
	err := <-r.firewall
	r.firewall = nil
	r.mark("firewall")
	if err != nil {
		return fmt.Errorf("network set-up: %w", err)
	}
	return nil
}

// prepareHost makes the task's cgroup, says so on cgroup (a task's
// sandbox starts in it), and mounts its ephemeral storage.
func (r *runner) prepareHost(rec record, cgroup chan<- error) error {
	spec := rec.Spec
	if err := createTaskCgroup(cgroupName(&rec), spec); err != nil {
		err = fmt.Errorf("task cgroup: %w", err)
		cgroup <- err
		return err
	}
	cgroup <- nil
	if err := r.t.a.mountTaskFS(spec); err != nil {
		return fmt.Errorf("ResourceInitializationError: ephemeral storage: %w", err)
	}
	return nil
}

func (r *runner) ensureImage(ctx context.Context, c *ctr) (containerd.Image, error) {
	if c.image != nil {
		return c.image, nil
	}
	img, err := images.Ensure(ctx, r.t.a.client, c.spec.Image, func(msg string) {
		r.t.log.Info(msg, "container", c.spec.Name)
	}, r.pullOptions(c)...)
	if err != nil {
		if r.stopRequested() {
			return nil, nil
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "CannotPullContainerError") {
			msg = "CannotPullContainerError: " + msg
		}
		r.t.update(r.ctx, func(rec *record) { rec.Status.Containers[c.idx].Reason = msg })
		return nil, errors.New(msg)
	}
	return img, nil
}

func (r *runner) stopRequested() bool {
	select {
	case <-r.t.stopCh:
		return true
	default:
		return false
	}
}

// loop starts containers as their dependencies allow and follows them
// until all have stopped. It returns false when the agent is closing.
func (r *runner) loop() bool {
	stopCh := r.t.stopCh
	if r.stopping {
		r.beginStop()
	}
	for {
		if !r.stopping {
			r.startReady()
			r.checkRunning()
		}
		if r.stopping && !r.anyRunning() {
			return true
		}
		var deadline <-chan time.Time
		if d, ok := r.nextStartDeadline(); ok && !r.stopping {
			deadline = time.After(time.Until(d))
		}
		select {
		case ev := <-r.t.events:
			r.handle(ev)
		case <-stopCh:
			stopCh = nil
			r.beginStop()
		case <-deadline:
		case <-r.ctx.Done():
			for _, c := range r.ctrs {
				if c.kill != nil {
					c.kill.Stop()
				}
			}
			return false
		}
	}
}

func (r *runner) anyRunning() bool {
	for _, c := range r.ctrs {
		if c.started && !c.exited {
			return true
		}
	}
	return false
}

// fail ends the task: the first reason given is the one reported.
func (r *runner) fail(code string, err error) {
	r.t.log.Warn("task failed", "stopCode", code, "err", err)
	r.t.update(r.ctx, func(rec *record) {
		if rec.Status.StopCode == "" && !rec.StopRequested {
			rec.Status.StopCode, rec.Status.StoppedReason = code, err.Error()
		}
	})
	r.beginStop()
}

// beginStop sends SIGTERM to every running container and SIGKILL after its
// stop timeout; containers not started yet never will be.
func (r *runner) beginStop() {
	r.startDone()
	if !r.stopping || r.t.status().Phase != agent.PhaseStopping {
		r.t.update(r.ctx, func(rec *record) { rec.Status.Phase = agent.PhaseStopping })
	}
	r.stopping = true
	for _, c := range r.ctrs {
		if !c.started {
			c.skipped = true
			continue
		}
		if !c.exited && c.kill == nil {
			r.stopContainer(c)
		}
	}
}

func (r *runner) stopContainer(c *ctr) {
	if c.stopHealth != nil {
		c.stopHealth()
	}
	if c.kill != nil || c.t == nil {
		return
	}
	timeout := c.spec.StopTimeout
	if timeout <= 0 {
		timeout = defaultStopTimeout
	}
	timeout = min(timeout, maxStopTimeout)
	tk, ctx := c.t, r.ctx
	if err := tk.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		r.t.log.Warn("SIGTERM failed", "container", c.spec.Name, "err", err)
	}
	c.kill = time.AfterFunc(timeout, func() {
		if err := tk.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) && ctx.Err() == nil {
			r.t.log.Warn("SIGKILL failed", "container", c.spec.Name, "err", err)
		}
	})
}

func (r *runner) handle(ev event) {
	c := r.ctrs[ev.idx]
	switch {
	case ev.health != "":
		if c.exited || c.health == ev.health {
			return
		}
		c.health = ev.health
		r.t.update(r.ctx, func(rec *record) { rec.Status.Containers[c.idx].HealthStatus = ev.health })
	case c.started && (ev.exit != nil || ev.lost != ""):
		r.exited(c, ev)
	}
}

func (r *runner) exited(c *ctr, ev event) {
	if c.exited {
		return
	}
	c.exited = true
	if c.stopHealth != nil {
		c.stopHealth()
	}
	if c.stopMemory != nil {
		c.stopMemory()
	}
	if c.kill != nil {
		c.kill.Stop()
	}
	reason := ev.lost
	var code *int
	if ev.exit != nil {
		n := int(ev.exit.ExitCode())
		code = &n
		if c.overLimit.Load() || oomKilled(r.cgroupName(), r.cgroupOf(c.id)) {
			reason = reasonOOM
		}
	}
	c.code = code
	r.t.log.Info("container exited", "container", c.spec.Name, "exitCode", deref(code), "reason", reason)
	r.t.update(r.ctx, func(rec *record) {
		cs := &rec.Status.Containers[c.idx]
		cs.Status, cs.ExitCode, cs.FinishedAt = "STOPPED", code, now()
		if reason != "" {
			cs.Reason = reason
		}
	})
	// The exit is stored: the process's shim and cgroup can go now.
	if c.t != nil {
		if _, err := c.t.Delete(r.ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			r.t.log.Warn("delete container process", "container", c.spec.Name, "err", err)
		}
	}
	// Delete waited for containerd to copy the last of the output, so the
	// lines written just before a crash are in.
	if cp := r.t.a.captureOf(r.t.id, c.spec.Name); cp != nil {
		cp.finish()
	}
	if c.spec.Essential && !r.stopping {
		r.t.update(r.ctx, func(rec *record) {
			if rec.Status.StopCode == "" && !rec.StopRequested {
				rec.Status.StopCode, rec.Status.StoppedReason = agent.StopEssentialExited, reasonEssentialExited
			}
		})
		r.beginStop()
	}
	if r.stopping && !r.anyRunning() {
		r.t.update(r.ctx, func(rec *record) { rec.Status.ExecutionStoppedAt = now() })
	}
}

// memoryPoll is how often watchMemory looks at a container's usage. A
// container that grows past its limit between two looks is killed at the
// next; the task's limit, the host cgroup's, still holds meanwhile.
const memoryPoll = 500 * time.Millisecond

// watchMemory enforces the hard memory limit of a container that shares
// its task's sandbox. On the host the sandbox is one cgroup with the task's
// limit; gVisor accounts each container's memory (annotationInSandboxCgroup)
// but enforces no limit of its own, so the agent reads the container's
// usage and, once it is over the limit, kills the container as the kernel's
// OOM killer kills one of runc's: SIGKILL (exit 137), reported as
// OutOfMemoryError, and the task goes on unless the container is essential.
//
// Reading a container's usage from the sentry is a runsc process (about
// 15 ms of CPU; 2 a second for each of 20 containers took half of one of
// this host's 2 cores). Nothing in the sandbox uses more memory than the
// whole task holds on the host, which its host cgroup counts (a file to
// read, no process): while that is within a container's limit, the
// container cannot be over it, and the sentry is asked only when it is not.
func (r *runner) watchMemory(c *ctr) {
	rec := r.t.record()
	g, ok := r.t.a.sandboxRuntime(&rec)
	if !ok || c.spec.MemoryMiB <= 0 || c.t == nil || c.c == nil {
		return
	}
	limit := uint64(c.spec.MemoryMiB) << 20
	ctx, cancel := context.WithCancel(r.ctx)
	c.stopMemory = cancel
	tk, cc, name, id := c.t, c.c, c.spec.Name, c.id
	go func() {
		// A container an older agent made without a cgroup of its own in
		// the sandbox reads the sandbox's usage split between containers,
		// which would kill the wrong one: such a one goes unwatched.
		if spec, err := cc.Spec(ctx); err != nil || spec.Annotations[annotationInSandboxCgroup] != "v2" {
			return
		}
		if err := g.showMemoryLimit(ctx, id, limit); err != nil && ctx.Err() == nil {
			r.t.log.Warn("show the container its memory limit", "container", name, "err", err)
		}
		tick := time.NewTicker(memoryPoll)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if total, ok := taskMemoryUsage(r.cgroupName()); ok && total <= limit {
				continue
			}
			used, err := g.memoryUsage(ctx, id)
			if err != nil || used <= limit {
				continue // a read fails once the container has exited: its exit ends the watch
			}
			r.t.log.Warn("container over its hard memory limit: killing it", "container", name, "usedBytes", used, "limitBytes", limit)
			c.overLimit.Store(true)
			if err := tk.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) && ctx.Err() == nil {
				r.t.log.Warn("kill the container over its memory limit", "container", name, "err", err)
				continue
			}
			return
		}
	}()
}

// taskMemoryUsage is the memory the task's processes hold on the host, as
// its cgroup counts it (page cache included): an upper bound of what any
// of its containers uses. With swap accounting the count includes swap: a
// sandbox's memory is shared memory, which a host with swap may move there.
func taskMemoryUsage(cgroup string) (uint64, bool) {
	dir := filepath.Join("/sys/fs/cgroup/memory", taskCgroup(cgroup))
	raw, err := os.ReadFile(filepath.Join(dir, "memory.memsw.usage_in_bytes"))
	if err != nil {
		raw, err = os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes"))
	}
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	return n, err == nil
}

// cgroupName names the task's cgroup (see the function).
func (r *runner) cgroupName() string {
	rec := r.t.record()
	return cgroupName(&rec)
}

// cgroupOf is the runtime id whose cgroup holds a container's processes:
// its own, or in a task of one sandbox the sandbox's, which holds them all.
func (r *runner) cgroupOf(runtimeID string) string {
	rec := r.t.record()
	return statsCgroupID(&rec, runtimeID)
}

// lost records a container whose exit code nobody can know any more.
func (r *runner) lost(c *ctr, why string) {
	r.exited(c, event{idx: c.idx, lost: why})
}

// checkRunning moves the task to RUNNING once every essential container is.
func (r *runner) checkRunning() {
	if r.t.status().Phase != agent.PhasePending || !r.essentialsStarted() {
		return
	}
	r.t.update(r.ctx, r.markRunning)
	r.logRunning()
}

func (r *runner) essentialsStarted() bool {
	for _, c := range r.ctrs {
		if c.spec.Essential && !c.started {
			return false
		}
	}
	return true
}

// markRunning is the record's change to RUNNING, in an update of its own or
// in the one that starts the last essential container.
func (r *runner) markRunning(rec *record) {
	if rec.Status.Phase == agent.PhasePending {
		rec.Status.Phase = agent.PhaseRunning
		rec.Status.StartedAt = now()
	}
}

func (r *runner) logRunning() {
	if len(r.marks) > 0 { // not for a task an earlier agent started
		r.t.log.Info("task running", r.timings()...)
	}
}

// cleanup removes everything the task had on the host but its record.
// Failures are retried a few times; a task is never left short of STOPPED.
func (r *runner) cleanup() {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = r.release(); err == nil || r.ctx.Err() != nil {
			break
		}
		r.t.log.Warn("task clean-up failed; retrying", "err", err)
		select {
		case <-time.After(time.Duration(attempt+1) * time.Second):
		case <-r.ctx.Done():
		}
	}
	if r.ctx.Err() != nil {
		return // the next agent finishes it
	}
	if err != nil {
		r.t.log.Error("task clean-up left resources behind", "err", err)
	}
	r.t.update(r.ctx, func(rec *record) {
		rec.Status.Phase = agent.PhaseStopped
		if rec.Status.ExecutionStoppedAt == nil {
			rec.Status.ExecutionStoppedAt = now()
		}
		for i := range rec.Status.Containers {
			rec.Status.Containers[i].Status = "STOPPED"
		}
	})
	r.t.a.finishTaskLogs(r.t.id)
	if err := r.t.a.applyFirewall(); err != nil {
		r.t.log.Warn("remove the task's security-group rules", "err", err)
	}
}

func (r *runner) release() error {
	var errs []error
	ctx := r.ctx
	// By label, to catch a container whose creation an earlier agent did
	// not finish recording.
	cs, err := r.t.a.client.Containers(ctx, fmt.Sprintf("labels.%q==%s", labelTask, r.t.id))
	if err != nil {
		return err
	}
	rec := r.t.record()
	root := sandboxOf(&rec)
	if rec.Sandbox != "" && !slices.ContainsFunc(cs, func(c containerd.Container) bool { return c.ID() == root }) {
		// Taken from the pool, and not labelled the task's yet.
		if cc, err := r.t.a.client.LoadContainer(ctx, root); err == nil {
			cs = append(cs, cc)
		} else if !errdefs.IsNotFound(err) {
			return err
		}
	}
	// A sandbox's root container goes last: the containers in it are
	// deleted through it.
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].ID() != root && cs[j].ID() == root })
	for _, cc := range cs {
		if tk, err := cc.Task(ctx, nil); err == nil {
			if _, err := tk.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		} else if !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
		if err := cc.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		// The containers' overlays are gone with them; now the layers
		// they stood on and the file system they wrote to can go.
		if err := r.t.a.removeViews(ctx, r.t.id); err != nil {
			errs = append(errs, err)
		} else if err := r.t.a.unmountTaskFS(r.t.id); err != nil {
			errs = append(errs, fmt.Errorf("ephemeral storage: %w", err))
		}
	}
	if err := deleteTaskCgroup(cgroupName(&rec)); err != nil {
		errs = append(errs, err)
	}
	if err := r.t.a.net.Teardown(ctx, r.t.id, rec.Spec.Network); err != nil {
		errs = append(errs, fmt.Errorf("network teardown: %w", err))
	}
	if err := os.RemoveAll(r.t.a.taskDir(r.t.id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// watch sends the container's exit to the task's loop. A broken wait (say,
// containerd restarting) is retried; the shim keeps the exit status.
func (r *runner) watch(c *ctr) error {
	ch, err := c.t.Wait(r.ctx)
	if err != nil {
		return err
	}
	tk := c.t
	go func() {
		for {
			var st containerd.ExitStatus
			select {
			case st = <-ch:
			case <-r.ctx.Done():
				return
			}
			ev := event{idx: c.idx}
			switch err := st.Error(); {
			case err == nil:
				ev.exit = &st
			case errdefs.IsNotFound(err):
				ev.lost = "the container's process disappeared"
			default:
				select {
				case <-time.After(time.Second):
				case <-r.ctx.Done():
					return
				}
				ch, _ = tk.Wait(r.ctx) // never fails: errors come on the channel
				continue
			}
			select {
			case r.t.events <- ev:
			case <-r.ctx.Done():
			}
			return
		}
	}()
	return nil
}

func now() *time.Time {
	t := time.Now().UTC()
	return &t
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
