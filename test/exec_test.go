package test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/smithy-go"
	"github.com/creack/pty"

	"github.com/gantry-dev/gantry/internal/execstream"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

const execNotEnabledMsg = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn't running. Wait and try the command again or run a new task with execute command enabled and try again."

// TestExec is ECS Exec end to end: ExecuteCommand's checks and session,
// and `gantry exec` against real containers, piped and on a terminal.
func TestExec(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	td := fargateTD("exec")
	td["containerDefinitions"] = []obj{
		{"name": "app", "image": "gantry-test/busybox:latest", "essential": true, "command": []string{"sleep", "3600"}},
		{"name": "side", "image": "gantry-test/busybox:latest", "essential": true, "command": []string{"sleep", "3600"}},
	}
	registerTD(t, s, td)
	netcfg := "awsvpcConfiguration={subnets=[" + s.DefaultSubnet() + "],assignPublicIp=DISABLED}"
	on := runTask(t, s, "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "exec",
		"--network-configuration", netcfg, "--enable-execute-command")
	off := runTask(t, s, "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "exec",
		"--network-configuration", netcfg)
	waitStatus(t, s, "demo", on.TaskArn, "RUNNING", 90*time.Second)
	waitStatus(t, s, "demo", off.TaskArn, "RUNNING", 90*time.Second)
	taskID := on.TaskArn[strings.LastIndexByte(on.TaskArn, '/')+1:]

	gantryExec := func(stdin string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(testenv.Binary(t), append([]string{"exec"}, args...)...)
		cmd.Env = s.Env()
		cmd.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("gantry exec: %v", err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}

	t.Run("ExitCodeAndOutput", func(t *testing.T) {
		out, errOut, code := gantryExec("", "demo", taskID, "--container", "app", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
		if out != "hi\n" || !strings.Contains(errOut, "oops") || code != 3 {
			t.Fatalf("stdout %q, stderr %q, exit %d; want hi, oops, 3", out, errOut, code)
		}
		// Quoting survives the one-string command of ExecuteCommand.
		out, _, code = gantryExec("", "--cluster", "demo", on.TaskArn, "--container", "side", "--", "echo", "a  b", "it's", "$HOME")
		if out != "a  b it's $HOME\n" || code != 0 {
			t.Fatalf("stdout %q exit %d", out, code)
		}
		_, errOut, code = gantryExec("", "demo", taskID, "--container", "app", "--", "/no/such/binary")
		if code != 127 {
			t.Fatalf("missing binary: exit %d, stderr %q; want 127", code, errOut)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		in := strings.Repeat("hello, container\n", 5000) // several frames
		out, errOut, code := gantryExec(in, "demo", taskID, "--container", "app", "-i", "--", "cat")
		if out != in || code != 0 {
			t.Fatalf("cat returned %d bytes (want %d), exit %d, stderr %q", len(out), len(in), code, errOut)
		}
		// Without -i the command reads EOF at once.
		out, _, code = gantryExec("ignored\n", "demo", taskID, "--container", "app", "--", "wc", "-c")
		if strings.TrimSpace(out) != "0" || code != 0 {
			t.Fatalf("wc -c without -i: %q exit %d", out, code)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		_, errOut, code := gantryExec("", "demo", off.TaskArn, "--container", "app", "--", "true")
		if code != 255 || !strings.Contains(errOut, "(InvalidParameterException)") || !strings.Contains(errOut, execNotEnabledMsg) {
			t.Fatalf("exec into a task without execute command: exit %d, %q", code, errOut)
		}
		api := s.ECS()
		ctx := context.Background()
		for _, c := range []struct {
			name     string
			in       ecs.ExecuteCommandInput
			code     string
			contains string
		}{
			{"not enabled", ecs.ExecuteCommandInput{Cluster: aws.String("demo"), Task: aws.String(off.TaskArn), Container: aws.String("app"), Command: aws.String("true"), Interactive: true}, "InvalidParameterException", execNotEnabledMsg},
			{"two containers", ecs.ExecuteCommandInput{Cluster: aws.String("demo"), Task: aws.String(on.TaskArn), Command: aws.String("true"), Interactive: true}, "InvalidParameterException", "container name must be specified"},
			{"no such container", ecs.ExecuteCommandInput{Cluster: aws.String("demo"), Task: aws.String(on.TaskArn), Container: aws.String("nope"), Command: aws.String("true"), Interactive: true}, "InvalidParameterException", "nope"},
			{"not interactive", ecs.ExecuteCommandInput{Cluster: aws.String("demo"), Task: aws.String(on.TaskArn), Container: aws.String("app"), Command: aws.String("true")}, "InvalidParameterException", "Interactive is the only mode supported currently."},
			{"no cluster", ecs.ExecuteCommandInput{Cluster: aws.String("nope"), Task: aws.String(on.TaskArn), Container: aws.String("app"), Command: aws.String("true"), Interactive: true}, "ClusterNotFoundException", ""},
			{"no task", ecs.ExecuteCommandInput{Cluster: aws.String("demo"), Task: aws.String("0123456789abcdef0123456789abcdef"), Container: aws.String("app"), Command: aws.String("true"), Interactive: true}, "InvalidParameterException", ""},
		} {
			_, err := api.ExecuteCommand(ctx, &c.in)
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != c.code || !strings.Contains(ae.ErrorMessage(), c.contains) {
				t.Errorf("%s: got %v, want %s containing %q", c.name, err, c.code, c.contains)
			}
		}
	})

	t.Run("Session", func(t *testing.T) {
		out, err := s.ECS().ExecuteCommand(context.Background(), &ecs.ExecuteCommandInput{
			Cluster: aws.String("demo"), Task: aws.String(taskID), Container: aws.String("app"),
			Command: aws.String("echo once"), Interactive: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.TaskArn) != on.TaskArn || aws.ToString(out.ContainerName) != "app" || !out.Interactive ||
			!strings.HasPrefix(aws.ToString(out.ContainerArn), "arn:aws:ecs:") || !strings.HasSuffix(aws.ToString(out.ClusterArn), ":cluster/demo") ||
			!strings.HasPrefix(aws.ToString(out.Session.SessionId), "ecs-execute-command-") {
			t.Fatalf("response %+v session %+v", out, out.Session)
		}
		url, token := aws.ToString(out.Session.StreamUrl), aws.ToString(out.Session.TokenValue)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := execstream.Attach(ctx, url, token+"x", execstream.Options{}); err == nil {
			t.Fatal("attached with a wrong token")
		}
		var buf bytes.Buffer
		if err := execstream.Attach(ctx, url, token, execstream.Options{Stdout: &buf}); err != nil || buf.String() != "once\n" {
			t.Fatalf("attach: %v, output %q", err, buf.String())
		}
		if err := execstream.Attach(ctx, url, token, execstream.Options{Stdout: &buf}); err == nil {
			t.Fatal("a session's token worked twice")
		}
	})

	t.Run("TTY", func(t *testing.T) {
		cmd := exec.Command(testenv.Binary(t), "exec", "demo", taskID, "--container", "app", "-i", "-t", "--", "sh")
		cmd.Env = s.Env()
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		var mu sync.Mutex
		var screen bytes.Buffer
		go func() {
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
		// expect waits for want to appear in the output after mark.
		expect := func(mark int, want string) int {
			t.Helper()
			deadline := time.Now().Add(20 * time.Second)
			for {
				mu.Lock()
				got := screen.String()
				mu.Unlock()
				if i := strings.Index(got[mark:], want); i >= 0 {
					return mark + i + len(want)
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %q on the terminal; got %q", want, got[mark:])
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// tty resolves the terminal's name (ttyname), in a sandbox too.
		ptmx.Write([]byte("tty; stty size; echo T$((6*7))\n"))
		m := expect(0, "/dev/pts/")
		m = expect(m, "30 100")
		m = expect(m, "T42")
		// Job control: ^C interrupts the foreground job, ^Z stops one and
		// the shell gets it back.
		ptmx.Write([]byte("sleep 60\n"))
		time.Sleep(500 * time.Millisecond)
		ptmx.Write([]byte{0x03})
		ptmx.Write([]byte("echo C$((2+1))\n"))
		m = expect(m, "C3")
		ptmx.Write([]byte("sleep 60\n"))
		time.Sleep(500 * time.Millisecond)
		ptmx.Write([]byte{0x1a})
		m = expect(m, "Stopped")
		ptmx.Write([]byte("kill -9 %1; echo Z$((3+1))\n"))
		m = expect(m, "Z4")
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 41, Cols: 123}); err != nil {
			t.Fatal(err)
		}
		// The resize travels asynchronously; ask until the container sees it.
		deadline := time.Now().Add(20 * time.Second)
		for {
			ptmx.Write([]byte("stty size\n"))
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			got := screen.String()[m:]
			mu.Unlock()
			if strings.Contains(got, "41 123") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("resize never reached the container: %q", got)
			}
		}
		ptmx.Write([]byte("exit 7\n"))
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatal("gantry exec -t did not end after exit")
		}
		if code := cmd.ProcessState.ExitCode(); code != 7 {
			t.Fatalf("exit code %d, want 7", code)
		}
	})
}
