package test

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// cliV2 is Debian's awscli package: AWS CLI v2, the only one with
// `aws logs tail`. The v1 CLI the other tests use stays first in PATH.
const cliV2 = "/usr/bin/aws"

// TestLogsTailCLIv2 follows a running task with `aws logs tail --follow`
// (CLI v2) and filters with the space-delimited and JSON pattern forms
// through both CLIs.
func TestLogsTailCLIv2(t *testing.T) {
	if out, err := exec.Command(cliV2, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "aws-cli/2.") {
		t.Skipf("AWS CLI v2 not at %s (scripts/test.sh installs Debian's awscli): %v %s", cliV2, err, out)
	}
	s := testenv.Start(t)

	// Filter patterns as a user types them, through CLI v1.
	s.MustAWS(nil, "logs", "create-log-group", "--log-group-name", "/web/access")
	s.MustAWS(nil, "logs", "create-log-stream", "--log-group-name", "/web/access", "--log-stream-name", "nginx")
	now := time.Now().UnixMilli()
	putEvents(t, s, "/web/access", "nginx", []map[string]any{
		ev(now, `10.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET /index.html HTTP/1.1" 200 5120`),
		ev(now+1, `10.0.0.2 - bob [25/Nov/2026:10:00:01 +0000] "GET /missing HTTP/1.1" 404 153`),
		ev(now+2, `10.0.0.3 - - [25/Nov/2026:10:00:02 +0000] "POST /upload HTTP/1.1" 413 2048`),
		ev(now+3, `{"level":"error","code":"E503","path":"/api"}`),
	})
	filter := func(pattern string) []string {
		var out cliEvents
		s.MustAWS(&out, "logs", "filter-log-events", "--log-group-name", "/web/access", "--filter-pattern", pattern)
		return out.messages()
	}
	for pattern, want := range map[string]int{
		`[ip, ident, user, timestamp, request, status_code = 4*, bytes]`:                       2,
		`[ip, ident, user, timestamp, request, status_code = 4*, bytes > 1000]`:                1,
		`[..., request = "GET *", status_code, bytes]`:                                         2,
		`[ip, ident, user = bob, ...]`:                                                         1,
		`[ip = %10\.0\.0\.[12]%, ...]`:                                                         2,
		`{ $.code = %E5[0-9]+% }`:                                                              1,
		`{ $.path = /api && $.level != info }`:                                                 1,
		`[ip, ident, user, timestamp, request, status_code = 200 || status_code = 413, bytes]`: 2,
	} {
		if got := filter(pattern); len(got) != want {
			t.Errorf("%s: %d events %q, want %d", pattern, len(got), got, want)
		}
	}
	if code, msg := s.AWSError("logs", "filter-log-events", "--log-group-name", "/web/access", "--filter-pattern", "[ip, ip]"); code != "InvalidParameterException" || !strings.Contains(msg, "named twice") {
		t.Errorf("bad pattern: %s %s", code, msg)
	}

	// A ticking task, followed while it runs.
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerJSON(t, s, `{"family":"ticker","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","stopTimeout":2,
		"command":["sh","-c","trap 'exit 0' TERM; i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.2; done"],
		"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/ticker","awslogs-region":"us-east-1",
			"awslogs-stream-prefix":"web","awslogs-create-group":"true"}}}]}`)
	task := runTask(t, s, "--cluster", "demo", "--task-definition", "ticker", "--network-configuration", awsvpc(s.DefaultSubnet()))
	waitStatus(t, s, "demo", task.TaskArn, "RUNNING", 2*time.Minute)
	stream := "web/app/" + taskID(task.TaskArn)
	// One page, not allEvents: a stream still being written has no end.
	stored := func() int {
		var page cliEvents
		s.MustAWS(&page, "logs", "get-log-events", "--log-group-name", "/ecs/ticker", "--log-stream-name", stream, "--start-from-head")
		return len(page.Events)
	}
	for deadline := time.Now().Add(30 * time.Second); stored() < 5; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no ticks stored")
		}
	}
	// CLI v2 2.9 predates AWS_ENDPOINT_URL: the endpoint goes on the
	// command line, as a user of that version writes it.
	v2 := func(ctx context.Context, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, cliV2, append([]string{"--endpoint-url", s.Endpoint}, args...)...)
		cmd.Env = s.Env()
		return cmd
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Without --follow: what is there, then exit; the filter applies.
	out, err := v2(ctx, "logs", "tail", "/ecs/ticker", "--since", "1h", "--format", "short", "--filter-pattern", "[word = tick, n < 3]").CombinedOutput()
	if err != nil {
		t.Fatalf("aws logs tail: %v\n%s", err, out)
	}
	short := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (tick \d+)$`)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := short.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("aws logs tail printed %q", l)
		}
		got = append(got, m[1])
	}
	if strings.Join(got, ",") != "tick 0,tick 1,tick 2" {
		t.Errorf("tail --filter-pattern: %q", got)
	}

	// --follow: the lines already there, then new ones as they come.
	before := stored()
	follow := v2(ctx, "logs", "tail", "/ecs/ticker", "--follow", "--since", "1h", "--format", "detailed")
	pipe, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	// detailed: TIMESTAMP STREAM MESSAGE
	detailed := regexp.MustCompile(`^\S+ (\S+) tick (\d+)$`)
	want := before + 40 // 8 s of ticks after it started: two of its 5 s polls at least
	sc := bufio.NewScanner(pipe)
	n := 0
	for n < want && sc.Scan() {
		m := detailed.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != stream || m[2] != fmt.Sprint(n) {
			t.Fatalf("line %d of tail --follow: %q (stream %s)", n, sc.Text(), stream)
		}
		n++
	}
	if n < want {
		t.Fatalf("tail --follow printed %d lines, want %d (before it started: %d): %v", n, want, before, sc.Err())
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	waitStatus(t, s, "demo", task.TaskArn, "STOPPED", time.Minute)
}
