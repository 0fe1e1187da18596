package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// ptraceProbeImage builds "gantry-test/ptraceprobe:latest": busybox with
// internal/testimage/ptraceprobe as /bin/ptraceprobe.
func ptraceProbeImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "ptraceprobe")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/gantry-dev/gantry/internal/testimage/ptraceprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ptraceprobe: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(dir, "ptraceprobe.tar")
	if err := testimage.WriteWithFiles(tar, "gantry-test/ptraceprobe:latest",
		[]testimage.File{{Name: "bin/ptraceprobe", Mode: 0o755, Data: data}}, testimage.WithCmd("ptraceprobe")); err != nil {
		t.Fatal(err)
	}
	return tar
}

// TestCapabilities is linuxParameters.capabilities as Fargate has it, through
// the aws CLI: SYS_PTRACE may be added (and a task with it can ptrace a
// process of another user, as strace -p does; one without cannot), any
// capability may be dropped, and adding anything else is refused at
// RegisterTaskDefinition. The tasks run in both isolation modes.
func TestCapabilities(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, ptraceProbeImage(t))
	def := func(family, caps string) string {
		return fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
			"containerDefinitions":[{"name":"probe","image":"gantry-test/ptraceprobe:latest","essential":true%s}]}`, family, caps)
	}

	t.Run("Refused", func(t *testing.T) {
		code, msg := s.AWSError("ecs", "register-task-definition", "--cli-input-json",
			def("netadmin", `,"linuxParameters":{"capabilities":{"add":["SYS_PTRACE","NET_ADMIN"]}}`))
		if code != "ClientException" || !strings.Contains(msg, "Tasks launched on Fargate only support adding the SYS_PTRACE kernel capability.") {
			t.Errorf("adding NET_ADMIN: %s %s", code, msg)
		}
		code, msg = s.AWSError("ecs", "register-task-definition", "--cli-input-json",
			def("bogus", `,"linuxParameters":{"capabilities":{"drop":["NOT_A_CAP"]}}`))
		if code != "ClientException" || !strings.Contains(msg, "linuxParameters.capabilities.drop") || !strings.Contains(msg, "NOT_A_CAP") {
			t.Errorf("dropping an unknown capability: %s %s", code, msg)
		}
	})

	registerJSON(t, s, def("plain", ""))
	registerJSON(t, s, def("ptrace", `,"linuxParameters":{"capabilities":{"add":["SYS_PTRACE"]}}`))
	registerJSON(t, s, def("ptrace-nochown", `,"linuxParameters":{"capabilities":{"add":["SYS_PTRACE"],"drop":["CHOWN","NET_RAW"]}}`))
	net := awsvpc(defaultSubnet(t, s))

	for _, mode := range isolationModes {
		t.Run(mode, func(t *testing.T) {
			cluster := "caps-" + mode
			s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", cluster, "--settings", "name=isolation,value="+mode)
			// The probe's exit code: 1 SYS_PTRACE effective, 2 the attach
			// worked, 4 CHOWN effective.
			want := map[string]int{"plain": 4, "ptrace": 1 | 2 | 4, "ptrace-nochown": 1 | 2}
			arns := map[string]string{}
			for family := range want {
				task := runTask(t, s, "--cluster", cluster, "--launch-type", "FARGATE", "--task-definition", family, "--network-configuration", net)
				arns[family] = task.TaskArn
			}
			for family, code := range want {
				task := waitStatus(t, s, cluster, arns[family], "STOPPED", 2*time.Minute)
				c := task.Containers[0]
				if c.ExitCode == nil || *c.ExitCode != code {
					got := "none"
					if c.ExitCode != nil {
						got = fmt.Sprint(*c.ExitCode)
					}
					t.Errorf("%s: the probe exited %s (reason %q, task %q), want %d", family, got, c.Reason, task.StoppedReason, code)
				}
			}
		})
	}
}
