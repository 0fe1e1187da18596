package netw

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"

	"github.com/gantry-dev/gantry/internal/agent"
)

// The pool keeps a few network namespaces per subnet already attached to
// its bridge, with an address leased, so that a task start skips the CNI
// plugins (about 50 ms of every start). Fargate does the same with ENIs it
// provisions ahead of tasks.
//
// A namespace is used once: the task that claims one owns it from then on
// and its teardown destroys it, so nothing a task changed inside (routes,
// addresses, firewall rules of its own) can reach a later task. A pooled
// namespace has no processes; its address answers nothing.
//
// Pool entries are ordinary records in the state directory, named
// "pool-<hex>" and marked with the subnet they belong to, so a restarted
// agent adopts them, and TeardownAll removes them with the tasks'.

const poolPrefix = "pool-"

// PoolConfig sets the pool up.
type PoolConfig struct {
	// Size is how many ready namespaces to keep per subnet in use; 0
	// turns the pool off.
	Size int
	// Idle is how long a subnet's entries stay after its last task start;
	// then they are torn down, and the bridge with them once unused.
	Idle time.Duration
	Log  *slog.Logger
}

type pool struct {
	cfg PoolConfig
	// beforeEntry, if set, runs before the pool makes each entry (tests
	// hold a refill mid-way with it). Guarded by Manager.mu.
	beforeEntry func()
	ready       map[string][]string          // subnet key -> entry ids
	spec        map[string]agent.NetworkSpec // subnet key -> how to make one
	used        map[string]time.Time         // subnet key -> last claim
	filling     map[string]bool
	ctx         context.Context
	cancel      context.CancelFunc
	done        chan struct{}
}

// StartPool turns the pool on and adopts the entries an earlier agent left.
// Call StopPool when done; entries stay for the next agent.
func (m *Manager) StartPool(cfg PoolConfig) error {
	if cfg.Size <= 0 {
		return nil
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 5 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pool{
		cfg: cfg, ready: map[string][]string{}, spec: map[string]agent.NetworkSpec{},
		used: map[string]time.Time{}, filling: map[string]bool{},
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	m.mu.Lock()
	if m.pool != nil {
		m.mu.Unlock()
		cancel()
		return fmt.Errorf("the namespace pool is already started")
	}
	ents, err := os.ReadDir(m.stateDir)
	if err != nil {
		m.mu.Unlock()
		cancel()
		return err
	}
	claimed := map[string]bool{} // CNI ids tasks took over
	var entries, broken []*record
	for _, e := range ents {
		rec, err := m.load(strings.TrimSuffix(e.Name(), ".json"))
		if err != nil || rec == nil {
			continue
		}
		if rec.Pool == "" {
			claimed[rec.CNIID] = true
		} else {
			entries = append(entries, rec)
		}
	}
	for _, rec := range entries {
		_, statErr := os.Stat(rec.NetNS)
		switch {
		case claimed[rec.TaskID]:
			// The agent stopped between a task's claim and removing the
			// entry's record: the task owns the namespace.
			os.Remove(m.recordPath(rec.TaskID))
		case statErr != nil || rec.IPv4 == "" || rec.PoolSpec == nil:
			// Half made, or its namespace went with a reboot.
			broken = append(broken, rec)
		default:
			p.ready[rec.Pool] = append(p.ready[rec.Pool], rec.TaskID)
			p.spec[rec.Pool] = *rec.PoolSpec
			p.used[rec.Pool] = time.Now()
		}
	}
	m.pool = p
	m.mu.Unlock()
	// Not in the pool, so nobody else can take them.
	for _, rec := range broken {
		if err := m.teardown(ctx, rec); err != nil {
			cfg.Log.Warn("network pool: remove a broken entry", "entry", rec.TaskID, "err", err)
		}
	}
	go m.reapIdle(p)
	return nil
}

// poolLog is the pool's logger (the default one without a pool).
func (m *Manager) poolLog() *slog.Logger {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pool == nil {
		return slog.Default()
	}
	return m.pool.cfg.Log
}

// StopPool stops refilling and reaping; the entries stay on the host for
// the next agent to adopt (or for TeardownAll).
func (m *Manager) StopPool() {
	m.mu.Lock()
	p := m.pool
	m.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

// poolKey names a subnet's entries: its CNI configuration, which fixes the
// bridge, the address range and the masquerading, is what must match.
func poolKey(conflist []byte) string {
	h := sha256.Sum256(conflist)
	return hex.EncodeToString(h[:8])
}

// claim hands a ready entry of the subnet to the task, or returns nil if
// there is none. mu is held only to take the entry out of the pool: from
// then on it is the claim's alone, and readying it for the task (its MAC,
// its record) waits for nobody.
func (m *Manager) claim(key, taskID, mac string, prefixBits int) (*Attachment, error) {
	for {
		m.mu.Lock()
		p := m.pool
		if p == nil || len(p.ready[key]) == 0 {
			if p != nil {
				p.used[key] = time.Now()
			}
			m.mu.Unlock()
			return nil, nil
		}
		p.used[key] = time.Now()
		id := p.ready[key][0]
		p.ready[key] = p.ready[key][1:]
		m.mu.Unlock()

		rec, err := m.load(id)
		if err != nil || rec == nil {
			continue
		}
		if _, err := os.Stat(rec.NetNS); err != nil {
			m.teardown(context.Background(), rec)
			continue
		}
		if err := setMAC(rec.NetNS, mac); err != nil {
			m.teardown(context.Background(), rec)
			return nil, err
		}
		// The task's record first, then the entry's goes: a crash between
		// the two leaves both, and StartPool gives the namespace to the
		// task. The entry's record names the bridge meanwhile, so the
		// task's may be made outside mu (Manager.mu).
		taken := *rec
		taken.TaskID, taken.CNIID, taken.MAC, taken.Pool, taken.PoolSpec = taskID, rec.cniID(), mac, "", nil
		if err := m.save(&taken); err != nil {
			m.teardown(context.Background(), rec)
			return nil, err
		}
		if err := os.Remove(m.recordPath(id)); err != nil {
			return nil, err
		}
		ip, _, err := net.ParseCIDR(taken.IPv4)
		if err != nil {
			return nil, err
		}
		return &Attachment{NetNSPath: taken.NetNS, IPv4: ip.String(), MAC: mac, Gateway: taken.Gateway, PrefixLength: prefixBits}, nil
	}
}

// HoldRefills keeps the pool from making entries until the returned
// release is called (once; later calls do nothing). The agent holds them
// while a task starts: making an entry runs the CNI plugins, several
// processes and tens of milliseconds of CPU, and a refill begun by a
// task's own claim ran beside that task's start and took the CPU it needed
// (a sandbox's boot keeps both cores of a small host busy). On a quiet
// 2-core host RunTask -> RUNNING went from 274 to about 195 ms in a
// sandbox and from 140 to about 110 ms in a container
// (BenchmarkIsolationStart, docs/benchmarks.md). A refill waits at most
// maxRefillHold, so a steady stream of starts still gets the pool
// refilled; claims never wait for a refill, held or not.
func (m *Manager) HoldRefills() (release func()) {
	m.mu.Lock()
	if m.holds == 0 {
		m.unheld = make(chan struct{})
	}
	m.holds++
	m.mu.Unlock()
	return sync.OnceFunc(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.holds--; m.holds == 0 {
			close(m.unheld)
		}
	})
}

// maxRefillHold bounds how long held refills wait for starts to end.
const maxRefillHold = 3 * time.Second

// WaitStarts waits until no task start holds refills back (HoldRefills),
// maxRefillHold has passed, or ctx ends: for other work made ahead of
// tasks, which would take the CPU a start needs as a refill does.
func (m *Manager) WaitStarts(ctx context.Context) { m.waitUnheld(ctx) }

// waitUnheld waits until no start holds refills back, maxRefillHold has
// passed, or ctx (the pool's) ends.
func (m *Manager) waitUnheld(ctx context.Context) {
	limit := time.NewTimer(maxRefillHold)
	defer limit.Stop()
	for {
		m.mu.Lock()
		held, unheld := m.holds > 0, m.unheld
		m.mu.Unlock()
		if !held {
			return
		}
		select {
		case <-unheld:
		case <-limit.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// refill makes the subnet's entries up to the pool's size, in the
// background, one at a time, each once no start holds refills back.
func (m *Manager) refill(key string, spec agent.NetworkSpec) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pool
	if p == nil || p.filling[key] || len(p.ready[key]) >= p.cfg.Size || p.ctx.Err() != nil {
		return
	}
	spec.MACAddress, spec.ENIID, spec.SecurityGroupIDs = "", "", nil
	p.spec[key] = spec
	p.filling[key] = true
	go m.fill(p, key, spec)
}

// fill is refill's goroutine. An entry is made outside mu and published
// when ready; reapIdle leaves a subnet being filled alone, and an entry
// finished after StopPool stays on the host for the next agent, as the
// others do.
func (m *Manager) fill(p *pool, key string, spec agent.NetworkSpec) {
	for {
		m.mu.Lock()
		if p.ctx.Err() != nil || len(p.ready[key]) >= p.cfg.Size {
			p.filling[key] = false
			m.mu.Unlock()
			return
		}
		hook := p.beforeEntry
		m.mu.Unlock()
		m.waitUnheld(p.ctx)
		if hook != nil {
			hook()
		}
		id, err := m.makeEntry(p.ctx, key, spec)
		m.mu.Lock()
		if err != nil {
			p.filling[key] = false
			m.mu.Unlock()
			if p.ctx.Err() == nil {
				p.cfg.Log.Warn("network pool: cannot make a namespace ahead of tasks", "subnet", spec.SubnetID, "err", err)
			}
			return
		}
		p.ready[key] = append(p.ready[key], id)
		m.mu.Unlock()
	}
}

// makeEntry creates one pooled namespace, attached to the subnet.
func (m *Manager) makeEntry(ctx context.Context, key string, spec agent.NetworkSpec) (string, error) {
	prefix, gw, err := subnet(spec)
	if err != nil {
		return "", err
	}
	b := make([]byte, 8)
	rand.Read(b)
	id := poolPrefix + hex.EncodeToString(b)
	rec := &record{TaskID: id, ConfL: m.conflist(spec, prefix, gw), MAC: MACFor(id), Gateway: gw.String(), Pool: key, PoolSpec: &spec}
	if err := m.create(rec); err != nil {
		return "", err
	}
	if _, err := m.attach(ctx, rec, prefix); err != nil {
		m.teardown(context.WithoutCancel(ctx), rec)
		return "", err
	}
	return id, nil
}

// reapIdle tears down the entries of subnets no task started in for the
// pool's idle time: an unused subnet should not keep a bridge and
// addresses on the host for ever.
func (m *Manager) reapIdle(p *pool) {
	defer close(p.done)
	tick := time.NewTicker(min(p.cfg.Idle/4, 30*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		m.mu.Lock()
		var idle []string
		for key, ids := range p.ready {
			if time.Since(p.used[key]) < p.cfg.Idle || p.filling[key] {
				continue
			}
			idle = append(idle, ids...)
			delete(p.ready, key)
			delete(p.used, key)
			delete(p.spec, key)
		}
		m.mu.Unlock()
		// Out of the pool: no claim can take them any more.
		for _, id := range idle {
			if rec, err := m.load(id); err == nil && rec != nil {
				if err := m.teardown(context.Background(), rec); err != nil {
					p.cfg.Log.Warn("network pool: remove an idle entry", "entry", id, "err", err)
				}
			}
		}
	}
}

// setMAC gives the claimed namespace's eth0 the task's MAC.
func setMAC(nsPath, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	return cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error { return setEthMAC(hw) })
}
