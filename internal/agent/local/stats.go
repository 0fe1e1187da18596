package local

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/metadata"
)

// statsInterval is how often running containers are sampled: the /stats
// paths return the latest sample with the one before it as "pre", as
// Docker's stats do, so rates need two.
const statsInterval = 5 * time.Second

// statsCache holds the latest sample of every running container.
type statsCache struct {
	mu        sync.Mutex
	byID      map[string]*metadata.Stats // by runtime id
	ephemeral map[string]int64           // MiB written, by task id

	// live holds what containers of shared sandboxes report of their
	// own, sampled only when read (ContainerStats).
	live liveStats
}

func newStatsCache() *statsCache {
	return &statsCache{byID: map[string]*metadata.Stats{}, ephemeral: map[string]int64{}}
}

// sampleLoop samples every task with running containers until the agent
// closes, and forgets the samples of containers no longer running.
func (a *Agent) sampleLoop() {
	tick := time.NewTicker(statsInterval)
	defer tick.Stop()
	for {
		live, liveTasks := map[string]bool{}, map[string]bool{}
		for _, t := range a.taskList() {
			rec := t.record()
			for _, c := range rec.Status.Containers {
				if c.Status == "RUNNING" && c.RuntimeID != "" {
					live[c.RuntimeID] = true
				}
			}
			if rec.Status.Phase != agent.PhaseStopped {
				liveTasks[rec.Spec.TaskID] = true
				a.sampleTask(rec)
			}
		}
		a.stats.mu.Lock()
		for id := range a.stats.byID {
			if !live[id] {
				delete(a.stats.byID, id)
			}
		}
		for id := range a.stats.ephemeral {
			if !liveTasks[id] {
				delete(a.stats.ephemeral, id)
			}
		}
		a.stats.mu.Unlock()
		a.stats.live.forget(live)
		select {
		case <-tick.C:
		case <-a.ctx.Done():
			return
		}
	}
}

func (a *Agent) taskList() []*task {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := make([]*task, 0, len(a.tasks))
	for _, t := range a.tasks {
		ts = append(ts, t)
	}
	return ts
}

// sampleTask reads each running container's cgroup and the task's
// network counters (shared by its containers, as they share eth0).
func (a *Agent) sampleTask(rec record) {
	now := time.Now().UTC()
	sys := systemCPUUsage()
	var nets map[string]metadata.NetworkStats
	var ephemeral int64
	samples := map[string]*metadata.Stats{}
	for _, c := range rec.Status.Containers {
		if c.RuntimeID == "" {
			continue
		}
		if u, err := a.client.SnapshotService(images.Snapshotter).Usage(a.ctx, c.RuntimeID); err == nil {
			ephemeral += u.Size
		}
		if c.Status != "RUNNING" {
			continue
		}
		cg, err := cgroup1.Load(cgroup1.StaticPath(containerCgroup(cgroupName(&rec), statsCgroupID(&rec, c.RuntimeID))))
		if err != nil {
			continue
		}
		m, err := cg.Stat(cgroup1.IgnoreNotExist)
		if err != nil {
			continue
		}
		s := &metadata.Stats{Read: now, Name: c.Name, ID: c.RuntimeID}
		fillStats(s, m, sys, uint64(rec.Spec.MemoryMiB)*mib)
		if sandboxOf(&rec) != "" {
			// The sandbox's cgroup has only the task's limit; the
			// container's own is what its definition says (and what
			// Fargate reports), not one the host enforces inside it.
			for _, cs := range rec.Spec.Containers {
				if l := uint64(cs.MemoryMiB) * mib; cs.Name == c.Name && l > 0 && l < s.MemoryStats.Limit {
					s.MemoryStats.Limit = l
				}
			}
		}
		if procs, err := cg.Processes(cgroup1.Memory, true); err == nil {
			s.NumProcs = uint32(len(procs))
			// Any process in the task's network namespace will do; a
			// gVisor sandbox's cgroup also holds its platform's stub
			// processes, which live in an empty one of their own.
			for _, p := range procs {
				if len(nets) > 0 {
					break
				}
				nets = netDev(p.Pid)
			}
		}
		samples[c.RuntimeID] = s
	}
	a.stats.mu.Lock()
	defer a.stats.mu.Unlock()
	a.stats.ephemeral[rec.Spec.TaskID] = ephemeral >> 20
	for id, s := range samples {
		s.Networks = nets
		if prev := a.stats.byID[id]; prev != nil {
			s.PreRead, s.PreCPUStats = prev.Read, prev.CPUStats
			if dt := s.Read.Sub(prev.Read).Seconds(); dt > 0 && nets != nil {
				s.NetworkRates = &metadata.NetworkRates{}
				for name, n := range nets {
					p := prev.Networks[name]
					s.NetworkRates.RxBytesPerSec += float64(n.RxBytes-min(p.RxBytes, n.RxBytes)) / dt
					s.NetworkRates.TxBytesPerSec += float64(n.TxBytes-min(p.TxBytes, n.TxBytes)) / dt
				}
			}
		}
		a.stats.byID[id] = s
	}
}

// statsCgroupID is the runtime id whose cgroup holds a container's
// processes. In a task of one gVisor sandbox that is the sandbox's root
// container's for every container: the host sees the sentry and its
// processes, not which container an allocation or a thread belongs to, so
// its samples are the sandbox's numbers, the task's totals (Usage); what
// each container uses of them is the sentry's to say (ContainerStats).
func statsCgroupID(rec *record, runtimeID string) string {
	if s := sandboxOf(rec); s != "" {
		return s
	}
	return runtimeID
}

func fillStats(s *metadata.Stats, m *v1.Metrics, sys uint64, taskLimit uint64) {
	if cpu := m.CPU; cpu != nil {
		if u := cpu.Usage; u != nil {
			s.CPUStats.CPUUsage = metadata.CPUUsage{TotalUsage: u.Total, PercpuUsage: u.PerCPU, UsageInKernelmode: u.Kernel, UsageInUsermode: u.User}
		}
		if th := cpu.Throttling; th != nil {
			s.CPUStats.ThrottlingData = metadata.ThrottlingData{Periods: th.Periods, ThrottledPeriods: th.ThrottledPeriods, ThrottledTime: th.ThrottledTime}
		}
	}
	s.CPUStats.SystemUsage = sys
	s.CPUStats.OnlineCPUs = uint32(runtime.NumCPU())
	if mem := m.Memory; mem != nil {
		if u := mem.Usage; u != nil {
			s.MemoryStats.Usage, s.MemoryStats.MaxUsage, s.MemoryStats.Failcnt = u.Usage, u.Max, u.Failcnt
			// A container without a limit of its own is bounded by the
			// task's, which its cgroup only inherits.
			s.MemoryStats.Limit = u.Limit
			if taskLimit > 0 && (u.Limit == 0 || u.Limit > taskLimit) {
				s.MemoryStats.Limit = taskLimit
			}
		}
		s.MemoryStats.Stats = map[string]uint64{
			"cache": mem.Cache, "rss": mem.RSS, "rss_huge": mem.RSSHuge, "mapped_file": mem.MappedFile,
			"dirty": mem.Dirty, "writeback": mem.Writeback, "pgpgin": mem.PgPgIn, "pgpgout": mem.PgPgOut,
			"pgfault": mem.PgFault, "pgmajfault": mem.PgMajFault, "inactive_anon": mem.InactiveAnon,
			"active_anon": mem.ActiveAnon, "inactive_file": mem.InactiveFile, "active_file": mem.ActiveFile,
			"unevictable": mem.Unevictable, "hierarchical_memory_limit": mem.HierarchicalMemoryLimit,
			"total_cache": mem.TotalCache, "total_rss": mem.TotalRSS,
			"total_inactive_file": mem.TotalInactiveFile,
		}
	}
	if p := m.Pids; p != nil {
		s.PidsStats = metadata.PidsStats{Current: p.Current, Limit: p.Limit}
	}
	if b := m.Blkio; b != nil {
		s.BlkioStats = metadata.BlkioStats{
			IoServiceBytesRecursive: blkio(b.IoServiceBytesRecursive),
			IoServicedRecursive:     blkio(b.IoServicedRecursive),
			IoQueuedRecursive:       blkio(b.IoQueuedRecursive),
			IoServiceTimeRecursive:  blkio(b.IoServiceTimeRecursive),
			IoWaitTimeRecursive:     blkio(b.IoWaitTimeRecursive),
			IoMergedRecursive:       blkio(b.IoMergedRecursive),
			IoTimeRecursive:         blkio(b.IoTimeRecursive),
			SectorsRecursive:        blkio(b.SectorsRecursive),
		}
	}
}

// blkio converts cgroup1's entries; Docker sends [] rather than null.
func blkio(in []*v1.BlkIOEntry) []metadata.BlkioEntry {
	out := []metadata.BlkioEntry{}
	for _, e := range in {
		out = append(out, metadata.BlkioEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value})
	}
	return out
}

// systemCPUUsage is the host's CPU time in ns, from /proc/stat's cpu line,
// as Docker computes system_cpu_usage (clock ticks are 1/100 s on Linux).
func systemCPUUsage() uint64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[0] != "cpu" {
			continue
		}
		var ticks uint64
		for _, v := range fields[1:8] {
			n, _ := strconv.ParseUint(v, 10, 64)
			ticks += n
		}
		return ticks * (1e9 / 100)
	}
	return 0
}

// netDev reads the interface counters of pid's network namespace, but
// loopback, which Docker's stats leave out too.
func netDev(pid int) map[string]metadata.NetworkStats {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/dev")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]metadata.NetworkStats{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		name = strings.TrimSpace(name)
		if !ok || name == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 12 {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out[name] = metadata.NetworkStats{
			RxBytes: n(0), RxPackets: n(1), RxErrors: n(2), RxDropped: n(3),
			TxBytes: n(8), TxPackets: n(9), TxErrors: n(10), TxDropped: n(11),
		}
	}
	return out
}

// TaskMetadata answers the task metadata endpoint for the container with
// runtime id id. A running container not sampled yet is sampled now, so
// its first request has its task's ephemeral storage use, and its first
// /stats numbers.
func (a *Agent) TaskMetadata(id string) (metadata.Task, bool) {
	for _, t := range a.taskList() {
		rec := t.record()
		for i, c := range rec.Status.Containers {
			if c.RuntimeID != id {
				continue
			}
			a.stats.mu.Lock()
			_, sampled := a.stats.byID[id]
			a.stats.mu.Unlock()
			if !sampled && c.Status == "RUNNING" {
				a.sampleTask(rec)
			}
			if c.Status == "PENDING" {
				// It asked, so its process runs: the record lags its start
				// by the moment between runc starting it and run noting it.
				rec.Status.Containers[i].Status = "RUNNING"
			}
			out := metadata.Task{Spec: rec.Spec, Status: rec.Status, Self: i, DesiredStatus: "RUNNING"}
			if rec.StopRequested || rec.Status.Phase == agent.PhaseStopping || rec.Status.Phase == agent.PhaseStopped {
				out.DesiredStatus = "STOPPED"
			}
			a.stats.mu.Lock()
			out.EphemeralUsedMiB = a.stats.ephemeral[rec.Spec.TaskID]
			a.stats.mu.Unlock()
			return out, true
		}
	}
	return metadata.Task{}, false
}

// Usage returns the latest sample of each task with sampled running
// containers, for CloudWatch's AWS/ECS metrics (agent.UsageSource).
func (a *Agent) Usage(ctx context.Context) ([]agent.TaskUsage, error) {
	var out []agent.TaskUsage
	for _, t := range a.taskList() {
		rec := t.record()
		if rec.Status.Phase == agent.PhaseStopped {
			continue
		}
		u := agent.TaskUsage{TaskID: rec.Spec.TaskID, TaskARN: rec.Spec.TaskARN, Cluster: rec.Spec.Cluster, CPU: rec.Spec.CPU, MemoryMiB: rec.Spec.MemoryMiB, HasCPU: true}
		n := 0
		// The containers of one sandbox each report the sandbox's cgroup
		// (statsCgroupID): the task holds it once.
		counted := map[string]bool{}
		a.stats.mu.Lock()
		for _, c := range rec.Status.Containers {
			s := a.stats.byID[c.RuntimeID]
			if c.RuntimeID == "" || s == nil || counted[statsCgroupID(&rec, c.RuntimeID)] {
				continue
			}
			counted[statsCgroupID(&rec, c.RuntimeID)] = true
			n++
			if s.Read.After(u.Time) {
				u.Time = s.Read
			}
			// The working set, as docker and cAdvisor count it: without the
			// file cache the kernel can drop. Not without all of "cache":
			// that holds shared memory too, which is where a gVisor
			// sandbox keeps its application memory (a memfd).
			used := s.MemoryStats.Usage
			if inactive := s.MemoryStats.Stats["total_inactive_file"]; inactive < used {
				used -= inactive
			}
			u.MemoryBytes += used
			dt := s.Read.Sub(s.PreRead).Seconds()
			cur, pre := s.CPUStats.CPUUsage.TotalUsage, s.PreCPUStats.CPUUsage.TotalUsage
			if s.PreRead.IsZero() || dt <= 0 || cur < pre {
				u.HasCPU = false
				continue
			}
			u.CPUUnits += float64(cur-pre) / 1e9 / dt * 1024
		}
		a.stats.mu.Unlock()
		if n > 0 {
			out = append(out, u)
		}
	}
	return out, nil
}

var _ agent.UsageSource = (*Agent)(nil)

var _ metadata.Provider = (*Agent)(nil)
