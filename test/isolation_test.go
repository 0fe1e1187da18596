package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

func taskIsolation(t *testing.T, s *testenv.Server, cluster, arn string) string {
	t.Helper()
	var v string
	s.MustAWS(&v, "ecs", "describe-tasks", "--cluster", cluster, "--tasks", arn,
		"--query", "tasks[0].attributes[?name=='gantry.isolation'].value | [0]")
	return v
}

// A cluster with the isolation setting sandbox runs its tasks in gVisor,
// reachable on their address as any task; one set to container runs them
// with runc. DescribeTasks tells which isolation a task got.
func TestSandboxCluster(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sandboxed", "--settings", "name=isolation,value=sandbox")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain", "--settings", "name=isolation,value=container")
	var setting string
	s.MustAWS(&setting, "ecs", "describe-clusters", "--clusters", "sandboxed", "--include", "SETTINGS",
		"--query", "clusters[0].settings[?name=='isolation'].value | [0]")
	if setting != "sandbox" {
		t.Errorf("isolation setting %q, want sandbox", setting)
	}
	if code, msg := s.AWSError("ecs", "create-cluster", "--cluster-name", "vm", "--settings", "name=isolation,value=vm"); code != "InvalidParameterException" {
		t.Errorf("isolation=vm: %s %s, want InvalidParameterException", code, msg)
	}
	if code, msg := s.AWSError("ecs", "update-cluster-settings", "--cluster", "plain", "--settings", "name=isolation,value=microvm"); code != "InvalidParameterException" {
		t.Errorf("update to isolation=microvm: %s %s, want InvalidParameterException", code, msg)
	}

	registerFile(t, s, "../docs/examples/web-task.json")
	subnet := defaultSubnet(t, s)
	sandboxed := runTask(t, s, "--cluster", "sandboxed", "--launch-type", "FARGATE", "--task-definition", "web", "--network-configuration", awsvpc(subnet))
	plain := runTask(t, s, "--cluster", "plain", "--launch-type", "FARGATE", "--task-definition", "web", "--network-configuration", awsvpc(subnet))
	if got := taskIsolation(t, s, "sandboxed", sandboxed.TaskArn); got != "sandbox" {
		t.Errorf("sandboxed task: gantry.isolation %q", got)
	}
	if got := taskIsolation(t, s, "plain", plain.TaskArn); got != "container" {
		t.Errorf("plain task: gantry.isolation %q", got)
	}

	for cluster, arn := range map[string]string{"sandboxed": sandboxed.TaskArn, "plain": plain.TaskArn} {
		task := waitStatus(t, s, cluster, arn, "RUNNING", time.Minute)
		if page := httpGet(t, task.eniDetail("privateIPv4Address")); page != testimage.WebIndex {
			t.Errorf("%s task serves %q", cluster, page)
		}
		// runsc knows the container only when it runs in a sandbox.
		out, err := exec.Command("/usr/local/bin/runsc", "--root", "/run/containerd/runc/gantry", "list", "-quiet").CombinedOutput()
		if err != nil {
			t.Fatalf("runsc list: %v: %s", err, out)
		}
		inSandbox := strings.Contains(string(out), task.Containers[0].RuntimeID)
		if inSandbox != (cluster == "sandboxed") {
			t.Errorf("%s task: container %s in a gVisor sandbox: %v", cluster, task.Containers[0].RuntimeID, inSandbox)
		}
		s.MustAWS(nil, "ecs", "stop-task", "--cluster", cluster, "--task", arn)
		waitStatus(t, s, cluster, arn, "STOPPED", time.Minute)
	}
}

// A host where runsc cannot run refuses sandbox clusters, saying why.
func TestSandboxClusterRefusedWithoutRunsc(t *testing.T) {
	t.Setenv("GANTRY_RUNSC", "/nonexistent/runsc")
	s := testenv.Start(t)
	code, msg := s.AWSError("ecs", "create-cluster", "--cluster-name", "sandboxed", "--settings", "name=isolation,value=sandbox")
	if code != "InvalidParameterException" || !strings.Contains(msg, "Sandbox isolation is not available") || !strings.Contains(msg, "/nonexistent/runsc") {
		t.Errorf("create-cluster isolation=sandbox: %s %q", code, msg)
	}
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain", "--settings", "name=isolation,value=container")
	if code, _ := s.AWSError("ecs", "update-cluster-settings", "--cluster", "plain", "--settings", "name=isolation,value=sandbox"); code != "InvalidParameterException" {
		t.Errorf("update-cluster-settings isolation=sandbox: %s", code)
	}
}

// Stopping a task behaves the same in both modes: an init that handles
// SIGTERM exits its own way, one without a handler ignores it (as pid 1 of
// a PID namespace does) and is killed after stopTimeout, exit 137.
func TestIsolationStopSignals(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	registerJSON(t, s, `{"family":"stops","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[
			{"name":"handles","image":"gantry-test/busybox:latest","essential":true,"stopTimeout":10,
			 "command":["sh","-c","trap 'exit 7' TERM; sleep 600 & wait"]},
			{"name":"ignores","image":"gantry-test/busybox:latest","essential":true,"stopTimeout":2,
			 "command":["sleep","600"]}]}`)
	net := awsvpc(defaultSubnet(t, s))
	for _, mode := range isolationModes {
		t.Run(mode, func(t *testing.T) {
			cluster := "stop-" + mode
			s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", cluster, "--settings", "name=isolation,value="+mode)
			task := runTask(t, s, "--cluster", cluster, "--task-definition", "stops", "--network-configuration", net)
			waitStatus(t, s, cluster, task.TaskArn, "RUNNING", time.Minute)
			start := time.Now()
			s.MustAWS(nil, "ecs", "stop-task", "--cluster", cluster, "--task", task.TaskArn)
			got := waitStatus(t, s, cluster, task.TaskArn, "STOPPED", time.Minute)
			codes := map[string]any{}
			for _, c := range got.Containers {
				codes[c.Name] = deref(c.ExitCode)
			}
			if codes["handles"] != 7 || codes["ignores"] != 137 {
				t.Errorf("exit codes %v, want handles 7 (its SIGTERM handler) and ignores 137 (SIGKILL after stopTimeout)", codes)
			}
			// The init without a handler outlived SIGTERM until its stopTimeout.
			if d := time.Since(start); d < 2*time.Second {
				t.Errorf("the task stopped in %v, before the 2 s stopTimeout of the container that ignores SIGTERM", d)
			}
		})
	}
}

// The server's --default-isolation decides what clusters created without
// the setting get, and DescribeClusters shows it. On a host that cannot run
// sandboxes the server says so in its log whatever the flag; under sandbox
// (the default) it refuses clusters that would get it, and only auto falls
// back to containers.
func TestDefaultIsolation(t *testing.T) {
	clusterSetting := func(s *testenv.Server, name string) string {
		var v string
		s.MustAWS(&v, "ecs", "describe-clusters", "--clusters", name, "--include", "SETTINGS",
			"--query", "clusters[0].settings[?name=='isolation'].value | [0]")
		return v
	}
	s := testenv.Start(t, "--default-isolation", "sandbox")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "dflt")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain", "--settings", "name=isolation,value=container")
	if got := clusterSetting(s, "dflt"); got != "sandbox" {
		t.Errorf("cluster created without the setting: isolation %q, want sandbox", got)
	}
	if got := clusterSetting(s, "plain"); got != "container" {
		t.Errorf("cluster created with isolation=container: %q", got)
	}
	loadImage(t, s, testimage.Busybox(t))
	registerJSON(t, s, `{"family":"k","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"k","image":"gantry-test/busybox:latest","command":["sh","-c",
			"dmesg | grep -q gVisor || exit 1; wget -q -O - $ECS_CONTAINER_METADATA_URI_V4 | grep -q '\"gantry.isolation\":\"sandbox\"' || exit 2"]}]}`)
	task := runTask(t, s, "--cluster", "dflt", "--task-definition", "k", "--network-configuration", awsvpc(defaultSubnet(t, s)))
	got := waitStatus(t, s, "dflt", task.TaskArn, "STOPPED", time.Minute)
	if c := got.Containers[0]; c.ExitCode == nil || *c.ExitCode != 0 || taskIsolation(t, s, "dflt", task.TaskArn) != "sandbox" {
		t.Errorf("task of the default cluster: exit %v (1: its kernel is not gVisor, 2: the metadata endpoint does not say sandbox), isolation %q", deref(c.ExitCode), taskIsolation(t, s, "dflt", task.TaskArn))
	}
	// A restart with another default leaves existing clusters as they were.
	s.Args = []string{"--default-isolation", "container"}
	s.Restart()
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "later")
	if a, b := clusterSetting(s, "dflt"), clusterSetting(s, "later"); a != "sandbox" || b != "container" {
		t.Errorf("after a restart with --default-isolation container: dflt %q (want sandbox), later %q (want container)", a, b)
	}

	t.Run("without runsc", func(t *testing.T) {
		t.Setenv("GANTRY_RUNSC", "/nonexistent/runsc")
		s := testenv.Start(t, "--default-isolation", "auto")
		s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "dflt")
		if got := clusterSetting(s, "dflt"); got != "container" {
			t.Errorf("auto on a host without runsc: isolation %q, want container", got)
		}
		log, _ := os.ReadFile(filepath.Join(s.DataDir, "server.log"))
		if !strings.Contains(string(log), "SANDBOX ISOLATION UNAVAILABLE") || !strings.Contains(string(log), "/nonexistent/runsc") {
			t.Errorf("the server's log does not say why new clusters get containers:\n%s", log)
		}

		// sandbox, the default, explicit or not: the server starts and says
		// why sandboxes cannot run and what to do, clusters that would get
		// the default are refused naming the setting, and container ones work.
		for i, args := range [][]string{{"--default-isolation", "sandbox"}, nil} {
			t.Setenv("GANTRY_TEST_ISOLATION", "")
			before, _ := os.ReadFile(s.LogPath())
			s.Args = args
			s.Restart()
			after, _ := os.ReadFile(s.LogPath())
			log := string(after[len(before):])
			if !strings.Contains(log, "SANDBOX ISOLATION UNAVAILABLE") || !strings.Contains(log, "/nonexistent/runsc") ||
				!strings.Contains(log, "--default-isolation container") || !strings.Contains(log, "build-runsc.sh") {
				t.Errorf("server with %v: its log does not say sandboxes cannot run here, why and what to do:\n%s", args, log)
			}
			name := fmt.Sprintf("refused-%d", i)
			code, msg := s.AWSError("ecs", "create-cluster", "--cluster-name", name)
			if code != "ClientException" || !strings.Contains(msg, "isolation setting") || !strings.Contains(msg, "/nonexistent/runsc") ||
				!strings.Contains(msg, "name=isolation,value=container") {
				t.Errorf("server with %v: create-cluster without the isolation setting: %s %q, want a ClientException naming the setting, the reason and the way out", args, code, msg)
			}
			var status string
			s.MustAWS(&status, "ecs", "describe-clusters", "--clusters", name, "--query", "clusters[0].status")
			if status != "" {
				t.Errorf("the refused cluster exists: %s", status)
			}
			// Existing clusters answer as they are; container ones are made.
			s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "dflt")
			s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", fmt.Sprintf("plain-%d", i), "--settings", "name=isolation,value=container")
			if got := clusterSetting(s, fmt.Sprintf("plain-%d", i)); got != "container" {
				t.Errorf("isolation=container cluster: %q", got)
			}
		}
	})
}

// A sandboxed task of several containers is one gVisor sandbox, through
// the CLI as a user runs it: one sentry on the host for the task, in the
// task's cgroup; every container on gVisor's kernel, reaching the others on
// localhost over the sandbox's own network stack; each container's exit
// code its own, a non-essential container's exit leaving the task running
// and an essential one's stopping it. The task survives a server restart
// (the sandbox is adopted with its containers) and nothing of it is left
// after it stops.
func TestSandboxTaskOneSandbox(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "pod", "--settings", "name=isolation,value=sandbox")
	registerJSON(t, s, `{"family":"pod","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[
			{"name":"server","image":"gantry-test/busybox:latest","essential":true,"stopTimeout":5,
			 "command":["sh","-c","trap 'exit 0' TERM; mkdir /tmp/w && uname -r > /tmp/w/index.html && httpd -f -p 8080 -h /tmp/w & wait"]},
			{"name":"side","image":"gantry-test/busybox:latest","essential":false,
			 "command":["sh","-c","dmesg | grep -q gVisor || exit 4; for i in $(seq 100); do case \"$(wget -q -O - http://127.0.0.1:8080/)\" in *gvisor*) exit 5;; esac; sleep 0.1; done; exit 1"]},
			{"name":"main","image":"gantry-test/busybox:latest","essential":true,
			 "dependsOn":[{"containerName":"side","condition":"COMPLETE"}],
			 "command":["sh","-c","dmesg | grep -q gVisor || exit 4; touch /tmp/go; while [ -e /tmp/go ]; do sleep 0.2; done; exit 9"]}]}`)
	task := runTask(t, s, "--cluster", "pod", "--task-definition", "pod", "--network-configuration", awsvpc(defaultSubnet(t, s)), "--enable-execute-command")
	id := taskID(task.TaskArn)
	got := waitStatus(t, s, "pod", task.TaskArn, "RUNNING", time.Minute)
	deadline := time.Now().Add(time.Minute)
	for podContainer(got, "main").LastStatus != "RUNNING" && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		got = describeTask(t, s, "pod", task.TaskArn)
	}
	if c := podContainer(got, "side"); c.LastStatus != "STOPPED" || deref(c.ExitCode) != 5 {
		t.Errorf("side: %s exit %v, want STOPPED 5 (on gVisor, reached the server on localhost)", c.LastStatus, deref(c.ExitCode))
	}
	if got.LastStatus != "RUNNING" {
		t.Errorf("the task is %s after its non-essential container exited, want RUNNING", got.LastStatus)
	}
	if n := sentries(t, s, id); n != 1 {
		t.Errorf("%d gVisor sandboxes run the task, want 1", n)
	}

	// The server restarts; the task, its sandbox included, runs on.
	s.Restart()
	if got := describeTask(t, s, "pod", task.TaskArn); got.LastStatus != "RUNNING" {
		t.Fatalf("after a server restart the task is %s", got.LastStatus)
	}
	// main's essential exit (9) stops the task; the server gets SIGTERM.
	// (ECS Exec into a container that joined the sandbox.)
	rm := exec.Command(testenv.Binary(t), "exec", "pod", id, "--container", "main", "--", "rm", "/tmp/go")
	rm.Env = s.Env()
	if out, err := rm.CombinedOutput(); err != nil {
		t.Fatalf("gantry exec: %v: %s", err, out)
	}
	got = waitStatus(t, s, "pod", task.TaskArn, "STOPPED", time.Minute)
	if got.StopCode != "EssentialContainerExited" {
		t.Errorf("stopCode %q, want EssentialContainerExited", got.StopCode)
	}
	for name, want := range map[string]int{"main": 9, "side": 5, "server": 0} {
		if c := podContainer(got, name); deref(c.ExitCode) != want {
			t.Errorf("%s exited %v, want %d", name, deref(c.ExitCode), want)
		}
	}
	if n := sentries(t, s, id); n != 0 {
		t.Errorf("%d sandboxes of the stopped task left", n)
	}
	if out, _ := exec.Command("pgrep", "-f", id).Output(); len(out) > 0 {
		t.Errorf("processes of the stopped task left: %s", out)
	}
	if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", id)); len(dirs) > 0 {
		t.Errorf("cgroups of the stopped task left: %v", dirs)
	}
	if left, _ := os.ReadDir(filepath.Join(s.DataDir, "agent", "runsc-waits")); len(left) > 0 {
		t.Errorf("waiters' files left: %v", left)
	}
}

// sentries counts the gVisor sandboxes (runsc-sandbox processes) of a task
// on the host, by the name of its cgroup (taskCgroup), which its sandbox's
// command line holds.
func sentries(t *testing.T, s *testenv.Server, taskID string) int {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", "^runsc-sandbox .*"+taskCgroup(t, s, taskID)).Output()
	return len(strings.Fields(string(out)))
}

func podContainer(task cliTask, name string) cliContainer {
	for _, c := range task.Containers {
		if c.Name == name {
			return c
		}
	}
	return cliContainer{}
}

// A container's hard memory limit holds inside a task's one sandbox, as on
// Fargate: the container over it is killed (137, OutOfMemoryError) and,
// not being essential, leaves its task and neighbour running; an essential
// container over its limit stops the task.
func TestSandboxContainerMemoryLimit(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "pod", "--settings", "name=isolation,value=sandbox")
	// The hog grows (tail keeps the last "line" of /dev/zero, which has no
	// end) until something stops it; the task's own limit is far off. The
	// neighbour holds about 10 MiB (tail's line, blocked on a pipe nobody
	// reads) under a limit of 48: were the sandbox's usage split between its
	// containers rather than counted for each, it would be killed first.
	const hog = "sleep 1; tail /dev/zero"
	registerJSON(t, s, `{"family":"nonessential","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"1024",
		"containerDefinitions":[
			{"name":"app","image":"gantry-test/busybox:latest","essential":true,"memory":48,"stopTimeout":2,
			 "command":["sh","-c","head -c 10m /dev/zero | tail | sleep 600"]},
			{"name":"hog","image":"gantry-test/busybox:latest","essential":false,"memory":64,"command":["sh","-c","`+hog+`"]}]}`)
	registerJSON(t, s, `{"family":"essential","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"1024",
		"containerDefinitions":[
			{"name":"app","image":"gantry-test/busybox:latest","essential":true,"stopTimeout":2,"command":["sleep","600"]},
			{"name":"hog","image":"gantry-test/busybox:latest","essential":true,"memory":64,"command":["sh","-c","`+hog+`"]}]}`)
	subnet := defaultSubnet(t, s)

	task := runTask(t, s, "--cluster", "pod", "--task-definition", "nonessential", "--network-configuration", awsvpc(subnet))
	waitStatus(t, s, "pod", task.TaskArn, "RUNNING", time.Minute)
	var got cliTask
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		got = describeTask(t, s, "pod", task.TaskArn)
		if podContainer(got, "hog").LastStatus == "STOPPED" || time.Now().After(deadline) {
			break
		}
	}
	if c := podContainer(got, "hog"); c.LastStatus != "STOPPED" || deref(c.ExitCode) != 137 || !strings.HasPrefix(c.Reason, "OutOfMemoryError") {
		t.Errorf("hog over its 64 MiB: %s exit %v reason %q, want STOPPED 137 OutOfMemoryError", c.LastStatus, deref(c.ExitCode), c.Reason)
	}
	time.Sleep(2 * time.Second) // long enough for a wrong kill of the neighbour to show
	got = describeTask(t, s, "pod", task.TaskArn)
	if c := podContainer(got, "app"); got.LastStatus != "RUNNING" || c.LastStatus != "RUNNING" {
		t.Errorf("after the non-essential hog's kill: task %s, app %s (%s), want both RUNNING", got.LastStatus, c.LastStatus, c.Reason)
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "pod", "--task", task.TaskArn)
	got = waitStatus(t, s, "pod", task.TaskArn, "STOPPED", time.Minute)
	if c := podContainer(got, "app"); strings.HasPrefix(c.Reason, "OutOfMemoryError") {
		t.Errorf("app, under its limit, stopped as %q", c.Reason)
	}

	task = runTask(t, s, "--cluster", "pod", "--task-definition", "essential", "--network-configuration", awsvpc(subnet))
	got = waitStatus(t, s, "pod", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := podContainer(got, "hog"); deref(c.ExitCode) != 137 || !strings.HasPrefix(c.Reason, "OutOfMemoryError") {
		t.Errorf("essential hog: exit %v reason %q, want 137 OutOfMemoryError", deref(c.ExitCode), c.Reason)
	}
	if got.StopCode != "EssentialContainerExited" {
		t.Errorf("task of the essential hog: stopCode %q (%s), want EssentialContainerExited", got.StopCode, got.StoppedReason)
	}
	if c := podContainer(got, "app"); strings.HasPrefix(c.Reason, "OutOfMemoryError") {
		t.Errorf("app, without a limit of its own, stopped as %q", c.Reason)
	}
	if n := sentries(t, s, taskID(task.TaskArn)); n != 0 {
		t.Errorf("%d sandboxes of the stopped task left", n)
	}
}

// With --sandbox-pool, a sandboxed task started through the CLI takes over
// a sandbox the server booted ahead of it, and is to its user what any
// sandboxed task is: RUNNING on gVisor, serving on the address and MAC
// DescribeTasks gives, surviving a server restart, and gone once stopped.
func TestSandboxPoolCLI(t *testing.T) {
	s := testenv.Start(t, "--sandbox-pool", "1")
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "pooled", "--settings", "name=isolation,value=sandbox")
	registerFile(t, s, "../docs/examples/web-task.json")
	subnet := defaultSubnet(t, s)
	run := func() (cliTask, string) {
		t.Helper()
		task := runTask(t, s, "--cluster", "pooled", "--launch-type", "FARGATE", "--task-definition", "web", "--network-configuration", awsvpc(subnet))
		task = waitStatus(t, s, "pooled", task.TaskArn, "RUNNING", time.Minute)
		ip := task.eniDetail("privateIPv4Address")
		if page := httpGet(t, ip); page != testimage.WebIndex {
			t.Errorf("the task serves %q", page)
		}
		return task, ip
	}
	stop := func(task cliTask) {
		t.Helper()
		s.MustAWS(nil, "ecs", "stop-task", "--cluster", "pooled", "--task", task.TaskArn)
		waitStatus(t, s, "pooled", task.TaskArn, "STOPPED", time.Minute)
	}
	// The subnet's first sandboxed task boots its own; the pool then
	// boots one for the next.
	first, _ := run()
	stop(first)
	waitPooledSandbox(t, s)
	task, ip := run()
	id := taskID(task.TaskArn)
	if log, _ := os.ReadFile(s.LogPath()); !regexp.MustCompile(`msg="sandbox taken from the pool" task=` + id).Match(log) {
		t.Fatalf("the second task did not take the pooled sandbox")
	}
	if n := sentries(t, s, id); n != 1 || taskCgroup(t, s, id) == id {
		t.Errorf("%d gVisor sandboxes in the task's cgroup %s, want the pooled one", n, taskCgroup(t, s, id))
	}
	// The MAC the task answers with is the one DescribeTasks reports.
	out, _ := exec.Command("ip", "neigh", "show", ip).Output()
	if mac := task.eniDetail("macAddress"); mac == "" || !strings.Contains(string(out), mac) {
		t.Errorf("DescribeTasks says MAC %q; the host's neighbour entry for %s: %s", mac, ip, out)
	}
	s.Restart()
	if got := describeTask(t, s, "pooled", task.TaskArn); got.LastStatus != "RUNNING" {
		t.Fatalf("after a server restart the task is %s", got.LastStatus)
	}
	if page := httpGet(t, ip); page != testimage.WebIndex {
		t.Errorf("after a server restart the task serves %q", page)
	}
	stop(task)
	if n := sentries(t, s, id); n != 0 {
		t.Errorf("%d sandboxes of the stopped task left", n)
	}
	if dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", taskCgroup(t, s, id))); len(dirs) > 0 {
		t.Errorf("cgroups of the stopped task left: %v", dirs)
	}
}

// waitPooledSandbox waits until the server's sandbox pool has a sandbox
// running: an entry (its marker) whose root container runsc says runs.
func waitPooledSandbox(t *testing.T, s *testenv.Server) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ents, _ := os.ReadDir(filepath.Join(s.DataDir, "agent", "sandbox-pool"))
		for _, e := range ents {
			out, _ := exec.Command("/usr/local/bin/runsc", "--root", "/run/containerd/runc/gantry", "state", e.Name()+"-sandbox").Output()
			if strings.Contains(string(out), `"status": "running"`) {
				return
			}
		}
	}
	t.Fatal("the sandbox pool had no sandbox running within a minute")
}
