package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// metaTask is what the test compares the endpoint's answers with: the task
// as DescribeTasks shows it.
type metaTask struct {
	TaskArn          string `json:"taskArn"`
	ClusterArn       string `json:"clusterArn"`
	AvailabilityZone string `json:"availabilityZone"`
	LastStatus       string `json:"lastStatus"`
	Containers       []struct {
		ContainerArn      string `json:"containerArn"`
		RuntimeID         string `json:"runtimeId"`
		NetworkInterfaces []struct {
			PrivateIpv4Address string `json:"privateIpv4Address"`
		} `json:"networkInterfaces"`
	} `json:"containers"`
}

// taskLines waits for a task's awslogs stream to hold a line starting
// with each of the prefixes, and returns the lines by prefix.
func taskLines(t *testing.T, s *testenv.Server, group, stream string, prefixes ...string) map[string]string {
	t.Helper()
	return streamLines(t, stream, prefixes, func(args ...string) (string, int) {
		o, _, code := s.AWS(args...)
		return o, code
	}, "logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head")
}

// streamLines polls get-log-events (args, run by aws) until the stream
// holds a line starting with each of the prefixes.
func streamLines(t *testing.T, stream string, prefixes []string, aws func(args ...string) (string, int), args ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		var ev cliEvents
		if o, code := aws(args...); code == 0 {
			json.Unmarshal([]byte(o), &ev)
		}
		for _, line := range ev.messages() {
			for _, p := range prefixes {
				if rest, ok := strings.CutPrefix(line, p+" "); ok {
					got[p] = rest
				}
			}
		}
		if len(got) == len(prefixes) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s: have %v, want lines %v; all: %v", stream, got, prefixes, ev.messages())
		}
	}
}

func TestTaskMetadataEndpoint(t *testing.T) {
	// A free registry port: servers side by side must not share the default.
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	net := awsvpc(s.DefaultSubnet())
	logs := `"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/meta","awslogs-region":"us-east-1","awslogs-stream-prefix":"ecs","awslogs-create-group":"true"}}`
	// Each answer on one line with a tag, read back through CloudWatch
	// Logs. The task is asked after a moment, once the agent has seen it
	// RUNNING; stats after two sampling rounds, so "pre" values exist.
	registerJSON(t, s, `{"family":"meta","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","memory":256,
		"command":["sh","-c","sleep 2; echo \"URI $ECS_CONTAINER_METADATA_URI_V4\"; echo \"V3 $ECS_CONTAINER_METADATA_URI\"; echo \"TASK $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task)\"; echo \"SELF $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4)\"; sleep 11; echo \"STATS $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/stats)\"; echo \"TSTATS $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task/stats)\"; sleep 600"],
		`+logs+`}]}`)
	registerJSON(t, s, `{"family":"snoop","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest",
		"command":["sh","-c","wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task >/dev/null; echo \"OWN $?\"; echo \"OTHER $(wget -q -O - $TARGET/task 2>&1; echo rc=$?)\""],
		`+logs+`}]}`)

	first := runTask(t, s, "--cluster", "demo", "--task-definition", "meta", "--network-configuration", net)
	waitStatus(t, s, "demo", first.TaskArn, "RUNNING", 2*time.Minute)
	var desc struct{ Tasks []metaTask }
	s.MustAWS(&desc, "ecs", "describe-tasks", "--cluster", "demo", "--tasks", first.TaskArn)
	want := desc.Tasks[0]
	lines := taskLines(t, s, "/ecs/meta", "ecs/app/"+taskID(first.TaskArn), "URI", "V3", "TASK", "SELF", "STATS", "TSTATS")

	runtimeID := want.Containers[0].RuntimeID
	if !strings.HasPrefix(lines["URI"], "http://"+metadata.Address) || !strings.HasSuffix(lines["URI"], "/v4/"+runtimeID) {
		t.Errorf("ECS_CONTAINER_METADATA_URI_V4 = %q, want http://%s.../v4/%s", lines["URI"], metadata.Address, runtimeID)
	}
	if !strings.HasSuffix(lines["V3"], "/v3/"+runtimeID) {
		t.Errorf("ECS_CONTAINER_METADATA_URI = %q", lines["V3"])
	}

	var task metadata.TaskResponse
	if err := json.Unmarshal([]byte(lines["TASK"]), &task); err != nil {
		t.Fatalf("task metadata %q: %v", lines["TASK"], err)
	}
	ip := want.Containers[0].NetworkInterfaces[0].PrivateIpv4Address
	if task.TaskARN != want.TaskArn || task.Cluster != want.ClusterArn || task.Family != "meta" || task.Revision != "1" ||
		task.LaunchType != "FARGATE" || task.AvailabilityZone != want.AvailabilityZone || task.AvailabilityZone == "" ||
		task.KnownStatus != "RUNNING" || task.DesiredStatus != "RUNNING" || task.PullStartedAt == nil || task.PullStoppedAt == nil {
		t.Errorf("task metadata %+v, want to match %+v", task, want)
	}
	if task.Limits == nil || task.Limits.CPU != 0.25 || task.Limits.Memory != 512 {
		t.Errorf("task Limits %+v, want CPU 0.25 Memory 512", task.Limits)
	}
	if e := task.EphemeralStorageMetrics; e == nil || e.Reserved != 20*1024 {
		t.Errorf("EphemeralStorageMetrics %+v", e)
	}
	if task.ClockDrift == nil || task.ClockDrift.ClockSynchronizationStatus == "" {
		t.Errorf("ClockDrift %+v", task.ClockDrift)
	}
	if len(task.Containers) != 1 || task.Containers[0].DockerID != runtimeID {
		t.Fatalf("task containers %+v", task.Containers)
	}
	tc := task.Containers[0]
	if tc.ContainerARN != want.Containers[0].ContainerArn || tc.ContainerARN == "" {
		t.Errorf("ContainerARN %q, DescribeTasks says %q", tc.ContainerARN, want.Containers[0].ContainerArn)
	}
	if len(tc.Networks) != 1 || tc.Networks[0].NetworkMode != "awsvpc" || len(tc.Networks[0].IPv4Addresses) != 1 ||
		tc.Networks[0].IPv4Addresses[0] != ip || tc.Networks[0].IPv4SubnetCIDRBlock == "" || tc.Networks[0].MACAddress == "" {
		t.Errorf("task container networks %+v, want address %s", tc.Networks, ip)
	}

	var self metadata.ContainerResponse
	if err := json.Unmarshal([]byte(lines["SELF"]), &self); err != nil {
		t.Fatalf("container metadata %q: %v", lines["SELF"], err)
	}
	if self.Name != "app" || self.DockerID != runtimeID || self.Type != "NORMAL" || self.KnownStatus != "RUNNING" ||
		self.Limits.Memory != 256 || self.LogDriver != "awslogs" || self.LogOptions["awslogs-group"] != "/ecs/meta" ||
		self.Image != "gantry-test/busybox:latest" || self.ImageID == "" || self.StartedAt == nil ||
		self.Labels["com.amazonaws.ecs.task-arn"] != want.TaskArn {
		t.Errorf("container metadata %+v", self)
	}

	var st metadata.Stats
	if err := json.Unmarshal([]byte(lines["STATS"]), &st); err != nil {
		t.Fatalf("stats %q: %v", lines["STATS"], err)
	}
	if st.MemoryStats.Usage == 0 || st.MemoryStats.Limit != 256<<20 || st.CPUStats.CPUUsage.TotalUsage == 0 ||
		st.CPUStats.SystemUsage == 0 || st.CPUStats.OnlineCPUs == 0 || st.PreRead.IsZero() || !st.Read.After(st.PreRead) {
		t.Errorf("stats %s", lines["STATS"])
	}
	if n, ok := st.Networks["eth0"]; !ok || n.RxBytes == 0 || n.TxBytes == 0 {
		t.Errorf("stats networks %+v", st.Networks)
	}
	var tstats map[string]*metadata.Stats
	if err := json.Unmarshal([]byte(lines["TSTATS"]), &tstats); err != nil {
		t.Fatalf("task stats %q: %v", lines["TSTATS"], err)
	}
	if s := tstats[runtimeID]; s == nil || s.MemoryStats.Usage == 0 {
		t.Errorf("task stats %s", lines["TSTATS"])
	}

	// Another task knowing the URL still cannot read it; it reads its own.
	snoop := runTask(t, s, "--cluster", "demo", "--task-definition", "snoop", "--network-configuration", net,
		"--overrides", `{"containerOverrides":[{"name":"app","environment":[{"name":"TARGET","value":"`+lines["URI"]+`"}]}]}`)
	got := taskLines(t, s, "/ecs/meta", "ecs/app/"+taskID(snoop.TaskArn), "OWN", "OTHER")
	if got["OWN"] != "0" {
		t.Errorf("a task cannot read its own metadata: wget exit %s", got["OWN"])
	}
	if strings.Contains(got["OTHER"], want.TaskArn) || strings.HasSuffix(got["OTHER"], "rc=0") {
		t.Errorf("a second task read the first one's metadata: %s", got["OTHER"])
	}
	// Nor can the host, or anyone else not at the task's address.
	if resp, err := http.Get(lines["URI"] + "/task"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("the host read a task's metadata: %s", resp.Status)
		}
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", first.TaskArn)
	waitStatus(t, s, "demo", first.TaskArn, "STOPPED", time.Minute)
}

// Each container of a task reports its own usage at its /stats path and in
// /task/stats, in a task's one gVisor sandbox (where the host cgroup is
// the sandbox's, and the sentry tells the containers apart) as with runc:
// a container holding 40 MiB shows it, its idle neighbour does not, and
// the task's cgroup on the host holds the total.
func TestTaskMetadataStatsPerContainer(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	subnet := s.DefaultSubnet()
	logs := `"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/pstats","awslogs-region":"us-east-1","awslogs-stream-prefix":"ecs","awslogs-create-group":"true"}}`
	// Both read once the hog holds its memory (tail keeps /dev/zero's one
	// endless "line", blocked on a pipe nobody reads), and once the host's
	// sampling of runc's containers has two rounds, so "pre" values exist.
	// In a sandbox on a slow host the copy takes about half a minute at the
	// hog task's 0.25 vCPU.
	const read = `sleep 40; echo \"STATS $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/stats)\"; echo \"TSTATS $(wget -q -O - $ECS_CONTAINER_METADATA_URI_V4/task/stats)\"; sleep 600`
	registerJSON(t, s, `{"family":"pstats","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[
			{"name":"hog","image":"gantry-test/busybox:latest","memory":128,"stopTimeout":2,
			 "command":["sh","-c","head -c 40m /dev/zero | tail | sleep 600 & `+read+`"],`+logs+`},
			{"name":"idle","image":"gantry-test/busybox:latest","stopTimeout":2,"command":["sh","-c","`+read+`"],`+logs+`}]}`)
	modes := []string{"sandbox", "container"}
	tasks := map[string]cliTask{}
	for _, mode := range modes {
		s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", mode, "--settings", "name=isolation,value="+mode)
		tasks[mode] = runTask(t, s, "--cluster", mode, "--task-definition", "pstats", "--network-configuration", awsvpc(subnet))
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			task := waitStatus(t, s, mode, tasks[mode].TaskArn, "RUNNING", 2*time.Minute)
			id := taskID(task.TaskArn)
			hogID, idleID := podContainer(task, "hog").RuntimeID, podContainer(task, "idle").RuntimeID
			own := map[string]metadata.Stats{}
			var all map[string]*metadata.Stats
			for _, name := range []string{"hog", "idle"} {
				lines := taskLines(t, s, "/ecs/pstats", "ecs/"+name+"/"+id, "STATS", "TSTATS")
				var st metadata.Stats
				if err := json.Unmarshal([]byte(lines["STATS"]), &st); err != nil {
					t.Fatalf("%s stats %q: %v", name, lines["STATS"], err)
				}
				own[name] = st
				t.Logf("%s: %s", name, lines["STATS"])
				if name == "idle" {
					if err := json.Unmarshal([]byte(lines["TSTATS"]), &all); err != nil {
						t.Fatalf("task stats %q: %v", lines["TSTATS"], err)
					}
				}
				// Docker's CPU percentage needs two samples of the
				// container and of the host at the same moments.
				if st.Name != name || st.CPUStats.CPUUsage.TotalUsage == 0 || st.PreRead.IsZero() || !st.Read.After(st.PreRead) ||
					st.CPUStats.CPUUsage.TotalUsage < st.PreCPUStats.CPUUsage.TotalUsage ||
					st.CPUStats.SystemUsage <= st.PreCPUStats.SystemUsage || st.CPUStats.OnlineCPUs == 0 || st.PidsStats.Current == 0 {
					t.Errorf("%s stats %s", name, lines["STATS"])
				}
			}
			const mib = 1 << 20
			hog, idle := own["hog"], own["idle"]
			if hog.MemoryStats.Usage < 40*mib || idle.MemoryStats.Usage > hog.MemoryStats.Usage/4 {
				t.Errorf("memory usage: hog %d MiB (holds 40), idle %d MiB", hog.MemoryStats.Usage/mib, idle.MemoryStats.Usage/mib)
			}
			// Its own hard limit, else the task's.
			if hog.MemoryStats.Limit != 128*mib || idle.MemoryStats.Limit != 512*mib {
				t.Errorf("memory limits: hog %d MiB, idle %d MiB; want 128 and 512", hog.MemoryStats.Limit/mib, idle.MemoryStats.Limit/mib)
			}
			if len(all) != 2 || all[hogID] == nil || all[idleID] == nil || all[hogID].Name != "hog" ||
				all[hogID].MemoryStats.Usage < 40*mib || all[idleID].MemoryStats.Usage > all[hogID].MemoryStats.Usage/4 {
				t.Fatalf("task stats: %+v", all)
			}
			total := taskCgroupMemory(t, taskCgroup(t, s, id))
			if sum := all[hogID].MemoryStats.Usage + all[idleID].MemoryStats.Usage; total < 40*mib || total < sum*8/10 {
				t.Errorf("the task's cgroup holds %d MiB; its containers report %d MiB together", total/mib, sum/mib)
			}
			s.MustAWS(nil, "ecs", "stop-task", "--cluster", mode, "--task", task.TaskArn)
			waitStatus(t, s, mode, task.TaskArn, "STOPPED", time.Minute)
		})
	}
}

// taskCgroupMemory is what a task's cgroup (taskCgroup) on the host
// counts. Page cache included: a sandbox's memory is the sentry's shared
// memory, which the host counts as cache.
func taskCgroupMemory(t *testing.T, cgroup string) uint64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/gantry", cgroup, "memory.usage_in_bytes"))
	if err != nil {
		t.Fatal(err)
	}
	used, _ := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	return used
}
