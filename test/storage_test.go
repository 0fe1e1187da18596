package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// Through the CLI: a volume without host configuration is scratch space a
// task's containers share (mountPoints, and volumesFrom with readOnly), on
// the task's ephemeral storage of the size the task definition asks for.
// The reader's exit code says what it found.
func TestTaskVolumesCLI(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerJSON(t, s, `{
		"family": "scratch", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
		"cpu": "256", "memory": "512", "ephemeralStorage": {"sizeInGiB": 21},
		"volumes": [{"name": "shared"}],
		"containerDefinitions": [
			{"name": "writer", "image": "gantry-test/busybox:latest", "essential": false,
			 "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}],
			 "command": ["sh", "-c", "echo from-writer > /shared/msg"]},
			{"name": "reader", "image": "gantry-test/busybox:latest", "essential": true,
			 "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}],
			 "volumesFrom": [{"sourceContainer": "writer", "readOnly": true}],
			 "command": ["sh", "-c", "[ \"$(cat /shared/msg)\" = from-writer ] || exit 1; echo x > /shared/other 2>/dev/null && exit 2; size=$(df -m / | awk 'NR==2 {print $2}'); [ $size -ge 21504 ] && [ $size -le 22100 ] || exit 3; exit 42"]}
		]}`)
	task := runTask(t, s, "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "scratch",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	if task.EphemeralStorage.SizeInGiB != 21 {
		t.Errorf("ephemeralStorage %+v, want 21 GiB", task.EphemeralStorage)
	}
	task = waitStatus(t, s, "demo", task.TaskArn, "STOPPED", 2*time.Minute)
	codes := map[string]int{}
	for _, c := range task.Containers {
		if c.ExitCode != nil {
			codes[c.Name] = *c.ExitCode
		}
	}
	if codes["writer"] != 0 || codes["reader"] != 42 {
		t.Errorf("exit codes %v, want writer 0 and reader 42 (1: did not read the file, 2: wrote to a read-only volume, 3: wrong storage size)", codes)
	}
	assertNothingLeft(t, s)
	if left, _ := filepath.Glob(filepath.Join(s.DataDir, "agent", "storage", "*")); len(left) > 0 {
		t.Errorf("ephemeral storage left: %v", left)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), s.DataDir) {
		t.Errorf("mounts left under %s", s.DataDir)
	}
}

// Fargate has no host paths or Docker volumes.
func TestFargateRefusesHostVolumes(t *testing.T) {
	s := testenv.Start(t)
	for what, volume := range map[string]string{
		"sourcePath":                `{"name": "v", "host": {"sourcePath": "/etc"}}`,
		"dockerVolumeConfiguration": `{"name": "v", "dockerVolumeConfiguration": {"scope": "task", "driver": "local"}}`,
	} {
		code, msg := s.AWSError("ecs", "register-task-definition", "--cli-input-json", `{
			"family": "bad", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
			"volumes": [`+volume+`],
			"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest",
				"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}]}`)
		if code != "ClientException" || !strings.Contains(msg, "Fargate") || !strings.Contains(msg, what) {
			t.Errorf("%s: %s %q, want ClientException naming it", what, code, msg)
		}
	}
}

// Through the CLI: a task that writes past its ephemeral storage gets
// ENOSPC inside, and the host and a neighbour task are untouched. The
// server gives every task 64 MiB (--ephemeral-storage-mib) so the test
// fills it in a moment.
func TestEphemeralStorageFullCLI(t *testing.T) {
	s := testenv.Start(t, "--ephemeral-storage-mib", "64")
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	// dd's complaint goes through a pipe, not the full disk: 28 (ENOSPC)
	// when it ran out of space, 1 when it did not.
	registerJSON(t, s, `{
		"family": "filler", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
		"cpu": "256", "memory": "512",
		"containerDefinitions": [{"name": "fill", "image": "gantry-test/busybox:latest", "essential": true,
			"command": ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=200 2>&1 | grep -q 'No space left' && exit 28; exit 1"]}]}`)
	registerJSON(t, s, `{
		"family": "neighbour", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
		"cpu": "256", "memory": "512",
		"containerDefinitions": [{"name": "write", "image": "gantry-test/busybox:latest", "essential": true,
			"command": ["sh", "-c", "sleep 3; dd if=/dev/zero of=/data bs=1M count=16 && exit 42; exit 1"]}]}`)
	neighbour := runTask(t, s, "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "neighbour",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	filler := runTask(t, s, "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "filler",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	for name, want := range map[string]int{filler.TaskArn: 28, neighbour.TaskArn: 42} {
		task := waitStatus(t, s, "demo", name, "STOPPED", 2*time.Minute)
		if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != want {
			t.Errorf("%s: container %s exit %v (reason %q), want %d (28: ENOSPC, 42: the neighbour wrote its 16 MiB)",
				task.Group, c.Name, c.ExitCode, c.Reason, want)
		}
	}
	assertNothingLeft(t, s)
}
