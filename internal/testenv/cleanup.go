package testenv

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/netw"
)

// stopTasks stops, through the API, every task a test left running, and
// waits for them to reach STOPPED so the server cleans up after them as it
// would for a user. It reports whether all of them got there.
func (s *Server) stopTasks(timeout time.Duration) bool {
	if s.cmd == nil || s.Creds == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := s.ECS()
	clusters, err := c.ListClusters(ctx, &ecs.ListClustersInput{})
	if err != nil {
		return false
	}
	type ref struct{ cluster, task string }
	var left []ref
	for _, cl := range clusters.ClusterArns {
		// Services first: their scheduler would replace the tasks stopped below.
		sp := ecs.NewListServicesPaginator(c, &ecs.ListServicesInput{Cluster: aws.String(cl)})
		for sp.HasMorePages() {
			page, err := sp.NextPage(ctx)
			if err != nil {
				break
			}
			for _, svc := range page.ServiceArns {
				c.DeleteService(ctx, &ecs.DeleteServiceInput{Cluster: aws.String(cl), Service: aws.String(svc), Force: aws.Bool(true)})
			}
		}
	}
	for _, cl := range clusters.ClusterArns {
		for _, status := range []types.DesiredStatus{types.DesiredStatusRunning, types.DesiredStatusStopped} {
			p := ecs.NewListTasksPaginator(c, &ecs.ListTasksInput{Cluster: aws.String(cl), DesiredStatus: status})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return false
				}
				for _, arn := range page.TaskArns {
					left = append(left, ref{cl, arn})
					if status == types.DesiredStatusRunning {
						c.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(cl), Task: aws.String(arn), Reason: aws.String("test cleanup")})
					}
				}
			}
		}
	}
	for _, r := range left {
		for {
			out, err := c.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(r.cluster), Tasks: []string{r.task}})
			if err != nil {
				return false
			}
			if len(out.Tasks) == 0 || aws.ToString(out.Tasks[0].LastStatus) == "STOPPED" {
				break
			}
			select {
			case <-ctx.Done():
				return false
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return true
}

// reap removes what a killed server could not: shims of its containerd,
// their mounts, task networks and cgroups. Tests share one host, so a test
// that died mid-way must not leave routes or bridges that break the next.
func reap(dataDir string) {
	sock := containerd.OwnSocket(dataDir)
	// containerd and its shims name the socket; gVisor's sandbox and gofer
	// processes name the run directory next to it.
	runDir := filepath.Dir(sock) + "/"
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), runDir) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid > 1 {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if m, err := netw.New(dataDir); err == nil {
		m.TeardownAll(context.Background())
	}
	// Tasks' cgroups (TaskCgroup), and the sandbox pool's by their markers.
	var names []string
	if ids, err := os.ReadDir(filepath.Join(dataDir, "agent", "tasks")); err == nil {
		for _, id := range ids {
			id := strings.TrimSuffix(id.Name(), ".json")
			names = append(names, id, TaskCgroup(dataDir, id))
		}
	}
	if ids, err := os.ReadDir(filepath.Join(dataDir, "agent", "sandbox-pool")); err == nil {
		for _, id := range ids {
			names = append(names, id.Name())
		}
	}
	for _, name := range names {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/gantry/" + name)
		// A container whose shim was killed keeps running: its
		// processes are only found by cgroup.
		for _, d := range dirs {
			pids, _ := filepath.Glob(d + "/*/cgroup.procs")
			for _, f := range append(pids, d+"/cgroup.procs") {
				b, _ := os.ReadFile(f)
				for _, p := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
		}
		if len(dirs) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		for _, d := range dirs {
			subs, _ := filepath.Glob(d + "/*/")
			for _, sub := range subs {
				syscall.Rmdir(sub)
			}
			syscall.Rmdir(d)
		}
	}
	// Unmount anything still mounted below the data or run directory.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (strings.HasPrefix(f[4], dataDir+"/") || strings.HasPrefix(f[4], filepath.Dir(sock)+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// TaskCgroup is the name of a task's cgroup under /gantry on the server
// with data directory dataDir: the task's id, or for a task that took a
// sandbox from the server's sandbox pool the pooled sandbox's, which the
// agent's record of the task names.
func TaskCgroup(dataDir, taskID string) string {
	var rec struct{ Sandbox string }
	if b, err := os.ReadFile(filepath.Join(dataDir, "agent", "tasks", taskID+".json")); err == nil && json.Unmarshal(b, &rec) == nil && rec.Sandbox != "" {
		return strings.TrimSuffix(rec.Sandbox, "-sandbox")
	}
	return taskID
}
