package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	"github.com/gantry-dev/gantry/internal/agent"
)

// The sandbox pool keeps gVisor sandboxes booted ahead of tasks, one root
// container each in a network namespace of its own, so that a sandboxed
// task's start is its containers joining a running sandbox rather than
// runsc booting one (docs/architecture.md, "One sandbox per task").
//
// A pooled sandbox is made for a subnet tasks start in: its namespace,
// address and MAC come from netw as a task's would (under the pool's own
// id), and it boots with no limits in the cgroup /gantry/<id>. The task
// that takes it over gets all of that as its own: netw's record moves to
// the task (Transfer), the task records the root's id (record.Sandbox),
// and its limits are set on the pooled cgroup, which stays the task's
// (cgroupName: runsc knows the sandbox by it). Its containers join the
// root whatever their number, and the root goes with the task. Nothing of
// a pooled sandbox is reused by a second task.
//
// What the task cannot change afterwards is what the sandbox fixed at boot:
// gVisor's network stack took the namespace's address and MAC then (the
// task reports the pooled MAC; the controller takes the agent's), and its
// hostname is the address's. A task whose sandbox needs other settings at
// boot (EFS over NFS runs it on the host's network stack) starts its own.
//
// The pool's entries are not adopted by a restarted agent: each has a
// marker file from before anything of it exists, and the next agent
// destroys those no task took. A clean shutdown destroys the ready ones.

const sbPoolPrefix = "sbp-"

type sandboxPool struct {
	a      *Agent
	size   int
	idle   time.Duration
	dir    string // the entries' markers
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// ready are the booted sandboxes' ids (netw's owner of each one's
	// network, its cgroup's name and shim group) by subnet (poolSubnet),
	// oldest first.
	ready   map[string][]string
	nets    map[string]agent.NetworkSpec
	used    map[string]time.Time
	filling map[string]bool
}

// startSandboxPool turns the pool on (size sandboxes per subnet tasks
// start in), destroys the entries an earlier agent left, except those a
// task took, and boots sandboxes for the subnets of the tasks still on
// the host (recs).
func (a *Agent) startSandboxPool(size int, recs []record) error {
	p := &sandboxPool{a: a, size: size, idle: 5 * time.Minute, dir: filepath.Join(a.cfg.DataDir, "agent", "sandbox-pool"),
		ready: map[string][]string{}, nets: map[string]agent.NetworkSpec{}, used: map[string]time.Time{}, filling: map[string]bool{}}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return err
	}
	claimed := map[string]bool{}
	for _, rec := range recs {
		if rec.Sandbox != "" {
			claimed[cgroupName(&rec)] = true
		}
	}
	for _, e := range ents {
		if claimed[e.Name()] {
			os.Remove(filepath.Join(p.dir, e.Name()))
			continue
		}
		if err := p.discard(a.ctx, e.Name()); err != nil {
			a.log.Warn("sandbox pool: remove an earlier agent's entry", "entry", e.Name(), "err", err)
		}
	}
	p.ctx, p.cancel = context.WithCancel(a.ctx)
	a.sbpool = p
	p.wg.Add(1)
	go p.reapIdle()
	for _, rec := range recs {
		if rec.Status.Phase != agent.PhaseStopped && p.eligible(rec.Spec) {
			p.want(rec.Spec)
		}
	}
	return nil
}

// stop ends the pool's work and destroys its ready entries.
func (p *sandboxPool) stop() {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	var ids []string
	for _, es := range p.ready {
		ids = append(ids, es...)
	}
	p.ready = map[string][]string{}
	p.mu.Unlock()
	ctx := context.WithoutCancel(p.ctx)
	for _, id := range ids {
		if err := p.discard(ctx, id); err != nil {
			p.a.log.Warn("sandbox pool: remove an entry", "entry", id, "err", err)
		}
	}
}

// poolSubnet keys the pool by what a sandbox's network is made from.
func poolSubnet(n agent.NetworkSpec) string {
	return strings.Join([]string{n.VPCID, n.SubnetID, n.SubnetCIDR, n.Gateway}, "|")
}

// eligible says whether the task may take a pooled sandbox.
func (p *sandboxPool) eligible(spec agent.TaskSpec) bool {
	return p != nil && spec.Isolation == agent.IsolationSandbox && spec.Network.SubnetCIDR != "" &&
		!efsNFSHostNetwork(p.a.cfg.EFSMode, spec) && p.a.sandbox.Available() == nil
}

// take hands out a ready sandbox of the task's subnet, if there is one,
// and has the pool make more for the next tasks.
func (p *sandboxPool) take(spec agent.TaskSpec) (string, bool) {
	key := p.want(spec)
	p.mu.Lock()
	defer p.mu.Unlock()
	es := p.ready[key]
	if len(es) == 0 {
		return "", false
	}
	p.ready[key] = es[1:]
	return es[0], true
}

// want notes a sandboxed task of the subnet and has the pool fill up for
// it; it returns the subnet's key.
func (p *sandboxPool) want(spec agent.TaskSpec) string {
	key := poolSubnet(spec.Network)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used[key] = time.Now()
	n := spec.Network
	n.ENIID, n.MACAddress, n.SecurityGroupIDs = "", "", nil
	p.nets[key] = n
	if !p.filling[key] && p.ctx.Err() == nil {
		p.filling[key] = true
		p.wg.Add(1)
		go p.fill(key)
	}
	return key
}

// fill boots the subnet's sandboxes up to the pool's size, one at a time,
// each once no task start is under way (a boot takes the CPU a start
// needs, as netw's refills do).
func (p *sandboxPool) fill(key string) {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		n, spec := len(p.ready[key]), p.nets[key]
		if p.ctx.Err() != nil || n >= p.size {
			p.filling[key] = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.a.net.WaitStarts(p.ctx)
		e, err := p.boot(spec)
		p.mu.Lock()
		if err != nil {
			p.filling[key] = false
			p.mu.Unlock()
			if p.ctx.Err() == nil {
				p.a.log.Warn("sandbox pool: cannot boot a sandbox ahead of tasks", "subnet", spec.SubnetID, "err", err)
			}
			return
		}
		p.ready[key] = append(p.ready[key], e)
		p.mu.Unlock()
	}
}

// boot makes one pooled sandbox in the subnet.
func (p *sandboxPool) boot(spec agent.NetworkSpec) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	id := sbPoolPrefix + hex.EncodeToString(b)
	if err := os.WriteFile(filepath.Join(p.dir, id), nil, 0o600); err != nil {
		return "", err
	}
	ctx := p.ctx
	att, err := p.a.net.Setup(ctx, id, spec)
	if err == nil {
		_, err = p.a.bootRoot(ctx, p.a.sandbox, id, att, map[string]string{labelPool: id})
	}
	if err != nil {
		if derr := p.discard(context.WithoutCancel(ctx), id); derr != nil {
			err = fmt.Errorf("%w (and removing it: %v)", err, derr)
		}
		return "", err
	}
	return id, nil
}

// labelPool marks a pooled sandbox's root container with the pool's id.
const labelPool = "gantry.pool"

// discard destroys a pooled sandbox no task took: its root container,
// network, cgroups and marker.
func (p *sandboxPool) discard(ctx context.Context, id string) error {
	var errs []error
	if cc, err := p.a.client.LoadContainer(ctx, sandboxID(id)); err == nil {
		if tk, err := cc.Task(ctx, nil); err == nil {
			if _, err := tk.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
		}
		if err := cc.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	} else if !errdefs.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := p.a.net.Teardown(ctx, id, agent.NetworkSpec{}); err != nil {
		errs = append(errs, err)
	}
	if err := deleteTaskCgroup(id); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		os.Remove(filepath.Join(p.dir, id))
	}
	return errors.Join(errs...)
}

// reapIdle destroys the sandboxes of subnets no task started in for the
// pool's idle time.
func (p *sandboxPool) reapIdle() {
	defer p.wg.Done()
	tick := time.NewTicker(min(p.idle/4, 30*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		var idle []string
		for key, es := range p.ready {
			if time.Since(p.used[key]) >= p.idle && !p.filling[key] {
				idle = append(idle, es...)
				delete(p.ready, key)
			}
		}
		p.mu.Unlock()
		for _, id := range idle {
			if err := p.discard(p.ctx, id); err != nil {
				p.a.log.Warn("sandbox pool: remove an idle entry", "entry", id, "err", err)
			}
		}
	}
}

// takePooled gives the task a pooled sandbox, if the pool has one for it:
// its network, its cgroup (whose name stays: cgroupName) and its root
// container, recorded as the task's. Anything failing on the way destroys
// the pooled sandbox and leaves the task to start as without a pool.
func (r *runner) takePooled(rec record) bool {
	p := r.t.a.sbpool
	if !p.eligible(rec.Spec) {
		return false
	}
	id, ok := p.take(rec.Spec)
	if !ok {
		return false
	}
	ctx, a := r.ctx, r.t.a
	// Until the task's record names the sandbox, the entry's marker says
	// it is the pool's: an agent that dies on the way leaves the next one
	// an entry to destroy, and the task a network it sets up again.
	fail := func(err error) bool {
		r.t.log.Warn("sandbox pool: cannot take a pooled sandbox; booting one", "entry", id, "err", err)
		if err := p.discard(context.WithoutCancel(ctx), id); err != nil {
			r.t.log.Warn("sandbox pool: remove an entry", "entry", id, "err", err)
		}
		return false
	}
	root := sandboxID(id)
	cc, err := a.runningRoot(ctx, root)
	if err != nil {
		return fail(err)
	}
	att, err := a.net.Transfer(id, r.t.id)
	if err != nil {
		return fail(err)
	}
	r.t.update(r.ctx, func(rec *record) {
		rec.Sandbox = root
		rec.Network = att
		rec.Status.IPv4Address = att.IPv4
		rec.Status.MACAddress = att.MAC
		rec.Status.ConnectivityAt = now()
	})
	r.pooled = true
	os.Remove(filepath.Join(p.dir, id))
	// The task's from now on; release also finds it by rec.Sandbox.
	if _, err := cc.SetLabels(ctx, map[string]string{labelTask: r.t.id}); err != nil {
		r.t.log.Warn("label the pooled sandbox the task's", "err", err)
	}
	r.t.log.Info("sandbox taken from the pool", "id", root)
	return true
}

// runningRoot loads a root container whose sandbox must be running.
func (a *Agent) runningRoot(ctx context.Context, id string) (containerd.Container, error) {
	cc, err := a.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("the task's sandbox %s: %w", id, err)
	}
	tk, err := cc.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("the task's sandbox %s: %w", id, err)
	}
	st, err := tk.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("the task's sandbox %s: %w", id, err)
	}
	if st.Status != containerd.Running {
		return nil, fmt.Errorf("the task's sandbox %s is %s", id, st.Status)
	}
	return cc, nil
}
