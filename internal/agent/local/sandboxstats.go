package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/metadata"
)

// The containers of a task's one gVisor sandbox share one host cgroup, so
// the host cannot tell their usage apart; the sentry can (each has a cgroup
// of its own inside it: annotationInSandboxCgroup), but asking it is a
// runsc process of about 14 ms of CPU. Sampling every container that way
// all the time would cost more than the tasks it watches, so a container's
// own numbers are read only when someone reads its stats, and kept for
// liveStatsTTL so that a burst of readers costs one call. The task's totals
// (CloudWatch, billing) stay on the host cgroup, sampled by sampleLoop.

// liveStatsTTL is how long a container's sentry sample answers for it.
// Docker's stats stream samples once a second: readers polling faster than
// that see the same numbers, as they would there.
const liveStatsTTL = time.Second

// liveStatsFirstGap is the wait between the two samples taken for a
// container read for the first time, so that its first answer already has
// precpu_stats to compute a CPU percentage from, as Docker's one-shot
// stats do.
const liveStatsFirstGap = 250 * time.Millisecond

// liveStats is the cache of on-demand samples, by runtime id.
type liveStats struct {
	mu   sync.Mutex
	byID map[string]*liveEntry
}

type liveEntry struct {
	mu  sync.Mutex // held while sampling, so concurrent readers share one call
	cur *metadata.Stats
}

func (l *liveStats) entry(id string) *liveEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byID == nil {
		l.byID = map[string]*liveEntry{}
	}
	e := l.byID[id]
	if e == nil {
		e = &liveEntry{}
		l.byID[id] = e
	}
	return e
}

// forget drops the samples of containers not in live.
func (l *liveStats) forget(live map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.byID {
		if !live[id] {
			delete(l.byID, id)
		}
	}
}

// ContainerStats answers the /stats paths: the stats of the task's
// containers with runtime ids ids, nil for one not running. A container
// of a shared sandbox reports its own usage from the sentry (sampled now,
// unless a sample younger than liveStatsTTL is at hand); any other, its
// cgroup's latest sample, as sampleLoop keeps it.
func (a *Agent) ContainerStats(t metadata.Task, ids []string) map[string]*metadata.Stats {
	out := map[string]*metadata.Stats{}
	running := map[string]agent.ContainerStatus{}
	for _, c := range t.Status.Containers {
		if c.RuntimeID != "" && c.Status == "RUNNING" {
			running[c.RuntimeID] = c
		}
	}
	a.stats.mu.Lock()
	for _, id := range ids {
		if s := a.stats.byID[id]; s != nil {
			cp := *s
			out[id] = &cp
		} else {
			out[id] = nil
		}
	}
	a.stats.mu.Unlock()
	a.mu.Lock()
	tk := a.tasks[t.Spec.TaskID]
	a.mu.Unlock()
	if tk == nil {
		return out
	}
	rec := tk.record()
	g, ok := a.sandboxRuntime(&rec)
	if !ok {
		return out
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, id := range ids {
		c, ok := running[id]
		if !ok {
			continue
		}
		host := out[id]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := a.stats.live.sample(a.ctx, g, t.Spec, c, host)
			if err != nil {
				// Gone between the record and the call, or a sentry that
				// does not answer: the sandbox's numbers are better than
				// none.
				a.log.Debug("read a sandboxed container's stats", "container", c.Name, "err", err)
				return
			}
			mu.Lock()
			out[id] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// sample returns a copy of c's latest sentry sample, taking a new one when
// the latest is older than liveStatsTTL. host is the task's host sample
// for c (nil: none yet), which lends the task's network counters when the
// sentry has none.
func (l *liveStats) sample(ctx context.Context, g *gvisorRuntime, spec agent.TaskSpec, c agent.ContainerStatus, host *metadata.Stats) (*metadata.Stats, error) {
	e := l.entry(c.RuntimeID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil && time.Since(e.cur.Read) < liveStatsTTL {
		cp := *e.cur
		return &cp, nil
	}
	if e.cur == nil {
		first, err := g.sentryStats(ctx, spec, c)
		if err != nil {
			return nil, err
		}
		e.cur = first
		select {
		case <-time.After(liveStatsFirstGap):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s, err := g.sentryStats(ctx, spec, c)
	if err != nil {
		return nil, err
	}
	prev := e.cur
	s.PreRead, s.PreCPUStats = prev.Read, prev.CPUStats
	// runsc shares the sandbox's host CPU time out between its containers
	// in proportion to the sentry's own count, a proportion that moves: a
	// container's total may come out a little below the last one, which
	// readers computing a rate from the two would take for a huge one.
	if s.CPUStats.CPUUsage.TotalUsage < prev.CPUStats.CPUUsage.TotalUsage {
		s.CPUStats.CPUUsage.TotalUsage = prev.CPUStats.CPUUsage.TotalUsage
	}
	if len(s.Networks) == 0 && host != nil {
		s.Networks = host.Networks
	}
	if dt := s.Read.Sub(prev.Read).Seconds(); dt > 0 && len(s.Networks) > 0 {
		s.NetworkRates = &metadata.NetworkRates{}
		for name, n := range s.Networks {
			p := prev.Networks[name]
			s.NetworkRates.RxBytesPerSec += float64(n.RxBytes-min(p.RxBytes, n.RxBytes)) / dt
			s.NetworkRates.TxBytesPerSec += float64(n.TxBytes-min(p.TxBytes, n.TxBytes)) / dt
		}
	}
	e.cur = s
	cp := *s
	return &cp, nil
}

// sentryEvent is what `runsc events --stats` prints: runc's event shape,
// which gVisor fills with the container's own pids, memory (its cgroup's
// memory.current in the sentry) and CPU time (its share of the sandbox's
// host CPU time, split as the sentry counted it), plus the sandbox's
// network interfaces (netstack's, shared by its containers).
type sentryEvent struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		CPU struct {
			Usage struct {
				Kernel uint64   `json:"kernel"`
				User   uint64   `json:"user"`
				Total  uint64   `json:"total"`
				PerCPU []uint64 `json:"percpu"`
			} `json:"usage"`
		} `json:"cpu"`
		Memory struct {
			Usage struct {
				Usage uint64 `json:"usage"`
			} `json:"usage"`
		} `json:"memory"`
		Pids struct {
			Current uint64 `json:"current"`
		} `json:"pids"`
		NetworkInterfaces []*struct {
			Name                                    string
			RxBytes, RxPackets, RxErrors, RxDropped uint64
			TxBytes, TxPackets, TxErrors, TxDropped uint64
		} `json:"network_interfaces"`
	} `json:"data"`
}

// sentryStats samples one container of a sandbox through runsc.
func (g *gvisorRuntime) sentryStats(ctx context.Context, spec agent.TaskSpec, c agent.ContainerStatus) (*metadata.Stats, error) {
	sys := systemCPUUsage()
	out, err := exec.CommandContext(ctx, g.runsc, "--root", runscRoot, "events", "--stats", c.RuntimeID).Output()
	if err != nil {
		return nil, fmt.Errorf("runsc events --stats %s: %w", c.RuntimeID, err)
	}
	s, err := parseSentryEvent(out, c.RuntimeID)
	if err != nil {
		return nil, err
	}
	s.Read, s.Name = time.Now().UTC(), c.Name
	// Between the two host readings, as the sentry's own took place.
	s.CPUStats.SystemUsage = (sys + systemCPUUsage()) / 2
	s.CPUStats.OnlineCPUs = uint32(runtime.NumCPU())
	s.MemoryStats.Limit = containerMemoryLimit(spec, c.Name)
	return s, nil
}

// parseSentryEvent turns runsc's event for the container id into Docker's
// stats shape. What the sentry does not count per container (the kernel
// and user split, per-CPU times, throttling, block I/O, a breakdown of
// memory) is left out, as Docker leaves out what a cgroup lacks.
func parseSentryEvent(raw []byte, id string) (*metadata.Stats, error) {
	var ev sentryEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("runsc events --stats %s: %w", id, err)
	}
	if ev.Type != "stats" || ev.ID != id {
		return nil, fmt.Errorf("runsc events --stats %s: got a %q event for %q", id, ev.Type, ev.ID)
	}
	s := &metadata.Stats{ID: id, BlkioStats: metadata.BlkioStats{
		IoServiceBytesRecursive: blkio(nil), IoServicedRecursive: blkio(nil), IoQueuedRecursive: blkio(nil),
		IoServiceTimeRecursive: blkio(nil), IoWaitTimeRecursive: blkio(nil), IoMergedRecursive: blkio(nil),
		IoTimeRecursive: blkio(nil), SectorsRecursive: blkio(nil),
	}}
	u := ev.Data.CPU.Usage
	s.CPUStats.CPUUsage = metadata.CPUUsage{TotalUsage: u.Total, UsageInKernelmode: u.Kernel, UsageInUsermode: u.User, PercpuUsage: u.PerCPU}
	s.MemoryStats.Usage = ev.Data.Memory.Usage.Usage
	s.PidsStats.Current = ev.Data.Pids.Current
	for _, n := range ev.Data.NetworkInterfaces {
		if n == nil || n.Name == "" || n.Name == "lo" {
			continue
		}
		if s.Networks == nil {
			s.Networks = map[string]metadata.NetworkStats{}
		}
		s.Networks[n.Name] = metadata.NetworkStats{
			RxBytes: n.RxBytes, RxPackets: n.RxPackets, RxErrors: n.RxErrors, RxDropped: n.RxDropped,
			TxBytes: n.TxBytes, TxPackets: n.TxPackets, TxErrors: n.TxErrors, TxDropped: n.TxDropped,
		}
	}
	return s, nil
}

// containerMemoryLimit is the memory_stats.limit of a container: its hard
// limit, else the task's, which is all that bounds it.
func containerMemoryLimit(spec agent.TaskSpec, name string) uint64 {
	limit := uint64(spec.MemoryMiB) * mib
	for _, cs := range spec.Containers {
		if l := uint64(cs.MemoryMiB) * mib; cs.Name == name && l > 0 && (limit == 0 || l < limit) {
			limit = l
		}
	}
	return limit
}
