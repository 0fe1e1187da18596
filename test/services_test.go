package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type cliDeployment struct {
	ID                 string `json:"id"`
	Status             string `json:"status"`
	TaskDefinition     string `json:"taskDefinition"`
	DesiredCount       int    `json:"desiredCount"`
	RunningCount       int    `json:"runningCount"`
	PendingCount       int    `json:"pendingCount"`
	FailedTasks        int    `json:"failedTasks"`
	RolloutState       string `json:"rolloutState"`
	RolloutStateReason string `json:"rolloutStateReason"`
}

type cliEvent struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

type cliService struct {
	ServiceArn              string          `json:"serviceArn"`
	ServiceName             string          `json:"serviceName"`
	Status                  string          `json:"status"`
	DesiredCount            int             `json:"desiredCount"`
	RunningCount            int             `json:"runningCount"`
	PendingCount            int             `json:"pendingCount"`
	TaskDefinition          string          `json:"taskDefinition"`
	LaunchType              string          `json:"launchType"`
	Deployments             []cliDeployment `json:"deployments"`
	DeploymentConfiguration struct {
		MinimumHealthyPercent    int `json:"minimumHealthyPercent"`
		MaximumPercent           int `json:"maximumPercent"`
		DeploymentCircuitBreaker struct {
			Enable   bool `json:"enable"`
			Rollback bool `json:"rollback"`
		} `json:"deploymentCircuitBreaker"`
	} `json:"deploymentConfiguration"`
	Events []cliEvent `json:"events"`
	Tags   []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"tags"`
}

func (s cliService) hasEvent(substr string) bool {
	return slices.ContainsFunc(s.Events, func(e cliEvent) bool { return strings.Contains(e.Message, substr) })
}

type cliServices struct {
	Services []cliService `json:"services"`
	Failures []struct {
		Arn    string `json:"arn"`
		Reason string `json:"reason"`
	} `json:"failures"`
}

func describeService(t *testing.T, s *testenv.Server, cluster, name string) cliService {
	t.Helper()
	var out cliServices
	s.MustAWS(&out, "ecs", "describe-services", "--cluster", cluster, "--services", name, "--include", "TAGS")
	if len(out.Services) != 1 {
		t.Fatalf("describe-services %s: %+v", name, out)
	}
	return out.Services[0]
}

// waitService polls (every second, faster than the CLI's waiters) until
// ok holds for the service.
func waitService(t *testing.T, s *testenv.Server, cluster, name, what string, timeout time.Duration, ok func(cliService) bool) cliService {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		svc := describeService(t, s, cluster, name)
		if ok(svc) {
			return svc
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s not %s after %v: %+v", name, what, timeout, svc)
		}
		time.Sleep(time.Second)
	}
}

// stable is what `aws ecs wait services-stable` checks: one deployment and
// as many running tasks as desired.
func stable(svc cliService) bool {
	return len(svc.Deployments) == 1 && svc.RunningCount == svc.DesiredCount && svc.PendingCount == 0
}

func serviceTaskArns(t *testing.T, s *testenv.Server, cluster, name, desired string) []string {
	t.Helper()
	var out struct {
		TaskArns []string `json:"taskArns"`
	}
	s.MustAWS(&out, "ecs", "list-tasks", "--cluster", cluster, "--service-name", name, "--desired-status", desired)
	return out.TaskArns
}

// forceDeleteServices deletes a cluster's services at the end of a test, so
// the scheduler does not replace the tasks the test cleanup stops.
func forceDeleteServices(t *testing.T, s *testenv.Server, cluster string) {
	t.Cleanup(func() {
		var out struct {
			ServiceArns []string `json:"serviceArns"`
		}
		if _, _, code := s.AWS("ecs", "describe-clusters", "--clusters", cluster); code != 0 {
			return
		}
		stdout, _, code := s.AWS("ecs", "list-services", "--cluster", cluster)
		if code != 0 || strings.Contains(stdout, `"serviceArns": []`) {
			return
		}
		s.MustAWS(&out, "ecs", "list-services", "--cluster", cluster)
		for _, arn := range out.ServiceArns {
			s.AWS("ecs", "delete-service", "--cluster", cluster, "--service", arn, "--force")
		}
	})
}

// startServiceServer starts a test server on a free registry port too, so
// it can run beside other test servers (drop the flag once testenv picks
// one itself).
func startServiceServer(t *testing.T) *testenv.Server {
	return testenv.Start(t)
}

const idleCommand = `["sh","-c","trap 'exit 0' TERM; while true; do sleep 1; done"]`

func registerIdle(t *testing.T, s *testenv.Server, family, command, version string) {
	t.Helper()
	registerJSON(t, s, fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":%s,"stopTimeout":2,
		"environment":[{"name":"VERSION","value":%q}]}]}`, family, command, version))
}

// TestServiceLifecycle runs one service of 2 through its life: steady
// state, replacement of a stopped task, a rolling deployment interrupted by
// a server restart, a broken revision rolled back by the circuit breaker,
// and deletion.
func TestServiceLifecycle(t *testing.T) {
	s := startServiceServer(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "svc")
	forceDeleteServices(t, s, "svc")
	registerIdle(t, s, "idle", idleCommand, "1")
	registerIdle(t, s, "idle", idleCommand, "2")
	registerIdle(t, s, "idle", `["sh","-c","exit 1"]`, "broken")
	net := awsvpc(defaultSubnet(t, s))

	var created struct{ Service cliService }
	s.MustAWS(&created, "ecs", "create-service", "--cluster", "svc", "--service-name", "web", "--task-definition", "idle:1",
		"--desired-count", "2", "--launch-type", "FARGATE", "--network-configuration", net,
		"--deployment-configuration", "minimumHealthyPercent=50,maximumPercent=200,deploymentCircuitBreaker={enable=true,rollback=true}",
		"--propagate-tags", "SERVICE", "--tags", "key=team,value=web")
	c := created.Service
	if c.Status != "ACTIVE" || c.DesiredCount != 2 || c.LaunchType != "FARGATE" || !strings.HasSuffix(c.ServiceArn, ":service/svc/web") ||
		len(c.Deployments) != 1 || !strings.HasPrefix(c.Deployments[0].ID, "ecs-svc/") || c.Deployments[0].Status != "PRIMARY" ||
		c.Deployments[0].RolloutState != "IN_PROGRESS" || c.DeploymentConfiguration.MinimumHealthyPercent != 50 ||
		!c.DeploymentConfiguration.DeploymentCircuitBreaker.Rollback || len(c.Tags) != 1 {
		t.Fatalf("create-service answered %+v", c)
	}
	first := c.Deployments[0].ID

	svc := waitService(t, s, "svc", "web", "steady", 90*time.Second, func(v cliService) bool {
		return stable(v) && v.RunningCount == 2 && v.Deployments[0].RolloutState == "COMPLETED"
	})
	if d := svc.Deployments[0]; d.RolloutState != "COMPLETED" || d.ID != first || d.RunningCount != 2 {
		t.Errorf("first deployment: %+v", d)
	}
	if !svc.hasEvent("(service web) has reached a steady state.") || !svc.hasEvent("(service web) has started 2 tasks: (task ") {
		t.Errorf("events: %+v", svc.Events)
	}
	s.MustAWS(nil, "ecs", "wait", "services-stable", "--cluster", "svc", "--services", "web")

	arns := serviceTaskArns(t, s, "svc", "web", "RUNNING")
	if len(arns) != 2 {
		t.Fatalf("list-tasks --service-name web: %v", arns)
	}
	task := describeTask(t, s, "svc", arns[0])
	if task.Group != "service:web" || task.StartedBy != first || len(task.Tags) != 1 || task.Tags[0].Key != "team" {
		t.Errorf("service task: group %q startedBy %q tags %+v", task.Group, task.StartedBy, task.Tags)
	}

	// The cluster knows it has a service and refuses to go while it does.
	var clusters struct {
		Clusters []struct {
			ActiveServicesCount int `json:"activeServicesCount"`
		} `json:"clusters"`
	}
	s.MustAWS(&clusters, "ecs", "describe-clusters", "--clusters", "svc")
	if clusters.Clusters[0].ActiveServicesCount != 1 {
		t.Errorf("activeServicesCount = %d", clusters.Clusters[0].ActiveServicesCount)
	}
	if code, _ := s.AWSError("ecs", "delete-cluster", "--cluster", "svc"); code != "ClusterContainsServicesException" {
		t.Errorf("delete-cluster with a service: %s", code)
	}

	// A task stopped behind the scheduler's back is replaced.
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "svc", "--task", arns[0])
	waitService(t, s, "svc", "web", "replaced", 60*time.Second, func(v cliService) bool {
		now := serviceTaskArns(t, s, "svc", "web", "RUNNING")
		return stable(v) && len(now) == 2 && !slices.Contains(now, arns[0])
	})
	if st := describeTask(t, s, "svc", arns[0]); st.StopCode != "UserInitiated" {
		t.Errorf("stopped task: %s", st.StopCode)
	}
	oldTasks := serviceTaskArns(t, s, "svc", "web", "RUNNING")

	// A new revision rolls out; the server restarts half-way through and the
	// deployment still completes.
	var updated struct{ Service cliService }
	s.MustAWS(&updated, "ecs", "update-service", "--cluster", "svc", "--service", "web", "--task-definition", "idle:2")
	if len(updated.Service.Deployments) != 2 || updated.Service.Deployments[0].Status != "PRIMARY" || updated.Service.Deployments[1].Status != "ACTIVE" {
		t.Fatalf("update-service deployments: %+v", updated.Service.Deployments)
	}
	second := updated.Service.Deployments[0].ID
	waitService(t, s, "svc", "web", "rolling", 30*time.Second, func(v cliService) bool { return v.Deployments[0].RunningCount+v.Deployments[0].PendingCount > 0 })
	s.Restart()
	svc = waitService(t, s, "svc", "web", "deployed", 90*time.Second, func(v cliService) bool {
		return stable(v) && v.Deployments[0].ID == second && v.Deployments[0].RolloutState == "COMPLETED"
	})
	if !strings.HasSuffix(svc.TaskDefinition, ":task-definition/idle:2") || svc.Deployments[0].RolloutState != "COMPLETED" || !svc.hasEvent("(deployment "+second+") deployment completed.") {
		t.Errorf("after rollout: %+v", svc)
	}
	for _, arn := range oldTasks {
		st := waitStatus(t, s, "svc", arn, "STOPPED", 30*time.Second)
		if st.StopCode != "ServiceSchedulerInitiated" || !strings.Contains(st.StoppedReason, "Scaling activity initiated by (deployment ") {
			t.Errorf("replaced task %s: %s %q", arn, st.StopCode, st.StoppedReason)
		}
	}

	// A revision whose tasks exit at once trips the circuit breaker, which
	// rolls back to the last completed deployment.
	s.MustAWS(&updated, "ecs", "update-service", "--cluster", "svc", "--service", "web", "--task-definition", "idle:3")
	broken := updated.Service.Deployments[0].ID
	svc = waitService(t, s, "svc", "web", "rolled back", 120*time.Second, func(v cliService) bool {
		return stable(v) && v.Deployments[0].ID != broken && v.RunningCount == 2 && v.Deployments[0].RolloutState == "COMPLETED"
	})
	if !svc.hasEvent("(deployment "+broken+") deployment failed: tasks failed to start.") ||
		!strings.HasSuffix(svc.TaskDefinition, "idle:2") ||
		!svc.hasEvent("(deployment "+broken+") rolling back to deployment "+second+".") {
		t.Errorf("after circuit breaker: taskDefinition %s deployments %+v events %+v", svc.TaskDefinition, svc.Deployments, svc.Events)
	}

	// Deleting: refused while scaled up, then --force drains everything.
	if code, msg := s.AWSError("ecs", "delete-service", "--cluster", "svc", "--service", "web"); code != "InvalidParameterException" || !strings.Contains(msg, "The service cannot be stopped while it is scaled above 0.") {
		t.Errorf("delete-service without force: %s %s", code, msg)
	}
	last := serviceTaskArns(t, s, "svc", "web", "RUNNING")
	var deleted struct{ Service cliService }
	s.MustAWS(&deleted, "ecs", "delete-service", "--cluster", "svc", "--service", "web", "--force")
	if deleted.Service.Status != "DRAINING" || deleted.Service.DesiredCount != 0 {
		t.Errorf("delete-service answered %s desired %d", deleted.Service.Status, deleted.Service.DesiredCount)
	}
	waitService(t, s, "svc", "web", "INACTIVE", 60*time.Second, func(v cliService) bool { return v.Status == "INACTIVE" })
	for _, arn := range last {
		if st := describeTask(t, s, "svc", arn); st.LastStatus != "STOPPED" || st.StopCode != "ServiceSchedulerInitiated" {
			t.Errorf("task of deleted service: %s %s", st.LastStatus, st.StopCode)
		}
	}
	var list struct {
		ServiceArns []string `json:"serviceArns"`
	}
	s.MustAWS(&list, "ecs", "list-services", "--cluster", "svc")
	if len(list.ServiceArns) != 0 {
		t.Errorf("list-services after delete: %v", list.ServiceArns)
	}
	s.MustAWS(nil, "ecs", "delete-cluster", "--cluster", "svc")
}

// TestServiceValidation checks bad input is refused with ECS's errors, and
// the calls that need no running task: listing, paging, describing.
func TestServiceValidation(t *testing.T) {
	// API calls only, no task runs: it costs the machine nothing to run it
	// beside the other parallel tests.
	t.Parallel()
	s := startServiceServer(t)
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "v")
	forceDeleteServices(t, s, "v")
	registerIdle(t, s, "idle", idleCommand, "1")
	net := awsvpc(defaultSubnet(t, s))
	base := []string{"ecs", "create-service", "--cluster", "v", "--task-definition", "idle", "--desired-count", "0"}
	for _, c := range []struct {
		args []string
		code string
		msg  string
	}{
		{[]string{"--service-name", "a"}, "InvalidParameterException", "Network Configuration must be provided"},
		{[]string{"--service-name", "a", "--network-configuration", awsvpc("subnet-0123456789abcdef0")}, "InvalidParameterException", "subnet-0123456789abcdef0"},
		{[]string{"--service-name", "bad name", "--network-configuration", net}, "InvalidParameterException", "serviceName"},
		{[]string{"--service-name", "a", "--network-configuration", net, "--deployment-configuration", "maximumPercent=300"}, "InvalidParameterException", "maximumPercent"},
		{[]string{"--service-name", "a", "--network-configuration", net, "--deployment-configuration", "minimumHealthyPercent=101"}, "InvalidParameterException", "minimumHealthyPercent"},
		{[]string{"--service-name", "a", "--network-configuration", net, "--launch-type", "EC2"}, "InvalidParameterException", "launchType"},
		{[]string{"--service-name", "a", "--network-configuration", net, "--cluster", "nope"}, "ClusterNotFoundException", ""},
		{[]string{"--service-name", "a", "--network-configuration", net, "--task-definition", "missing:1"}, "ClientException", "TaskDefinition not found"},
		{[]string{"--service-name", "a", "--network-configuration", net, "--load-balancers", "targetGroupArn=arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1,containerName=other,containerPort=80"}, "InvalidParameterException", "other"},
	} {
		code, msg := s.AWSError(append(slices.Clone(base), c.args...)...)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("create-service %v: %s %s; want %s %q", c.args, code, msg, c.code, c.msg)
		}
	}
	for _, name := range []string{"s1", "s2", "s3"} {
		s.MustAWS(nil, append(slices.Clone(base), "--service-name", name, "--network-configuration", net)...)
	}
	if code, msg := s.AWSError(append(slices.Clone(base), "--service-name", "s1", "--network-configuration", net)...); code != "InvalidParameterException" || !strings.Contains(msg, "not idempotent") {
		t.Errorf("duplicate create-service: %s %s", code, msg)
	}
	// Paging through the CLI's own paginator, and by hand.
	var page struct {
		ServiceArns []string `json:"serviceArns"`
		NextToken   string   `json:"nextToken"`
	}
	s.MustAWS(&page, "ecs", "list-services", "--cluster", "v", "--launch-type", "FARGATE", "--no-paginate", "--max-results", "2")
	if len(page.ServiceArns) != 2 || page.NextToken == "" {
		t.Fatalf("first page: %+v", page)
	}
	tok := page.NextToken
	page.NextToken = ""
	s.MustAWS(&page, "ecs", "list-services", "--cluster", "v", "--no-paginate", "--max-results", "2", "--next-token", tok)
	if len(page.ServiceArns) != 1 || page.NextToken != "" || !strings.HasSuffix(page.ServiceArns[0], "service/v/s3") {
		t.Errorf("second page: %+v", page)
	}
	s.MustAWS(&page, "ecs", "list-services", "--cluster", "v", "--launch-type", "EC2")
	if len(page.ServiceArns) != 0 {
		t.Errorf("EC2 services: %v", page.ServiceArns)
	}
	s.MustAWS(&page, "ecs", "list-services-by-namespace", "--namespace", "ns")
	if len(page.ServiceArns) != 0 {
		t.Errorf("list-services-by-namespace: %v", page.ServiceArns)
	}

	var out cliServices
	s.MustAWS(&out, "ecs", "describe-services", "--cluster", "v", "--services", "s1", "nope")
	if len(out.Services) != 1 || len(out.Failures) != 1 || out.Failures[0].Reason != "MISSING" || !strings.HasSuffix(out.Failures[0].Arn, ":service/v/nope") {
		t.Errorf("describe-services with a missing one: %+v", out)
	}
	// Desired 0 is steady at once.
	waitService(t, s, "v", "s1", "steady", 20*time.Second, func(v cliService) bool {
		return stable(v) && v.Deployments[0].RolloutState == "COMPLETED" && v.hasEvent("has reached a steady state.")
	})

	if code, _ := s.AWSError("ecs", "update-service", "--cluster", "v", "--service", "nope", "--desired-count", "1"); code != "ServiceNotFoundException" {
		t.Errorf("update-service of a missing service: %s", code)
	}
	if code, _ := s.AWSError("ecs", "update-service", "--cluster", "v", "--service", "s1", "--desired-count", "-1"); code != "InvalidParameterException" {
		t.Errorf("negative desired count: %s", code)
	}
	if code, _ := s.AWSError("ecs", "delete-service", "--cluster", "v", "--service", "nope"); code != "ServiceNotFoundException" {
		t.Errorf("delete-service of a missing service: %s", code)
	}
	s.MustAWS(nil, "ecs", "delete-service", "--cluster", "v", "--service", "s2")
	if code, _ := s.AWSError("ecs", "update-service", "--cluster", "v", "--service", "s2", "--desired-count", "1"); code != "ServiceNotActiveException" && code != "ServiceNotFoundException" {
		t.Errorf("update-service of a deleted service: %s", code)
	}
	// boto3 reads the same shapes.
	got, err := s.Python(`
import boto3
ecs = boto3.client("ecs")
svc = ecs.describe_services(cluster="v", services=["s1"])["services"][0]
print(svc["status"], svc["deploymentConfiguration"]["maximumPercent"], svc["deployments"][0]["id"][:8], svc["schedulingStrategy"])
`)
	if err != nil || strings.TrimSpace(got) != "ACTIVE 200 ecs-svc/ REPLICA" {
		t.Errorf("boto3: %q %v", got, err)
	}
}
