package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type cliEvents struct {
	Events []struct {
		Timestamp     int64  `json:"timestamp"`
		Message       string `json:"message"`
		IngestionTime int64  `json:"ingestionTime"`
		LogStreamName string `json:"logStreamName"`
		EventID       string `json:"eventId"`
	} `json:"events"`
	NextForwardToken  string `json:"nextForwardToken"`
	NextBackwardToken string `json:"nextBackwardToken"`
	NextToken         string `json:"nextToken"`
}

func (e cliEvents) messages() []string {
	out := []string{}
	for _, ev := range e.Events {
		out = append(out, ev.Message)
	}
	return out
}

// putEvents writes events with the CLI from a file, as a user scripts it.
func putEvents(t *testing.T, s *testenv.Server, group, stream string, events []map[string]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.json")
	b, _ := json.Marshal(events)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := s.AWS("logs", "put-log-events", "--log-group-name", group, "--log-stream-name", stream, "--log-events", "file://"+path)
	if code != 0 {
		t.Fatalf("put-log-events: %s", stderr)
	}
	return out
}

func ev(ts int64, msg string) map[string]any { return map[string]any{"timestamp": ts, "message": msg} }

func TestLogsAPI(t *testing.T) {
	s := testenv.Start(t)
	now := time.Now().UnixMilli()

	s.MustAWS(nil, "logs", "create-log-group", "--log-group-name", "/app/web", "--tags", "team=core")
	code, msg := s.AWSError("logs", "create-log-group", "--log-group-name", "/app/web")
	if code != "ResourceAlreadyExistsException" || !strings.Contains(msg, "The specified log group already exists") {
		t.Errorf("duplicate group: %s %s", code, msg)
	}
	code, msg = s.AWSError("logs", "create-log-group", "--log-group-name", "bad name!")
	if code != "InvalidParameterException" || !strings.Contains(msg, "logGroupName") {
		t.Errorf("bad group name: %s %s", code, msg)
	}
	code, _ = s.AWSError("logs", "create-log-stream", "--log-group-name", "/app/missing", "--log-stream-name", "s")
	if code != "ResourceNotFoundException" {
		t.Errorf("stream in missing group: %s", code)
	}
	s.MustAWS(nil, "logs", "create-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "web/1")
	s.MustAWS(nil, "logs", "create-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "web/2")
	code, msg = s.AWSError("logs", "create-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "a:b")
	if code != "InvalidParameterException" || !strings.Contains(msg, "logStreamName") {
		t.Errorf("bad stream name: %s %s", code, msg)
	}

	// 25 events in one stream, then fewer in the other, later.
	var batch []map[string]any
	for i := range 25 {
		batch = append(batch, ev(now-60000+int64(i)*1000, fmt.Sprintf("line %02d level=INFO", i)))
	}
	putEvents(t, s, "/app/web", "web/1", batch)
	putEvents(t, s, "/app/web", "web/2", []map[string]any{
		ev(now-500, `{"level":"error","ms":250,"user":{"id":7}}`),
		ev(now-400, `{"level":"info","ms":20}`),
		ev(now-300, "ERROR failed to connect to db"),
		ev(now-200, "WARN slow request UNAUTHORIZED"),
	})

	// Out of order is refused; too old, too new and expired are reported.
	code, msg = s.AWSError("logs", "put-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/2",
		"--log-events", fmt.Sprintf(`[{"timestamp":%d,"message":"b"},{"timestamp":%d,"message":"a"}]`, now, now-10))
	if code != "InvalidParameterException" || !strings.Contains(msg, "chronological order") {
		t.Errorf("out of order: %s %s", code, msg)
	}
	out := putEvents(t, s, "/app/web", "web/2", []map[string]any{ev(now-15*24*3600*1000, "old"), ev(now, "ok"), ev(now+3*3600*1000, "future")})
	var put struct {
		Rejected struct {
			TooOld *int `json:"tooOldLogEventEndIndex"`
			TooNew *int `json:"tooNewLogEventStartIndex"`
		} `json:"rejectedLogEventsInfo"`
	}
	json.Unmarshal([]byte(out), &put)
	if put.Rejected.TooOld == nil || *put.Rejected.TooOld != 0 || put.Rejected.TooNew == nil || *put.Rejected.TooNew != 2 {
		t.Errorf("rejectedLogEventsInfo: %s", out)
	}
	code, _ = s.AWSError("logs", "put-log-events", "--log-group-name", "/app/web", "--log-stream-name", "nope",
		"--log-events", fmt.Sprintf(`[{"timestamp":%d,"message":"x"}]`, now))
	if code != "ResourceNotFoundException" {
		t.Errorf("put to missing stream: %s", code)
	}

	// GetLogEvents: from the head in pages, then the tail by default.
	var page cliEvents
	s.MustAWS(&page, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--start-from-head", "--limit", "10")
	if len(page.Events) != 10 || page.Events[0].Message != "line 00 level=INFO" {
		t.Fatalf("first page: %v", page.messages())
	}
	var all []string
	all = append(all, page.messages()...)
	for tok := page.NextForwardToken; ; {
		var p cliEvents
		s.MustAWS(&p, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--next-token", tok, "--limit", "10")
		all = append(all, p.messages()...)
		if p.NextForwardToken == tok {
			break
		}
		tok = p.NextForwardToken
		if len(all) > 100 {
			t.Fatal("forward paging does not end")
		}
	}
	if len(all) != 25 || all[24] != "line 24 level=INFO" {
		t.Errorf("paged forward: %d events, %v", len(all), all)
	}
	var tail cliEvents
	s.MustAWS(&tail, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--limit", "3")
	if got := strings.Join(tail.messages(), ","); got != "line 22 level=INFO,line 23 level=INFO,line 24 level=INFO" {
		t.Errorf("tail: %s", got)
	}
	var back cliEvents
	s.MustAWS(&back, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--limit", "3", "--next-token", tail.NextBackwardToken)
	if got := strings.Join(back.messages(), ","); got != "line 19 level=INFO,line 20 level=INFO,line 21 level=INFO" {
		t.Errorf("backward page: %s", got)
	}
	var window cliEvents
	s.MustAWS(&window, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--start-from-head",
		"--start-time", fmt.Sprint(now-60000+5000), "--end-time", fmt.Sprint(now-60000+8000))
	if got := strings.Join(window.messages(), ","); got != "line 05 level=INFO,line 06 level=INFO,line 07 level=INFO" {
		t.Errorf("time window (end exclusive): %s", got)
	}
	code, _ = s.AWSError("logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--next-token", "garbage")
	if code != "InvalidParameterException" {
		t.Errorf("bad token: %s", code)
	}

	// FilterLogEvents across streams, with the pattern syntax.
	filter := func(pattern string, extra ...string) []string {
		t.Helper()
		var r cliEvents
		s.MustAWS(&r, append([]string{"logs", "filter-log-events", "--log-group-name", "/app/web", "--filter-pattern", pattern}, extra...)...)
		return r.messages()
	}
	cases := map[string]int{
		"":                                 30,
		"ERROR":                            1,
		`"failed to connect"`:              1,
		"?ERROR ?WARN":                     2,
		"level -INFO":                      2, // the JSON lines
		"AUTHORIZED":                       0, // a term, not a substring of UNAUTHORIZED
		"%AUTHORIZED%":                     1,
		`{ $.level = "error" }`:            1,
		`{ $.ms > 100 }`:                   1,
		`{ $.ms >= 20 && $.level = "i*" }`: 1,
		`{ $.user.id = 7 || $.ms < 0 }`:    1,
		`{ $.missing NOT EXISTS }`:         2,
		"INFO":                             25,
	}
	for p, want := range cases {
		if got := filter(p); len(got) != want {
			t.Errorf("pattern %q: %d events, want %d: %v", p, len(got), want, got)
		}
	}
	if got := filter("INFO", "--log-stream-names", "web/2"); len(got) != 0 {
		t.Errorf("stream filter: %v", got)
	}
	if got := filter("", "--log-stream-name-prefix", "web/2"); len(got) != 5 {
		t.Errorf("prefix filter: %v", got)
	}
	// The CLI pages with nextToken itself; --max-items drives several pages.
	var paged cliEvents
	s.MustAWS(&paged, "logs", "filter-log-events", "--log-group-name", "/app/web", "--page-size", "4")
	if len(paged.Events) != 30 {
		t.Errorf("filter paging: %d events", len(paged.Events))
	}
	for i := 1; i < len(paged.Events); i++ {
		if paged.Events[i].Timestamp < paged.Events[i-1].Timestamp {
			t.Errorf("filter results out of time order at %d", i)
		}
	}
	code, msg = s.AWSError("logs", "filter-log-events", "--log-group-name", "/app/web", "--filter-pattern", `{ $.a = }`)
	if code != "InvalidParameterException" || !strings.Contains(msg, "filter pattern") {
		t.Errorf("bad pattern: %s %s", code, msg)
	}

	// Describe: groups with their tags, streams by last event time.
	var groups struct {
		LogGroups []struct {
			LogGroupName    string `json:"logGroupName"`
			Arn             string `json:"arn"`
			RetentionInDays *int   `json:"retentionInDays"`
			StoredBytes     int64  `json:"storedBytes"`
		} `json:"logGroups"`
	}
	s.MustAWS(nil, "logs", "create-log-group", "--log-group-name", "/other")
	s.MustAWS(&groups, "logs", "describe-log-groups", "--log-group-name-prefix", "/app")
	if len(groups.LogGroups) != 1 || groups.LogGroups[0].Arn != "arn:aws:logs:us-east-1:000000000000:log-group:/app/web:*" || groups.LogGroups[0].StoredBytes == 0 {
		t.Errorf("describe-log-groups: %+v", groups)
	}
	s.MustAWS(&groups, "logs", "describe-log-groups", "--page-size", "1")
	if len(groups.LogGroups) != 2 {
		t.Errorf("describe-log-groups paged: %+v", groups)
	}
	var streams struct {
		LogStreams []struct {
			LogStreamName      string `json:"logStreamName"`
			LastEventTimestamp int64  `json:"lastEventTimestamp"`
			Arn                string `json:"arn"`
		} `json:"logStreams"`
	}
	s.MustAWS(&streams, "logs", "describe-log-streams", "--log-group-name", "/app/web", "--order-by", "LastEventTime", "--descending")
	if len(streams.LogStreams) != 2 || streams.LogStreams[0].LogStreamName != "web/2" || streams.LogStreams[0].LastEventTimestamp != now {
		t.Errorf("describe-log-streams: %+v", streams)
	}
	code, _ = s.AWSError("logs", "describe-log-streams", "--log-group-name", "/app/web", "--order-by", "LastEventTime", "--log-stream-name-prefix", "w")
	if code != "InvalidParameterException" {
		t.Errorf("orderBy with prefix: %s", code)
	}

	// Tags.
	s.MustAWS(nil, "logs", "tag-log-group", "--log-group-name", "/app/web", "--tags", "env=prod")
	var tags struct{ Tags map[string]string }
	s.MustAWS(&tags, "logs", "list-tags-log-group", "--log-group-name", "/app/web")
	if tags.Tags["team"] != "core" || tags.Tags["env"] != "prod" {
		t.Errorf("tags: %v", tags.Tags)
	}
	s.MustAWS(nil, "logs", "untag-log-group", "--log-group-name", "/app/web", "--tags", "team")
	tags.Tags = nil
	s.MustAWS(&tags, "logs", "list-tags-for-resource", "--resource-arn", "arn:aws:logs:us-east-1:000000000000:log-group:/app/web")
	if len(tags.Tags) != 1 || tags.Tags["env"] != "prod" {
		t.Errorf("tags after untag: %v", tags.Tags)
	}

	// Everything is durable.
	s.Restart()
	s.MustAWS(&page, "logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1", "--start-from-head")
	if len(page.Events) != 25 {
		t.Errorf("after restart: %d events", len(page.Events))
	}

	// Deleting a stream, then the group.
	s.MustAWS(nil, "logs", "delete-log-stream", "--log-group-name", "/app/web", "--log-stream-name", "web/1")
	code, _ = s.AWSError("logs", "get-log-events", "--log-group-name", "/app/web", "--log-stream-name", "web/1")
	if code != "ResourceNotFoundException" {
		t.Errorf("deleted stream: %s", code)
	}
	s.MustAWS(nil, "logs", "delete-log-group", "--log-group-name", "/app/web")
	code, msg = s.AWSError("logs", "delete-log-group", "--log-group-name", "/app/web")
	if code != "ResourceNotFoundException" || !strings.Contains(msg, "The specified log group does not exist.") {
		t.Errorf("deleted group: %s %s", code, msg)
	}
}

func TestLogsRetention(t *testing.T) {
	s := testenv.Start(t)
	now := time.Now().UnixMilli()
	day := int64(24 * 3600 * 1000)
	s.MustAWS(nil, "logs", "create-log-group", "--log-group-name", "ret")
	s.MustAWS(nil, "logs", "create-log-stream", "--log-group-name", "ret", "--log-stream-name", "s")
	putEvents(t, s, "ret", "s", []map[string]any{ev(now-3*day-5000, "three days old"), ev(now-3*day, "also old")})
	putEvents(t, s, "ret", "s", []map[string]any{ev(now-1000, "fresh")})

	code, msg := s.AWSError("logs", "put-retention-policy", "--log-group-name", "ret", "--retention-in-days", "2")
	if code != "InvalidParameterException" || !strings.Contains(msg, "retentionInDays") {
		t.Errorf("retention 2: %s %s", code, msg)
	}
	s.MustAWS(nil, "logs", "put-retention-policy", "--log-group-name", "ret", "--retention-in-days", "1")
	var groups struct {
		LogGroups []struct {
			RetentionInDays int `json:"retentionInDays"`
		} `json:"logGroups"`
	}
	s.MustAWS(&groups, "logs", "describe-log-groups", "--log-group-name-prefix", "ret")
	if len(groups.LogGroups) != 1 || groups.LogGroups[0].RetentionInDays != 1 {
		t.Errorf("retention not shown: %+v", groups)
	}
	// Expired events really go: the store deletes them, not just hides them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var page cliEvents
		s.MustAWS(&page, "logs", "get-log-events", "--log-group-name", "ret", "--log-stream-name", "s", "--start-from-head")
		if got := strings.Join(page.messages(), ","); got == "fresh" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("expired events still there: %s", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Events older than the retention are refused as expired.
	out := putEvents(t, s, "ret", "s", []map[string]any{ev(now-2*day, "expired"), ev(now, "kept")})
	if !strings.Contains(out, `"expiredLogEventEndIndex": 0`) {
		t.Errorf("expired event not reported: %s", out)
	}
	s.MustAWS(nil, "logs", "delete-retention-policy", "--log-group-name", "ret")
	groups.LogGroups = nil
	s.MustAWS(&groups, "logs", "describe-log-groups", "--log-group-name-prefix", "ret")
	if groups.LogGroups[0].RetentionInDays != 0 {
		t.Errorf("retention not removed: %+v", groups)
	}
}

// taskID is the last part of a task ARN, as stream names carry it.
func taskID(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// allEvents reads a whole stream from the head, page by page, as a user does.
func allEvents(t *testing.T, s *testenv.Server, group, stream string) []string {
	t.Helper()
	var out []string
	args := []string{"logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head"}
	for tok := ""; ; {
		var p cliEvents
		a := args
		if tok != "" {
			a = append(a, "--next-token", tok)
		}
		s.MustAWS(&p, a...)
		out = append(out, p.messages()...)
		if p.NextForwardToken == tok {
			return out
		}
		tok = p.NextForwardToken
	}
}

func TestLogsFromTasks(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	net := awsvpc(s.DefaultSubnet())
	// A chatty container that writes to stdout and stderr and then crashes:
	// every line, the last ones included, must arrive in order.
	registerJSON(t, s, `{"family":"chatty","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest",
		"command":["sh","-c","i=0; while [ $i -lt 5000 ]; do echo \"out $i\"; i=$((i+1)); done; echo 'to stderr' >&2; echo -n 'last words'; exit 3"],
		"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/chatty","awslogs-region":"us-east-1",
			"awslogs-stream-prefix":"ecs","awslogs-create-group":"true"}}}]}`)
	registerJSON(t, s, `{"family":"nogroup","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","command":["true"],
		"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/missing","awslogs-region":"us-east-1","awslogs-stream-prefix":"ecs"}}}]}`)

	task := runTask(t, s, "--cluster", "demo", "--task-definition", "chatty", "--network-configuration", net)
	missing := runTask(t, s, "--cluster", "demo", "--task-definition", "nogroup", "--network-configuration", net)
	got := waitStatus(t, s, "demo", task.TaskArn, "STOPPED", 2*time.Minute)
	if got.Containers[0].ExitCode == nil || *got.Containers[0].ExitCode != 3 {
		t.Fatalf("chatty task: %+v", got)
	}
	stream := "ecs/app/" + taskID(task.TaskArn)
	var lines []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		lines = allEvents(t, s, "/ecs/chatty", stream)
		if len(lines) >= 5002 || time.Now().After(deadline) {
			break
		}
	}
	if len(lines) != 5002 {
		t.Fatalf("got %d lines, want 5002; last: %v", len(lines), lines[max(0, len(lines)-3):])
	}
	// stdout and stderr are two pipes read side by side: each keeps its
	// order, but where the stderr line falls among the stdout lines depends
	// on which reader got there first (with Docker's awslogs driver too).
	var stdout []string
	stderr := 0
	for _, l := range lines {
		if l == "to stderr" {
			stderr++
			continue
		}
		stdout = append(stdout, l)
	}
	if stderr != 1 {
		t.Errorf("the stderr line arrived %d times, want once", stderr)
	}
	for i := range 5000 {
		if stdout[i] != fmt.Sprintf("out %d", i) {
			t.Fatalf("stdout line %d: %q", i, stdout[i])
		}
	}
	if stdout[5000] != "last words" {
		t.Errorf("last stdout line: %q, want the unterminated %q", stdout[5000], "last words")
	}

	// Fargate refuses a task whose log group is missing without awslogs-create-group.
	got = waitStatus(t, s, "demo", missing.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "TaskFailedToStart" || !strings.Contains(got.StoppedReason, "ResourceInitializationError") || !strings.Contains(got.StoppedReason, "The specified log group does not exist") {
		t.Errorf("missing group: %s %q", got.StopCode, got.StoppedReason)
	}

	// A task's logs outlive it and the server.
	s.Restart()
	if n := len(allEvents(t, s, "/ecs/chatty", stream)); n != 5002 {
		t.Errorf("after restart: %d lines", n)
	}
}

// TestLogsTailFollow follows a running task's stream the way `aws logs tail
// --follow` (CLI v2) does: FilterLogEvents pages from a start time, polling
// again from the last timestamp seen and skipping event ids already shown.
// The lines must arrive while the task runs, across a server restart.
func TestLogsTailFollow(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	s.MustAWS(nil, "logs", "create-log-group", "--log-group-name", "/ecs/ticker")
	registerJSON(t, s, `{"family":"ticker","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","stopTimeout":2,
		"command":["sh","-c","trap 'exit 0' TERM; i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.2; done"],
		"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/ticker","awslogs-region":"us-east-1","awslogs-stream-prefix":"web"}}}]}`)
	task := runTask(t, s, "--cluster", "demo", "--task-definition", "ticker", "--network-configuration", awsvpc(s.DefaultSubnet()))
	waitStatus(t, s, "demo", task.TaskArn, "RUNNING", 2*time.Minute)

	follow := func(minLines int) []string {
		t.Helper()
		out, err := s.Python(fmt.Sprintf(`
import boto3, time
logs = boto3.client("logs")
start, seen, lines = int((time.time() - 600) * 1000), set(), []
deadline = time.time() + 60
while len(lines) < %d and time.time() < deadline:
    last = start
    for page in logs.get_paginator("filter_log_events").paginate(logGroupName="/ecs/ticker", startTime=start, interleaved=True):
        for e in page["events"]:
            if e["eventId"] in seen:
                continue
            seen.add(e["eventId"])
            lines.append(e["logStreamName"] + " " + e["message"])
            last = max(last, e["timestamp"])
    start = last
    time.sleep(1)
print("\n".join(lines))
`, minLines))
		if err != nil {
			t.Fatalf("follow: %v\n%s", err, out)
		}
		return strings.Split(strings.TrimSpace(out), "\n")
	}
	lines := follow(10)
	stream := "web/app/" + taskID(task.TaskArn)
	for i, l := range lines {
		if l != fmt.Sprintf("%s tick %d", stream, i) {
			t.Fatalf("line %d: %q", i, l)
		}
	}
	// The agent goes away and comes back: what the container wrote meanwhile
	// waited in its pipe, and nothing is lost or repeated.
	s.Restart()
	time.Sleep(2 * time.Second)
	lines = follow(len(lines) + 20)
	for i, l := range lines {
		if l != fmt.Sprintf("%s tick %d", stream, i) {
			t.Fatalf("after restart, line %d: %q", i, l)
		}
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	waitStatus(t, s, "demo", task.TaskArn, "STOPPED", time.Minute)
}
