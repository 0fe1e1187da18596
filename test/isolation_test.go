package test

import (
	"os/exec"
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
// reachable on their address as any task; other clusters keep containers.
// DescribeTasks tells which isolation a task got.
func TestSandboxCluster(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sandboxed", "--settings", "name=isolation,value=sandbox")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain")
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
