package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestLogsDiskFull runs chatty containers while the file system holding
// logs.db and the awslogs spools is full. The blocking-mode container loses
// nothing; the non-blocking one loses lines, and every lost line is
// accounted for by a marker event in its stream, the server log and the
// gantry_log_dropped_lines_total metric. Logging resumes once space
// returns, and nothing stays behind on the small file system.
func TestLogsDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")

	// logs.db and the spools move to a 16 MiB tmpfs, as if the data
	// directory's disk were that small.
	s.Stop()
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "gantry-logs-full", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	// Lazily: the server still has its files open when this runs.
	t.Cleanup(func() { exec.Command("umount", "-l", small).Run() })
	for _, f := range []string{"logs.db", "logs.db-wal", "logs.db-shm"} {
		os.Remove(filepath.Join(s.DataDir, f))
	}
	spools := filepath.Join(small, "spool")
	mustOK(t, os.MkdirAll(spools, 0o700))
	mustOK(t, os.MkdirAll(filepath.Join(s.DataDir, "agent"), 0o700))
	os.RemoveAll(filepath.Join(s.DataDir, "agent", "logs"))
	mustOK(t, os.Symlink(filepath.Join(small, "logs.db"), filepath.Join(s.DataDir, "logs.db")))
	mustOK(t, os.Symlink(spools, filepath.Join(s.DataDir, "agent", "logs")))
	s.Restart()

	// About 300 lines of ~100 bytes a second until stopped; the last line
	// says how many came before it.
	cmd := func(tag string) string {
		return fmt.Sprintf(`trap 'echo "%[1]s end $i"; exit 0' TERM; i=0; while true; do j=0; while [ $j -lt 30 ]; do echo "%[1]s $i abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"; i=$((i+1)); j=$((j+1)); done; sleep 0.1; done`, tag)
	}
	ctr := func(name, mode string) string {
		return fmt.Sprintf(`{"name":%q,"image":"gantry-test/busybox:latest","essential":%v,"stopTimeout":5,"command":["sh","-c",%q],
			"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/full","awslogs-region":"us-east-1",
			"awslogs-stream-prefix":"ecs","awslogs-create-group":"true","mode":%q,"max-buffer-size":"32k"}}}`, name, name == "bl", cmd(name), mode)
	}
	registerJSON(t, s, `{"family":"full","executionRoleArn":"arn:aws:iam::000000000000:role/ecsTaskExecutionRole","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[`+ctr("bl", "blocking")+`,`+ctr("nb", "non-blocking")+`]}`)
	task := runTask(t, s, "--cluster", "demo", "--task-definition", "full", "--network-configuration", awsvpc(s.DefaultSubnet()))
	waitStatus(t, s, "demo", task.TaskArn, "RUNNING", 2*time.Minute)
	if _, err := os.Stat(filepath.Join(small, "logs.db-wal")); err != nil {
		t.Fatalf("logs.db is not on the small file system: %v", err)
	}
	id := taskID(task.TaskArn)
	nbStream, blStream := "ecs/nb/"+id, "ecs/bl/"+id
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var page cliEvents
		s.MustAWS(&page, "logs", "get-log-events", "--log-group-name", "/ecs/full", "--log-stream-name", nbStream, "--start-from-head", "--limit", "1")
		if len(page.Events) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task's first lines never arrived")
		}
	}

	// Fill the disk, and keep it full: whatever the server frees (a
	// shipped spool starting over) is taken again at once.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	filler := filepath.Join(small, "filler")
	go func() {
		defer wg.Done()
		f, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		for {
			for _, n := range []int{1 << 20, 64 << 10, 4 << 10, 512} {
				for _, err := f.Write(make([]byte, n)); err == nil; _, err = f.Write(make([]byte, n)) {
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	time.Sleep(6 * time.Second)
	// Reads go on while the disk is full, and the task keeps running.
	if n := len(allEvents(t, s, "/ecs/full", blStream)); n == 0 {
		t.Error("reading a stream failed while the disk was full")
	}
	if got := describeTask(t, s, "demo", task.TaskArn); got.LastStatus != "RUNNING" {
		t.Errorf("task %s while the disk was full", got.LastStatus)
	}
	close(stop)
	wg.Wait()
	mustOK(t, os.Remove(filler))
	// Logging goes on a while with room again, then the task stops.
	time.Sleep(3 * time.Second)
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	waitStatus(t, s, "demo", task.TaskArn, "STOPPED", 3*time.Minute)
	marker := regexp.MustCompile(`^\[gantry\] (\d+) log lines \((\d+) bytes\) were dropped between (\S+) and (\S+): (.*)$`)
	endRe := regexp.MustCompile(`^(nb|bl) end (\d+)$`)
	var nb, markers []string
	var kept, dropped, lines int
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		nb, markers, kept, dropped, lines = allEvents(t, s, "/ecs/full", nbStream), nil, 0, 0, -1
		for _, l := range nb {
			if m := marker.FindStringSubmatch(l); m != nil {
				markers = append(markers, l)
				n, _ := strconv.Atoi(m[1])
				dropped += n
			} else if m := endRe.FindStringSubmatch(l); m != nil {
				lines, _ = strconv.Atoi(m[2])
			} else {
				kept++
			}
		}
		if lines >= 0 || time.Now().After(deadline) {
			break
		}
	}
	if lines < 0 {
		t.Fatalf("non-blocking: the last line never arrived (%d lines kept, %d reported dropped)", kept, dropped)
	}
	if kept+dropped != lines {
		t.Fatalf("non-blocking: %d lines kept + %d reported dropped, want %d", kept, dropped, lines)
	}
	if dropped == 0 {
		t.Fatalf("non-blocking: nothing dropped with the disk full for 6 s (the test did not fill it?)")
	}
	t.Logf("non-blocking: %d lines kept, %d dropped: %q", kept, dropped, markers)
	for _, m := range markers {
		if !strings.Contains(m, "no space left on device") {
			t.Errorf("marker does not say why: %q", m)
		}
	}
	// Kept lines are in order, and the last ones, written after space
	// returned, are there: logging resumed.
	last := -1
	for _, l := range nb {
		if marker.MatchString(l) || endRe.MatchString(l) {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(l, "nb %d ", &n); err != nil || n <= last {
			t.Fatalf("non-blocking: line %q after line %d", l, last)
		}
		last = n
	}
	if last != lines-1 {
		t.Errorf("non-blocking: last line %d, want %d", last, lines-1)
	}
	// Blocking mode waits rather than drops: every line, in order.
	bl := allEvents(t, s, "/ecs/full", blStream)
	if len(bl) == 0 || bl[len(bl)-1] != fmt.Sprintf("bl end %d", len(bl)-1) {
		t.Fatalf("blocking: %d lines, the last %q", len(bl), bl[max(0, len(bl)-1):])
	}
	for i, l := range bl[:len(bl)-1] {
		if !strings.HasPrefix(l, fmt.Sprintf("bl %d ", i)) {
			t.Fatalf("blocking: line %d is %q", i, l)
		}
	}

	// The loss is in the server log and in the metrics too.
	logText, err := os.ReadFile(filepath.Join(s.DataDir, "server.log"))
	mustOK(t, err)
	for _, want := range []string{"log spool write failed", "log lines dropped"} {
		if !strings.Contains(string(logText), want) {
			t.Errorf("server log has no %q", want)
		}
	}
	if got := metricValue(t, s.Endpoint, `gantry_log_dropped_lines_total{reason="buffer_full"}`); got != float64(dropped) {
		t.Errorf("gantry_log_dropped_lines_total = %v, want %d", got, dropped)
	}
	if metricValue(t, s.Endpoint, "gantry_log_spool_write_failures_total") == 0 {
		t.Error("gantry_log_spool_write_failures_total is 0")
	}

	// Everything stored: the task's spools are gone from the small disk.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(spools, id)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the task's log spool is still on disk")
		}
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// metricValue reads one sample from the server's Prometheus endpoint.
func metricValue(t *testing.T, endpoint, name string) float64 {
	t.Helper()
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	return 0
}
