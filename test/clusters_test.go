package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type ecsKV struct{ Name, Value string }

type ecsCluster struct {
	ClusterArn                        string
	ClusterName                       string
	Status                            string
	RunningTasksCount                 *int
	PendingTasksCount                 *int
	ActiveServicesCount               *int
	RegisteredContainerInstancesCount *int
	Settings                          []ecsKV
	Statistics                        []ecsKV
	Tags                              []struct{ Key, Value string }
	CapacityProviders                 []string
	DefaultCapacityProviderStrategy   []struct {
		CapacityProvider string
		Weight, Base     int
	}
	Configuration *struct {
		ExecuteCommandConfiguration struct{ Logging string }
	}
}

type ecsFailure struct{ Arn, Reason string }

func TestClusters(t *testing.T) {
	s := testenv.Start(t)
	arn := func(name string) string {
		return fmt.Sprintf("arn:aws:ecs:%s:%s:cluster/%s", s.Creds.Region, s.Creds.AccountID, name)
	}

	var list struct {
		ClusterArns []string
		NextToken   string
	}
	s.MustAWS(&list, "ecs", "list-clusters")
	if len(list.ClusterArns) != 0 {
		t.Fatalf("new account lists clusters: %v", list)
	}

	var created struct{ Cluster ecsCluster }
	s.MustAWS(&created, "ecs", "create-cluster", "--cluster-name", "web",
		"--tags", "key=team,value=a", "key=env,value=prod",
		"--settings", "name=containerInsights,value=enabled")
	c := created.Cluster
	if c.ClusterArn != arn("web") || c.ClusterName != "web" || c.Status != "ACTIVE" ||
		c.RunningTasksCount == nil || *c.RunningTasksCount != 0 || c.PendingTasksCount == nil || c.ActiveServicesCount == nil ||
		c.RegisteredContainerInstancesCount == nil || len(c.Tags) != 2 || c.Tags[0].Key != "team" ||
		len(c.Settings) != 2 || c.Settings[0] != (ecsKV{"containerInsights", "enabled"}) || c.Settings[1].Name != "isolation" {
		t.Fatalf("create-cluster: %+v", c)
	}

	t.Run("default cluster", func(t *testing.T) {
		var d struct {
			Clusters []ecsCluster
			Failures []ecsFailure
		}
		s.MustAWS(&d, "ecs", "describe-clusters")
		if len(d.Clusters) != 0 || len(d.Failures) != 1 || d.Failures[0] != (ecsFailure{arn("default"), "MISSING"}) {
			t.Fatalf("describe default before it exists: %+v", d)
		}
		var out struct{ Cluster ecsCluster }
		s.MustAWS(&out, "ecs", "create-cluster")
		if out.Cluster.ClusterName != "default" || len(out.Cluster.Settings) != 2 || out.Cluster.Settings[0].Value != "disabled" {
			t.Fatalf("create-cluster without name: %+v", out)
		}
		d.Clusters, d.Failures = nil, nil
		s.MustAWS(&d, "ecs", "describe-clusters")
		if len(d.Clusters) != 1 || d.Clusters[0].ClusterName != "default" || len(d.Failures) != 0 {
			t.Fatalf("describe default: %+v", d)
		}
	})

	t.Run("idempotent create", func(t *testing.T) {
		var again struct{ Cluster ecsCluster }
		s.MustAWS(&again, "ecs", "create-cluster", "--cluster-name", "web")
		if again.Cluster.ClusterArn != arn("web") || len(again.Cluster.Tags) != 2 || again.Cluster.Settings[0].Value != "enabled" {
			t.Fatalf("second create-cluster changed the cluster: %+v", again)
		}
	})

	t.Run("describe include", func(t *testing.T) {
		var d struct {
			Clusters []ecsCluster
			Failures []ecsFailure
		}
		s.MustAWS(&d, "ecs", "describe-clusters", "--clusters", "web", arn("web"), "nope", arn("gone"))
		if len(d.Clusters) != 2 || d.Clusters[1].ClusterArn != arn("web") {
			t.Fatalf("clusters: %+v", d.Clusters)
		}
		if c := d.Clusters[0]; c.Tags != nil || c.Settings != nil || c.Statistics != nil || c.RunningTasksCount == nil {
			t.Errorf("without include: %+v", c)
		}
		if len(d.Failures) != 2 || d.Failures[0] != (ecsFailure{arn("nope"), "MISSING"}) || d.Failures[1] != (ecsFailure{arn("gone"), "MISSING"}) {
			t.Errorf("failures: %+v", d.Failures)
		}
		d.Clusters = nil
		s.MustAWS(&d, "ecs", "describe-clusters", "--clusters", "web", "--include", "TAGS", "SETTINGS", "STATISTICS")
		c := d.Clusters[0]
		if len(c.Tags) != 2 || len(c.Settings) != 2 || len(c.Statistics) == 0 {
			t.Fatalf("with include: %+v", c)
		}
		stats := map[string]string{}
		for _, kv := range c.Statistics {
			stats[kv.Name] = kv.Value
		}
		if stats["runningFargateTasksCount"] != "0" || stats["pendingFargateTasksCount"] != "0" {
			t.Errorf("statistics: %v", stats)
		}
		code, _ := s.AWSError("ecs", "describe-clusters", "--include", "BOGUS")
		if code != "InvalidParameterException" {
			t.Errorf("bad include: %q", code)
		}
	})

	t.Run("update", func(t *testing.T) {
		var out struct{ Cluster ecsCluster }
		s.MustAWS(&out, "ecs", "update-cluster-settings", "--cluster", "web", "--settings", "name=containerInsights,value=enhanced")
		if len(out.Cluster.Settings) != 2 || out.Cluster.Settings[0].Value != "enhanced" {
			t.Fatalf("update-cluster-settings: %+v", out)
		}
		out = struct{ Cluster ecsCluster }{}
		s.MustAWS(&out, "ecs", "update-cluster", "--cluster", arn("web"), "--configuration", "executeCommandConfiguration={logging=DEFAULT}")
		if out.Cluster.Configuration == nil || out.Cluster.Configuration.ExecuteCommandConfiguration.Logging != "DEFAULT" ||
			out.Cluster.Settings[0].Value != "enhanced" {
			t.Fatalf("update-cluster: %+v", out)
		}
		for _, c := range []struct {
			args []string
			code string
		}{
			{[]string{"update-cluster-settings", "--cluster", "web", "--settings", "name=containerInsights,value=sometimes"}, "InvalidParameterException"},
			{[]string{"update-cluster-settings", "--cluster", "nope", "--settings", "name=containerInsights,value=enabled"}, "ClusterNotFoundException"},
			{[]string{"update-cluster", "--cluster", "nope", "--settings", "name=containerInsights,value=enabled"}, "ClusterNotFoundException"},
			{[]string{"update-cluster", "--cluster", "web", "--configuration", "executeCommandConfiguration={logging=LOUD}"}, "InvalidParameterException"},
		} {
			if code, msg := s.AWSError(append([]string{"ecs"}, c.args...)...); code != c.code {
				t.Errorf("%v: %s (%s), want %s", c.args, code, msg, c.code)
			}
		}
	})

	t.Run("capacity providers", func(t *testing.T) {
		var out struct{ Cluster ecsCluster }
		s.MustAWS(&out, "ecs", "create-cluster", "--cluster-name", "spot",
			"--capacity-providers", "FARGATE", "FARGATE_SPOT",
			"--default-capacity-provider-strategy", "capacityProvider=FARGATE,weight=1,base=2", "capacityProvider=FARGATE_SPOT,weight=4")
		c := out.Cluster
		if len(c.CapacityProviders) != 2 || len(c.DefaultCapacityProviderStrategy) != 2 ||
			c.DefaultCapacityProviderStrategy[0].Base != 2 || c.DefaultCapacityProviderStrategy[1].Weight != 4 {
			t.Fatalf("create with providers: %+v", c)
		}
		out = struct{ Cluster ecsCluster }{}
		s.MustAWS(&out, "ecs", "put-cluster-capacity-providers", "--cluster", "spot",
			"--capacity-providers", "FARGATE_SPOT", "--default-capacity-provider-strategy", "capacityProvider=FARGATE_SPOT,weight=1")
		if len(out.Cluster.CapacityProviders) != 1 || out.Cluster.CapacityProviders[0] != "FARGATE_SPOT" ||
			len(out.Cluster.DefaultCapacityProviderStrategy) != 1 {
			t.Fatalf("put-cluster-capacity-providers: %+v", out)
		}
		for _, args := range [][]string{
			{"create-cluster", "--cluster-name", "x", "--capacity-providers", "EC2_THING"},
			{"create-cluster", "--cluster-name", "x", "--capacity-providers", "FARGATE", "--default-capacity-provider-strategy", "capacityProvider=FARGATE_SPOT,weight=1"},
			{"create-cluster", "--cluster-name", "x", "--capacity-providers", "FARGATE", "--default-capacity-provider-strategy", "capacityProvider=FARGATE,weight=1001"},
			{"create-cluster", "--cluster-name", "x", "--capacity-providers", "FARGATE", "FARGATE_SPOT", "--default-capacity-provider-strategy", "capacityProvider=FARGATE,weight=1,base=1", "capacityProvider=FARGATE_SPOT,weight=1,base=1"},
			{"create-cluster", "--cluster-name", "x", "--capacity-providers", "FARGATE", "--default-capacity-provider-strategy", "capacityProvider=FARGATE,weight=0"},
			{"put-cluster-capacity-providers", "--cluster", "spot", "--capacity-providers", "NOPE", "--default-capacity-provider-strategy", "[]"},
		} {
			if code, msg := s.AWSError(append([]string{"ecs"}, args...)...); code != "InvalidParameterException" {
				t.Errorf("%v: %s (%s)", args, code, msg)
			}
		}
		if code, _ := s.AWSError("ecs", "put-cluster-capacity-providers", "--cluster", "nope", "--capacity-providers", "FARGATE", "--default-capacity-provider-strategy", "[]"); code != "ClusterNotFoundException" {
			t.Errorf("put on missing cluster: %s", code)
		}

		var cp struct {
			CapacityProviders []struct{ CapacityProviderArn, Name, Status, Type string }
			Failures          []ecsFailure
		}
		s.MustAWS(&cp, "ecs", "describe-capacity-providers")
		if len(cp.CapacityProviders) != 2 || cp.CapacityProviders[0].Name != "FARGATE" || cp.CapacityProviders[1].Name != "FARGATE_SPOT" ||
			cp.CapacityProviders[0].Status != "ACTIVE" ||
			cp.CapacityProviders[0].CapacityProviderArn != fmt.Sprintf("arn:aws:ecs:%s:%s:capacity-provider/FARGATE", s.Creds.Region, s.Creds.AccountID) {
			t.Fatalf("describe-capacity-providers: %+v", cp)
		}
		cp.CapacityProviders = nil
		s.MustAWS(&cp, "ecs", "describe-capacity-providers", "--capacity-providers", "FARGATE_SPOT", "mine")
		if len(cp.CapacityProviders) != 1 || cp.CapacityProviders[0].Name != "FARGATE_SPOT" || len(cp.Failures) != 1 || cp.Failures[0].Reason != "MISSING" {
			t.Fatalf("describe by name: %+v", cp)
		}
		var page struct {
			CapacityProviders []struct{ Name string }
			NextToken         string
		}
		s.MustAWS(&page, "ecs", "describe-capacity-providers", "--max-results", "1")
		if len(page.CapacityProviders) != 1 || page.NextToken == "" {
			t.Fatalf("first page: %+v", page)
		}
		tok := page.NextToken
		page.CapacityProviders, page.NextToken = nil, ""
		s.MustAWS(&page, "ecs", "describe-capacity-providers", "--max-results", "1", "--next-token", tok)
		if len(page.CapacityProviders) != 1 || page.CapacityProviders[0].Name != "FARGATE_SPOT" || page.NextToken != "" {
			t.Fatalf("second page: %+v", page)
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, bad := range []string{"has space", "dots.not.allowed", strings.Repeat("a", 256), "slash/name"} {
			code, msg := s.AWSError("ecs", "create-cluster", "--cluster-name", bad)
			if code != "InvalidParameterException" || !strings.Contains(msg, "255 letters") {
				t.Errorf("name %q: %s %s", bad, code, msg)
			}
		}
		var out struct{ Cluster ecsCluster }
		s.MustAWS(&out, "ecs", "create-cluster", "--cluster-name", strings.Repeat("A_b-9", 51))
		if out.Cluster.Status != "ACTIVE" {
			t.Errorf("255-character name: %+v", out)
		}
		s.MustAWS(nil, "ecs", "delete-cluster", "--cluster", strings.Repeat("A_b-9", 51))
	})

	t.Run("list pagination", func(t *testing.T) {
		var all struct{ ClusterArns []string }
		s.MustAWS(&all, "ecs", "list-clusters")
		if len(all.ClusterArns) != 3 { // default, spot, web
			t.Fatalf("list-clusters: %v", all.ClusterArns)
		}
		var got []string
		tok := ""
		for i := 0; i < 5; i++ {
			args := []string{"ecs", "list-clusters", "--no-paginate", "--max-results", "2"}
			if tok != "" {
				args = append(args, "--next-token", tok)
			}
			var p struct {
				ClusterArns []string
				NextToken   string
			}
			s.MustAWS(&p, args...)
			got = append(got, p.ClusterArns...)
			if tok = p.NextToken; tok == "" {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(all.ClusterArns, ",") {
			t.Fatalf("paged %v, all %v", got, all.ClusterArns)
		}
		if code, _ := s.AWSError("ecs", "list-clusters", "--no-paginate", "--max-results", "101"); code != "InvalidParameterException" {
			t.Errorf("max-results 101: %s", code)
		}
	})

	t.Run("delete", func(t *testing.T) {
		var out struct{ Cluster ecsCluster }
		s.MustAWS(&out, "ecs", "delete-cluster", "--cluster", "spot")
		if out.Cluster.Status != "INACTIVE" || out.Cluster.ClusterArn != arn("spot") {
			t.Fatalf("delete-cluster: %+v", out)
		}
		var d struct {
			Clusters []ecsCluster
			Failures []ecsFailure
		}
		s.MustAWS(&d, "ecs", "describe-clusters", "--clusters", "spot")
		if len(d.Clusters) != 1 || d.Clusters[0].Status != "INACTIVE" {
			t.Fatalf("describe deleted: %+v", d)
		}
		var l struct{ ClusterArns []string }
		s.MustAWS(&l, "ecs", "list-clusters")
		for _, a := range l.ClusterArns {
			if a == arn("spot") {
				t.Fatalf("deleted cluster still listed: %v", l)
			}
		}
		for _, args := range [][]string{
			{"delete-cluster", "--cluster", "spot"},
			{"delete-cluster", "--cluster", "never"},
			{"update-cluster-settings", "--cluster", "spot", "--settings", "name=containerInsights,value=enabled"},
			{"list-tags-for-resource", "--resource-arn", arn("spot")},
		} {
			code, msg := s.AWSError(append([]string{"ecs"}, args...)...)
			if code != "ClusterNotFoundException" || !strings.Contains(msg, "Cluster not found.") {
				t.Errorf("%v: %s %s", args, code, msg)
			}
		}
		// The name can be used again, for a new cluster without the old tags.
		var re struct{ Cluster ecsCluster }
		s.MustAWS(&re, "ecs", "create-cluster", "--cluster-name", "spot")
		if re.Cluster.Status != "ACTIVE" || len(re.Cluster.CapacityProviders) != 0 {
			t.Fatalf("recreated: %+v", re)
		}
	})

	t.Run("survives restart", func(t *testing.T) {
		s.Restart()
		var d struct{ Clusters []ecsCluster }
		s.MustAWS(&d, "ecs", "describe-clusters", "--clusters", "web", "--include", "TAGS", "SETTINGS")
		if len(d.Clusters) != 1 || len(d.Clusters[0].Tags) != 2 || d.Clusters[0].Settings[0].Value != "enhanced" {
			t.Fatalf("after restart: %+v", d)
		}
	})

	t.Run("boto3 shapes", func(t *testing.T) {
		out, err := s.Python(`
import boto3, json
ecs = boto3.client("ecs")
r = ecs.describe_clusters(clusters=["web", "missing"], include=["TAGS", "SETTINGS", "STATISTICS", "CONFIGURATIONS", "ATTACHMENTS"])
c = r["clusters"][0]
print(json.dumps({
  "arn": c["clusterArn"], "status": c["status"],
  "counts": [c["runningTasksCount"], c["pendingTasksCount"], c["activeServicesCount"], c["registeredContainerInstancesCount"]],
  "tags": c["tags"], "settings": c["settings"], "stats": len(c["statistics"]),
  "logging": c["configuration"]["executeCommandConfiguration"]["logging"],
  "failures": r["failures"],
}))
`)
		if err != nil {
			t.Fatalf("boto3: %v\n%s", err, out)
		}
		var got struct {
			Arn, Status string
			Counts      []int
			Tags        []map[string]string
			Settings    []map[string]string
			Stats       int
			Logging     string
			Failures    []map[string]string
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got.Arn != arn("web") || got.Status != "ACTIVE" || len(got.Counts) != 4 || len(got.Tags) != 2 || got.Tags[0]["key"] != "team" ||
			got.Settings[0]["name"] != "containerInsights" || got.Stats == 0 || got.Logging != "DEFAULT" ||
			len(got.Failures) != 1 || got.Failures[0]["arn"] != arn("missing") || got.Failures[0]["reason"] != "MISSING" {
			t.Fatalf("boto3 describe_clusters: %s", out)
		}
	})
}

// TestClusterTaskCounts runs a real task to check that DescribeClusters
// counts it and DeleteCluster refuses a cluster while it runs.
func TestClusterTaskCounts(t *testing.T) {
	s := testenv.Start(t)
	load := exec.Command(testenv.Binary(t), "image", "load", "--data-dir", s.DataDir, "--containerd", "/nonexistent/containerd.sock", testimage.Busybox(t))
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("gantry image load: %v\n%s", err, out)
	}
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "busy")
	s.MustAWS(nil, "ecs", "register-task-definition", "--cli-input-json", `{"family":"sleeper","networkMode":"awsvpc",
		"requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sleep","300"]}]}`)
	var subnets struct{ Subnets []ec2Subnet }
	s.MustAWS(&subnets, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	var run struct{ Tasks []struct{ TaskArn string } }
	s.MustAWS(&run, "ecs", "run-task", "--cluster", "busy", "--task-definition", "sleeper",
		"--network-configuration", "awsvpcConfiguration={subnets=["+subnets.Subnets[0].SubnetId+"]}")
	if len(run.Tasks) != 1 {
		t.Fatalf("run-task: %+v", run)
	}
	counts := func() (running, pending int) {
		var d struct{ Clusters []ecsCluster }
		s.MustAWS(&d, "ecs", "describe-clusters", "--clusters", "busy")
		return *d.Clusters[0].RunningTasksCount, *d.Clusters[0].PendingTasksCount
	}
	if r, p := counts(); r+p != 1 {
		t.Fatalf("just after run-task: running %d pending %d", r, p)
	}
	if code, msg := s.AWSError("ecs", "delete-cluster", "--cluster", "busy"); code != "ClusterContainsTasksException" {
		t.Fatalf("delete-cluster with a task: %s %s", code, msg)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if r, p := counts(); r == 1 && p == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("task never counted as running")
		}
		time.Sleep(time.Second)
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "busy", "--task", run.Tasks[0].TaskArn)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		_, _, code := s.AWS("ecs", "delete-cluster", "--cluster", "busy")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cluster could not be deleted after its task stopped")
		}
		time.Sleep(time.Second)
	}
	if r, p := counts(); r != 0 || p != 0 {
		t.Fatalf("deleted cluster counts: running %d pending %d", r, p)
	}
}
