package test

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// scrape reads the server's /metrics as Prometheus does: a plain GET.
func scrape(t *testing.T, s *testenv.Server) string {
	t.Helper()
	resp, err := http.Get(s.Endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	return string(b)
}

// metric returns the value of the sample whose name and labels match re
// (a regexp for everything before the value), or -1.
func metric(text, re string) float64 {
	m := regexp.MustCompile(`(?m)^` + re + ` ([0-9.e+-]+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestMetrics(t *testing.T) {
	// A free registry port: servers side by side must not share the default.
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	for range 3 {
		s.MustAWS(nil, "ecs", "list-clusters")
	}
	s.AWSError("ecs", "describe-task-definition", "--task-definition", "nope")
	net := awsvpc(s.DefaultSubnet())
	registerJSON(t, s, `{"family":"quick","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","command":["true"]}]}`)
	registerJSON(t, s, `{"family":"broken","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","command":["/no/such/program"]}]}`)
	ok := runTask(t, s, "--cluster", "demo", "--task-definition", "quick", "--network-configuration", net)
	bad := runTask(t, s, "--cluster", "demo", "--task-definition", "broken", "--network-configuration", net)
	waitStatus(t, s, "demo", ok.TaskArn, "STOPPED", 2*time.Minute)
	waitStatus(t, s, "demo", bad.TaskArn, "STOPPED", 2*time.Minute)

	text := scrape(t, s)
	const ecs = `AmazonEC2ContainerServiceV20141113`
	checks := map[string]float64{
		`gantry_api_request_duration_seconds_count\{code="200",operation="ListClusters",service="` + ecs + `"\}`:           3,
		`gantry_api_request_duration_seconds_count\{code="200",operation="CreateCluster",service="` + ecs + `"\}`:          1,
		`gantry_api_request_duration_seconds_count\{code="400",operation="DescribeTaskDefinition",service="` + ecs + `"\}`: 1,
		`gantry_api_request_duration_seconds_count\{code="200",operation="RunTask",service="` + ecs + `"\}`:                2,
		`gantry_api_request_duration_seconds_count\{code="200",operation="DescribeSubnets",service="ec2"\}`:                1,
		`gantry_task_launches_total`:                                  2,
		`gantry_task_failures_total\{stop_code="TaskFailedToStart"\}`: 1,
		`gantry_image_pull_duration_seconds_count`:                    2,
	}
	for re, want := range checks {
		if got := metric(text, re); got != want {
			t.Errorf("%s = %v, want %v", re, got, want)
		}
	}
	// Stopped tasks are forgotten once stored, so only the gauge's presence
	// is certain here.
	if got := metric(text, `gantry_tasks\{state="RUNNING"\}`); got != 0 {
		t.Errorf(`gantry_tasks{state="RUNNING"} = %v, want 0`, got)
	}
	// Latency buckets exist for the histogram, not just a count.
	if metric(text, `gantry_api_request_duration_seconds_bucket\{code="200",operation="ListClusters",service="`+ecs+`",le="\+Inf"\}`) != 3 {
		t.Errorf("no histogram buckets for ListClusters")
	}
}
