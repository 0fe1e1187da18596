package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/logs"
	"github.com/gantry-dev/gantry/internal/testenv"
)

// BenchmarkLogIngest measures log lines from container stdout to stored
// CloudWatch Logs events, end to end, with 20 tasks writing at once. In the
// same run the same tasks write the same lines to a file inside the
// container instead: that is the floor the awslogs path is compared with.
//
//	go test -run '^$' -bench LogIngest -benchtime 1x -timeout 30m ./bench
func BenchmarkLogIngest(b *testing.B) {
	const tasks, lines = 20, 20000
	e := setup(b)
	ctx := context.Background()
	// ~100-byte lines, as applications write them.
	gen := fmt.Sprintf(`seq 1 %d | awk '{printf "line %%08d %%s\n", $1, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij"}'`, lines)
	var wantBytes int64
	for i := 1; i <= lines; i++ {
		wantBytes += int64(len(fmt.Sprintf("line %08d %s", i, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij")))
	}
	wantBytes *= tasks
	register := func(family, cmd string, awslogs bool) {
		cd := types.ContainerDefinition{Name: aws.String("gen"), Image: aws.String(image), Command: []string{"sh", "-c", cmd}}
		if awslogs {
			cd.LogConfiguration = &types.LogConfiguration{LogDriver: types.LogDriverAwslogs, Options: map[string]string{
				"awslogs-group": "/bench/" + family, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "b", "awslogs-create-group": "true",
			}}
		}
		_, err := e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
			Family: aws.String(family), NetworkMode: types.NetworkModeAwsvpc, ExecutionRoleArn: aws.String("arn:aws:iam::000000000000:role/ecsTaskExecutionRole"),
			RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate}, Cpu: aws.String("256"), Memory: aws.String("512"),
			ContainerDefinitions: []types.ContainerDefinition{cd},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	run := func(family string) []string {
		out, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
			Cluster: aws.String("bench"), TaskDefinition: aws.String(family), Count: aws.Int32(10), LaunchType: types.LaunchTypeFargate,
			NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
		})
		if err != nil || len(out.Failures) > 0 {
			b.Fatalf("run-task: %v %+v", err, out)
		}
		out2, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
			Cluster: aws.String("bench"), TaskDefinition: aws.String(family), Count: aws.Int32(tasks - 10), LaunchType: types.LaunchTypeFargate,
			NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
		})
		if err != nil || len(out2.Failures) > 0 {
			b.Fatalf("run-task: %v %+v", err, out2)
		}
		var arns []string
		for _, t := range append(out.Tasks, out2.Tasks...) {
			arns = append(arns, aws.ToString(t.TaskArn))
		}
		return arns
	}
	storedBytes := func(group string) int64 {
		stdout, _, code := e.s.AWS("logs", "describe-log-groups", "--log-group-name-prefix", group)
		var out struct {
			LogGroups []struct {
				StoredBytes int64 `json:"storedBytes"`
			} `json:"logGroups"`
		}
		if code != 0 || json.Unmarshal([]byte(stdout), &out) != nil || len(out.LogGroups) == 0 {
			return 0
		}
		return out.LogGroups[0].StoredBytes
	}

	for i := 0; i < b.N; i++ {
		file, logs := fmt.Sprintf("tofile%d", i), fmt.Sprintf("awslogs%d", i)
		register(file, gen+" > /tmp/out.log", false)
		register(logs, gen, true)

		// Both start the same way; only where the lines go differs.
		start := time.Now()
		arns := run(file)
		if err := e.waitStatus(ctx, arns, "STOPPED", 200*time.Millisecond); err != nil {
			b.Fatal(err)
		}
		fileTime := time.Since(start)

		start = time.Now()
		arns = run(logs)
		for storedBytes("/bench/"+logs) < wantBytes {
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("stored %d of %d bytes", storedBytes("/bench/"+logs), wantBytes)
			}
			time.Sleep(200 * time.Millisecond)
		}
		logsTime := time.Since(start)
		if got := storedBytes("/bench/" + logs); got != wantBytes {
			b.Fatalf("stored %d bytes, want %d", got, wantBytes)
		}
		e.waitStatus(ctx, arns, "STOPPED", time.Second)

		total := float64(tasks * lines)
		b.ReportMetric(total/logsTime.Seconds(), "awslogs-lines/s")
		b.ReportMetric(float64(wantBytes)/logsTime.Seconds()/1e6, "awslogs-MB/s")
		b.ReportMetric(total/fileTime.Seconds(), "file-lines/s")
		b.ReportMetric(logsTime.Seconds()/fileTime.Seconds(), "awslogs/file")
	}
}

// BenchmarkFilterLogEvents measures FilterLogEvents over a group of 10
// million events (GANTRY_BENCH_LOG_EVENTS changes the count), through the
// API as clients call it (HTTP, SigV4): the first page's latency (p50, p99)
// and the time to page through every match, for a term, a JSON pattern
// and a one-minute time-bounded query. The floor, in the same run, is
// grep -F over the same lines in a file: the whole file for the full
// queries, the minute's lines for the time-bounded one.
//
//	go test -run '^$' -bench FilterLogEvents -benchtime 1x -timeout 60m ./bench
func BenchmarkFilterLogEvents(b *testing.B) {
	total := 10_000_000
	if v, err := strconv.Atoi(os.Getenv("GANTRY_BENCH_LOG_EVENTS")); err == nil && v > 0 {
		total = v
	}
	const streams, batch, step = 10, 50000, 7 // ms between events
	s := testenv.Start(b)
	s.Stop()
	dir := b.TempDir()
	all, err := os.Create(filepath.Join(dir, "all.txt"))
	if err != nil {
		b.Fatal(err)
	}
	allw := bufio.NewWriterSize(all, 1<<20)
	window, err := os.Create(filepath.Join(dir, "window.txt"))
	if err != nil {
		b.Fatal(err)
	}

	// Load: straight into the store the API reads, in the batches the
	// agents write, with the lines mirrored to the floor's files.
	loadStart := time.Now()
	store, err := logs.Open(filepath.Join(s.DataDir, "logs.db"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	sink := logs.Sink{Store: store}
	ref := agent.LogStreamRef{Account: s.Creds.AccountID, Region: s.Creds.Region, Group: "/bench/filter"}
	ts0 := time.Now().Add(-time.Duration(total*step)*time.Millisecond - time.Hour).UnixMilli()
	winStart := ts0 + int64(total/2*step)
	winEnd := winStart + 60000
	for st := 0; st < streams; st++ {
		ref.Stream = fmt.Sprintf("app/web/%02d", st)
		if err := sink.OpenStream(ctx, agent.OpenLogStream{LogStreamRef: ref, CreateGroup: true}); err != nil {
			b.Fatal(err)
		}
	}
	evs := make([]agent.LogEvent, 0, batch)
	for i := 0; i < total; i++ {
		ts := ts0 + int64(i*step)
		var msg string
		if i%2 == 0 {
			level, status := "INFO", 200
			if i%200 == 0 {
				level, status = "ERROR", 500
			}
			msg = fmt.Sprintf("2026-11-25T10:00:00Z %s GET /api/items/%d %d %dms req=%08x", level, i%977, status, i%250, i)
		} else {
			level, status := "info", 200
			if i%200 == 1 {
				level, status = "error", 500
			}
			msg = fmt.Sprintf(`{"level":"%s","status":%d,"ms":%d,"path":"/api/items/%d","req":"%08x"}`, level, status, i%250, i%977, i)
		}
		evs = append(evs, agent.LogEvent{Timestamp: ts, Message: msg, Offset: int64(i)})
		allw.WriteString(msg + "\n")
		if ts >= winStart && ts <= winEnd {
			window.WriteString(msg + "\n")
		}
		if len(evs) == batch || i == total-1 {
			ref.Stream = fmt.Sprintf("app/web/%02d", (i/batch)%streams)
			if err := sink.PutLogs(ctx, agent.LogBatch{LogStreamRef: ref, Events: evs}); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	if err := errors.Join(allw.Flush(), all.Close(), window.Close(), store.Close()); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d events in %v", total, time.Since(loadStart).Round(time.Second))
	s.Restart()

	call := func(req map[string]any) (events int, next string, d time.Duration) {
		body, _ := json.Marshal(req)
		start := time.Now()
		out, err := logsCall(ctx, s, "FilterLogEvents", body)
		d = time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		var resp struct {
			Events    []json.RawMessage `json:"events"`
			NextToken string            `json:"nextToken"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			b.Fatal(err)
		}
		return len(resp.Events), resp.NextToken, d
	}
	grep := func(term, file string) (int, time.Duration) {
		start := time.Now()
		out, _ := exec.Command("grep", "-F", "-c", term, file).Output()
		d := time.Since(start)
		n, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			b.Fatalf("grep: %q", out)
		}
		return n, d
	}
	queries := []struct {
		name, pattern, grepFor, file string
		bounded                      bool
		firstPages                   int
	}{
		{"term", "ERROR", "ERROR", "all.txt", false, 20},
		{"json", `{ $.status = 500 }`, `"status":500`, "all.txt", false, 20},
		{"minute", "ERROR", "ERROR", "window.txt", true, 100},
	}
	for i := 0; i < b.N; i++ {
		for _, q := range queries {
			req := map[string]any{"logGroupName": "/bench/filter", "filterPattern": q.pattern}
			if q.bounded {
				req["startTime"], req["endTime"] = winStart, winEnd
			}
			var first []time.Duration
			for range q.firstPages {
				_, _, d := call(req)
				first = append(first, d)
			}
			// Every page, as a client collecting all matches does.
			start := time.Now()
			matches, pages := 0, 0
			for tok := ""; ; {
				if tok != "" {
					req["nextToken"] = tok
				}
				n, next, _ := call(req)
				matches += n
				pages++
				if next == "" {
					break
				}
				tok = next
			}
			delete(req, "nextToken")
			full := time.Since(start)
			want, floor := grep(q.grepFor, filepath.Join(dir, q.file))
			if matches != want {
				b.Fatalf("%s: %d matches, grep -c says %d", q.name, matches, want)
			}
			sort.Slice(first, func(i, j int) bool { return first[i] < first[j] })
			pct := func(p float64) float64 {
				return float64(first[int(p*float64(len(first)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.5), q.name+"-first-page-p50-ms")
			b.ReportMetric(pct(0.99), q.name+"-first-page-p99-ms")
			b.ReportMetric(float64(full.Milliseconds()), q.name+"-all-pages-ms")
			b.ReportMetric(float64(floor.Microseconds())/1000, q.name+"-grep-ms")
			b.ReportMetric(full.Seconds()/floor.Seconds(), q.name+"-all/grep")
			b.Logf("%s: %d matches in %d pages", q.name, matches, pages)
		}
	}
}

// logsCall sends one CloudWatch Logs request, signed as the SDKs sign it.
func logsCall(ctx context.Context, s *testenv.Server, op string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "Logs_20140328."+op)
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: s.Creds.AccessKeyID, SecretAccessKey: s.Creds.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "logs", s.Creds.Region, time.Now()); err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", op, resp.StatusCode, out)
	}
	return out, nil
}
