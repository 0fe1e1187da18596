package local

import (
	"bufio"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Cgroups (v1, cgroupfs): /gantry/<task> holds the task's limits, and runc
// makes each container's cgroup below it, so the containers share them.
const cgroupRoot = "/gantry"

// cpuPeriod is the CFS period the task's CPU quota is a share of.
const cpuPeriod = 100_000

func taskCgroup(taskID string) string { return path.Join(cgroupRoot, taskID) }

func containerCgroup(taskID, runtimeID string) string {
	return path.Join(taskCgroup(taskID), runtimeID)
}

// cgroupName is what names the task's cgroup (taskCgroup): its id, or the
// pool's id for the sandbox it took from the pool (sbpool.go), booted in
// that cgroup before the task existed. runsc knows a sandbox by the
// cgroup it booted in, and puts each container's gofer in it as the
// container starts, so that name stays.
func cgroupName(rec *record) string {
	if rec.Sandbox != "" {
		return strings.TrimSuffix(rec.Sandbox, "-sandbox")
	}
	return rec.Spec.TaskID
}

// createTaskCgroup makes (or updates) the cgroup name: memory limited to
// the task's memory, CPU time to cpu/1024 cores.
func createTaskCgroup(name string, spec agent.TaskSpec) error {
	res := &specs.LinuxResources{}
	if spec.MemoryMiB > 0 {
		l := spec.MemoryMiB * mib
		res.Memory = &specs.LinuxMemory{Limit: &l}
	}
	if spec.CPU > 0 {
		quota := max(spec.CPU*cpuPeriod/1024, 1000) // the kernel's minimum is 1 ms
		period := uint64(cpuPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	_, err := cgroup1.New(cgroup1.StaticPath(taskCgroup(name)), res)
	return err
}

// deleteTaskCgroup removes the task's cgroup; runc has removed the
// containers' when their processes were deleted.
func deleteTaskCgroup(taskID string) error {
	// On a hybrid host runc also makes the containers' cgroups in the
	// unified (v2) hierarchy, which cgroup1 does not manage.
	unified := filepath.Join("/sys/fs/cgroup/unified", taskCgroup(taskID))
	if err := os.Remove(unified); err != nil && !os.IsNotExist(err) {
		return err
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(taskCgroup(taskID)))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil
	}
	if err != nil {
		return err
	}
	return cg.Delete()
}

// oomKilled says whether the kernel's OOM killer killed a process of the
// container. The count is the container's own: a kill in a sibling, which
// the task-wide limit can cause, is counted where the victim lived.
func oomKilled(taskID, runtimeID string) bool {
	f, err := os.Open(filepath.Join("/sys/fs/cgroup/memory", containerCgroup(taskID, runtimeID), "memory.oom_control"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "oom_kill" {
			n, _ := strconv.Atoi(v)
			return n > 0
		}
	}
	return false
}
