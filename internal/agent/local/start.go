package local

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/netw"
)

const (
	labelTask      = "gantry.task"
	labelContainer = "gantry.container"
	labelSandbox   = "gantry.sandbox" // on a task's root container (runtime.go)
	runtimeName    = "io.containerd.runc.v2"
)

// runtimeID names a container in containerd the way Fargate's runtimeId
// looks (<task id>-<number>): container names may be longer than
// containerd allows in an id, and the number keeps ids stable across
// agent restarts.
func runtimeID(taskID, name string) string {
	return fmt.Sprintf("%s-%d", taskID, crc32.ChecksumIEEE([]byte(name)))
}

// startReady starts every container whose dependencies are met, until no
// more can start now.
func (r *runner) startReady() {
	if r.stopRequested() {
		return // the loop is about to see the request
	}
	for progress := true; progress && !r.stopping; {
		progress = false
		for _, c := range r.ctrs {
			if c.started || c.skipped || r.stopping {
				continue
			}
			ok, why := r.depsMet(c)
			if why != "" {
				why = fmt.Sprintf("DependencyConditionNotMet: container %s: %s", c.spec.Name, why)
				if c.spec.Essential {
					r.setReason(c, why)
					r.fail(agent.StopFailedToStart, errors.New(why))
					return
				}
				c.skipped = true
				r.t.update(r.ctx, func(rec *record) {
					rec.Status.Containers[c.idx].Status = "STOPPED"
					rec.Status.Containers[c.idx].Reason = why
				})
				progress = true
				continue
			}
			if !ok {
				continue
			}
			if err := r.start(c); err != nil {
				if r.ctx.Err() != nil {
					return
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "CannotPullContainerError") && !strings.HasPrefix(msg, "ResourceInitializationError") {
					msg = "CannotStartContainerError: " + msg
				}
				r.setReason(c, msg)
				r.fail(agent.StopFailedToStart, errors.New(msg))
				return
			}
			progress = true
		}
	}
	// Nothing running means nothing can change any more: containers still
	// waiting wait on each other.
	if !r.stopping && !r.anyRunning() {
		for _, c := range r.ctrs {
			if !c.started && !c.skipped {
				why := fmt.Sprintf("DependencyConditionNotMet: container %s waits on containers that cannot start", c.spec.Name)
				r.fail(agent.StopFailedToStart, errors.New(why))
				return
			}
		}
	}
}

func (r *runner) setReason(c *ctr, reason string) {
	r.t.update(r.ctx, func(rec *record) { rec.Status.Containers[c.idx].Reason = reason })
}

func (r *runner) byName(name string) *ctr {
	for _, c := range r.ctrs {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

// depsMet says whether c may start now (ok), or why it never will.
func (r *runner) depsMet(c *ctr) (ok bool, never string) {
	ok = true
	for _, d := range c.spec.DependsOn {
		dep := r.byName(d.Container)
		if dep == nil || dep == c {
			return false, fmt.Sprintf("depends on unknown container %q", d.Container)
		}
		cond := strings.ToUpper(d.Condition)
		if dep.skipped {
			return false, fmt.Sprintf("%s did not start", dep.spec.Name)
		}
		switch cond {
		case "START", "":
			ok = ok && dep.started
		case "COMPLETE":
			ok = ok && dep.exited
		case "SUCCESS":
			if dep.exited && (dep.code == nil || *dep.code != 0) {
				return false, fmt.Sprintf("%s exited with %v, not 0", dep.spec.Name, deref(dep.code))
			}
			ok = ok && dep.exited
		case "HEALTHY":
			if dep.spec.HealthCheck == nil {
				return false, fmt.Sprintf("%s has no health check to become HEALTHY", dep.spec.Name)
			}
			if dep.health == "UNHEALTHY" || dep.exited {
				return false, fmt.Sprintf("%s did not become HEALTHY", dep.spec.Name)
			}
			ok = ok && dep.health == "HEALTHY"
		default:
			return false, fmt.Sprintf("unknown dependency condition %q", d.Condition)
		}
	}
	if !ok && c.spec.StartTimeout > 0 && time.Since(r.ready) >= c.spec.StartTimeout {
		return false, fmt.Sprintf("dependencies not met within its startTimeout (%s)", c.spec.StartTimeout)
	}
	return ok, ""
}

func (r *runner) nextStartDeadline() (time.Time, bool) {
	var next time.Time
	for _, c := range r.ctrs {
		if c.started || c.skipped || c.spec.StartTimeout <= 0 {
			continue
		}
		if d := r.ready.Add(c.spec.StartTimeout); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next, !next.IsZero()
}

// start creates c in containerd (unless that was done already) and starts
// it.
func (r *runner) start(c *ctr) error {
	ctx := r.ctx
	if c.createErr != nil {
		return c.createErr
	}
	if c.c == nil {
		if err := r.create(c); err != nil {
			return err
		}
	}
	creator := cio.LogFile(filepath.Join(r.t.a.taskDir(r.t.id), c.spec.Name+".log"))
	if lc := c.spec.LogConfig; lc != nil && lc.Driver == "awslogs" {
		cp, err := r.t.a.openCapture(ctx, r.t.record().Spec, c.spec)
		if err != nil {
			return err
		}
		stdout, stderr := cp.writers()
		creator = cio.NewCreator(cio.WithStreams(nil, stdout, stderr))
	}
	rootfs, err := r.rootfs(ctx, c, c.fresh)
	if err != nil {
		return fmt.Errorf("ResourceInitializationError: container root on the task's ephemeral storage: %w", err)
	}
	tk, err := c.c.NewTask(ctx, creator, containerd.WithRootFS(rootfs))
	if err != nil {
		return err
	}
	r.mark("newtask." + c.spec.Name)
	if err := r.waitFirewall(); err != nil {
		tk.Delete(ctx, containerd.WithProcessKill)
		return err
	}
	if err := tk.Start(ctx); err != nil {
		tk.Delete(ctx, containerd.WithProcessKill)
		return err
	}
	r.mark("start." + c.spec.Name)
	c.t, c.started = tk, true
	if err := r.watch(c); err != nil {
		return err
	}
	r.mark("watch." + c.spec.Name)
	r.watchMemory(c)
	r.t.log.Info("container started", "container", c.spec.Name, "id", c.id, "pid", tk.Pid())
	// The last essential container's start moves the task to RUNNING in
	// the same report: one store and report less on every start.
	running := r.t.status().Phase == agent.PhasePending && !r.stopRequested() && r.essentialsStarted()
	r.t.update(ctx, func(rec *record) {
		rec.Status.Containers[c.idx].Status = "RUNNING"
		rec.Status.Containers[c.idx].StartedAt = now()
		if running {
			r.markRunning(rec)
		}
	})
	if running {
		r.startDone()
		r.logRunning()
	}
	r.startHealth(c)
	return nil
}

// create makes c's container in containerd (not its process).
func (r *runner) create(c *ctr) error {
	ctx := r.ctx
	img, err := r.ensureImage(ctx, c)
	if err != nil {
		return err
	}
	// Stored and reported with the container's start.
	r.t.keep(func(rec *record) {
		rec.Status.Containers[c.idx].RuntimeID = c.id
		rec.Status.Containers[c.idx].ImageDigest = images.Digest(img)
		rec.Status.Containers[c.idx].CreatedAt = now()
	})
	rec := r.t.record()
	rt, err := r.t.a.runtimeFor(rec.Spec.Isolation)
	if err != nil {
		return err
	}
	opts, err := r.specOpts(c, img)
	if err != nil {
		return err
	}
	opts = append(append(opts, withHardening()), rt.SpecOpts(rec.Spec, sandboxOf(&rec))...)
	rtName, rtOpts := rt.Containerd()
	if !c.viewReady {
		if err := r.rootfsView(ctx, c, img); err != nil {
			return err
		}
	}
	cc, err := r.t.a.client.NewContainer(ctx, c.id,
		containerd.WithImage(img),
		withSpecSnapshot(c.id),
		containerd.WithNewSpec(opts...),
		withoutSnapshot(),
		containerd.WithContainerLabels(map[string]string{labelTask: r.t.id, labelContainer: c.spec.Name}),
		containerd.WithRuntime(rtName, rtOpts),
	)
	if err != nil {
		return err
	}
	c.c, c.fresh = cc, true
	r.mark("create." + c.spec.Name)
	return nil
}

// startSandbox starts the task's root container when it needs one of its
// own (sharedSandbox), before any of its containers is created: they join
// it. It shares the containers' shim (one per task) and has a cgroup of its
// own under the task's, which thus holds the whole sandbox.
func (r *runner) startSandbox(rt Runtime) error {
	ctx, client, id := r.ctx, r.t.a.client, sandboxID(r.t.id)
	// One an earlier agent started is kept if it runs: containers may be in
	// it. One that does not run is made again.
	if cc, err := client.LoadContainer(ctx, id); err == nil {
		if tk, err := cc.Task(ctx, nil); err == nil {
			if st, err := tk.Status(ctx); err == nil && st.Status == containerd.Running {
				return nil
			}
			if _, err := tk.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
		}
		if err := cc.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	rec := r.t.record()
	pid, err := r.t.a.bootRoot(ctx, rt, r.t.id, rec.Network, map[string]string{labelTask: r.t.id}, r.t.a.withEFSNFSNetwork(rec.Spec))
	if err != nil {
		return fmt.Errorf("the task's sandbox: %w", err)
	}
	r.t.log.Info("sandbox started", "id", id, "pid", pid)
	return nil
}

// bootRoot creates and starts the root container sandboxID(group): group
// is its shim's group and names its cgroup, containerCgroup(group,
// sandboxID(group)). It has no image: an empty read-only root, shared by
// every root, where the runtime's options mount what it runs. Its hostname
// is the one its containers get, from the address the network gives it.
func (a *Agent) bootRoot(ctx context.Context, rt Runtime, group string, nw *netw.Attachment, labels map[string]string, extra ...oci.SpecOpts) (uint32, error) {
	root := filepath.Join(a.cfg.DataDir, "agent", "sandbox-root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, err
	}
	// The mount point of what the root container runs: the root is
	// read-only, so the runtime could not make it.
	if err := os.WriteFile(filepath.Join(root, pausePath), nil, 0o644); err != nil {
		return 0, err
	}
	id := sandboxID(group)
	opts := append([]oci.SpecOpts{
		oci.WithRootFSPath(root),
		oci.WithHostname(defaultHostname(nw.IPv4)),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: nw.NetNSPath}),
		oci.WithCgroup(containerCgroup(group, id)),
		oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": group}),
		withHardening(),
	}, append(rt.SandboxOpts(), extra...)...)
	rtName, rtOpts := rt.Containerd()
	labels[labelSandbox] = "root"
	cc, err := a.client.NewContainer(ctx, id,
		containerd.WithNewSpec(opts...),
		containerd.WithContainerLabels(labels),
		containerd.WithRuntime(rtName, rtOpts),
	)
	if err != nil {
		return 0, err
	}
	tk, err := cc.NewTask(ctx, cio.NullIO)
	if err != nil {
		return 0, err
	}
	if err := tk.Start(ctx); err != nil {
		tk.Delete(ctx, containerd.WithProcessKill)
		return 0, err
	}
	return tk.Pid(), nil
}
