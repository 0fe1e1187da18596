package test

import (
	"bytes"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestExecSSM is `aws ecs execute-command` as users run it: the real aws
// CLI, which hands ExecuteCommand's session to AWS's real
// session-manager-plugin (scripts/build-session-manager-plugin.sh), which
// speaks the SSM data channel to Gantry (package ssmstream). Both want a
// terminal, so they run under a pseudo-terminal.
func TestExecSSM(t *testing.T) {
	plugin, err := exec.LookPath("session-manager-plugin")
	if err != nil {
		t.Fatalf("session-manager-plugin is not installed (scripts/build-session-manager-plugin.sh): %v", err)
	}
	t.Logf("plugin: %s", plugin)
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "ssm")
	td := fargateTD("exec-ssm")
	td["containerDefinitions"] = []obj{
		{"name": "app", "image": "gantry-test/busybox:latest", "essential": true, "command": []string{"sleep", "3600"}},
	}
	registerTD(t, s, td)
	netcfg := "awsvpcConfiguration={subnets=[" + s.DefaultSubnet() + "],assignPublicIp=DISABLED}"
	task := runTask(t, s, "--cluster", "ssm", "--launch-type", "FARGATE", "--task-definition", "exec-ssm",
		"--network-configuration", netcfg, "--enable-execute-command")
	waitStatus(t, s, "ssm", task.TaskArn, "RUNNING", 90*time.Second)

	// run runs `aws ecs execute-command` on a terminal of the given size,
	// typing input once the session is up, and returns everything the
	// terminal showed and the CLI's exit code.
	run := func(t *testing.T, command, input string, rows, cols uint16) (string, int) {
		t.Helper()
		cmd := exec.Command("aws", "ecs", "execute-command", "--cluster", "ssm", "--task", task.TaskArn,
			"--container", "app", "--interactive", "--command", command)
		cmd.Env = s.Env()
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		var mu sync.Mutex
		var screen bytes.Buffer
		read := make(chan struct{})
		go func() {
			defer close(read)
			buf := make([]byte, 4096)
			for {
				n, err := ptmx.Read(buf)
				mu.Lock()
				screen.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		if input != "" {
			deadline := time.Now().Add(60 * time.Second)
			for {
				mu.Lock()
				up := strings.Contains(screen.String(), "Starting session with SessionId")
				mu.Unlock()
				if up || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(2 * time.Second) // the plugin's shell handler starts after the handshake
			ptmx.Write([]byte(input))
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			<-done
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("aws ecs execute-command did not end; terminal: %q", screen.String())
		}
		select {
		case <-read:
		case <-time.After(5 * time.Second):
		}
		mu.Lock()
		defer mu.Unlock()
		return screen.String(), cmd.ProcessState.ExitCode()
	}

	t.Run("Command", func(t *testing.T) {
		out, code := run(t, "sh -c 'echo hello-from-task; exit 3'", "", 24, 80)
		t.Logf("terminal: %q", out)
		if !strings.Contains(out, "hello-from-task") || !strings.Contains(out, "Exiting session with sessionId: ecs-execute-command-") || code != 0 {
			t.Fatalf("exit %d, terminal %q", code, out)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		// Why the command did not run reaches the user as the plugin's
		// closing message.
		out, code := run(t, "/no/such/binary", "", 24, 80)
		t.Logf("terminal: %q", out)
		if !strings.Contains(out, "executable file not found") || code != 0 {
			t.Fatalf("exit %d, terminal %q", code, out)
		}
	})

	t.Run("Interactive", func(t *testing.T) {
		// Keystrokes reach the command and its terminal has the client's size.
		out, code := run(t, "sh", "stty size; echo T$((6*7)); exit\r", 33, 111)
		t.Logf("terminal: %q", out)
		if !strings.Contains(out, "33 111") || !strings.Contains(out, "T42") || code != 0 {
			t.Fatalf("exit %d, terminal %q", code, out)
		}
	})
}
