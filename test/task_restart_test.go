package test

import (
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestTaskServerRestart: tasks outlive the server. One keeps running and
// answering across a restart; one exits while the server is down and is
// found STOPPED with its exit code afterwards.
func TestTaskServerRestart(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerFile(t, s, "../docs/examples/web-task.json")
	registerJSON(t, s, `{"family":"job","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","sleep 15; exit 4"]}]}`)
	net := awsvpc(defaultSubnet(t, s))

	web := runTask(t, s, "--cluster", "demo", "--task-definition", "web", "--network-configuration", net)
	job := runTask(t, s, "--cluster", "demo", "--task-definition", "job", "--network-configuration", net)
	web = waitStatus(t, s, "demo", web.TaskArn, "RUNNING", 2*time.Minute)
	waitStatus(t, s, "demo", job.TaskArn, "RUNNING", 2*time.Minute)
	ip := web.eniDetail("privateIPv4Address")
	httpGet(t, ip)

	s.Stop()
	time.Sleep(20 * time.Second) // the job exits meanwhile
	s.Restart()

	after := describeTask(t, s, "demo", web.TaskArn)
	if after.LastStatus != "RUNNING" || after.eniDetail("privateIPv4Address") != ip || after.Containers[0].RuntimeID != web.Containers[0].RuntimeID {
		t.Fatalf("web task after restart: %+v", after)
	}
	httpGet(t, ip)

	got := waitStatus(t, s, "demo", job.TaskArn, "STOPPED", time.Minute)
	if c := got.Containers[0]; got.StopCode != "EssentialContainerExited" || c.ExitCode == nil || *c.ExitCode != 4 {
		t.Errorf("job that exited while the server was down: %+v (container %+v)", got, c)
	}

	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", web.TaskArn)
	got = waitStatus(t, s, "demo", web.TaskArn, "STOPPED", time.Minute)
	if got.StopCode != "UserInitiated" || got.Containers[0].LastStatus != "STOPPED" {
		t.Errorf("web task stopped after restart: %+v", got)
	}
}
