package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// cliTime reads a timestamp as the CLI prints it (epoch seconds or ISO 8601).
func anyTime(t *testing.T, v any) time.Time {
	t.Helper()
	switch x := v.(type) {
	case float64:
		return time.Unix(0, int64(x*1e9))
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return ts
		}
	}
	t.Fatalf("not a timestamp: %#v", v)
	return time.Time{}
}

// TestLBHealthReplacesTask: a task whose target fails the target group's
// health check (its server answers 404 on the health check path) is
// stopped by the service scheduler once healthCheckGracePeriodSeconds
// have passed since it started, never before, with the event and stop
// reason ECS gives, and a new task takes its place.
func TestLBHealthReplacesTask(t *testing.T) {
	// Light on CPU (one task, health checks), and its own server: it runs
	// beside the other parallel tests rather than after them.
	t.Parallel()
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sick")
	forceDeleteServices(t, s, "sick")
	lb := newLB(t, s, "sick", "--health-check-path", "/health")
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", lb.tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0")

	// The health page goes away 12 s after the task starts: it passes its
	// first checks, then fails them (404).
	versionedWeb(t, s, "sick", "v1", "(sleep 12; rm /srv/health) &")
	// The target turns unhealthy about 20 s after the task starts (two
	// failed checks 5 s apart): inside the grace period, which must hold
	// the stop back until it is over.
	const grace = 25
	s.MustAWS(nil, "ecs", "create-service", "--cluster", "sick", "--service-name", "web", "--task-definition", "sick",
		"--desired-count", "1", "--launch-type", "FARGATE", "--network-configuration", awsvpc(lb.sn1),
		"--health-check-grace-period-seconds", fmt.Sprint(grace),
		"--load-balancers", "targetGroupArn="+lb.tg+",containerName=web,containerPort=80")
	waitTargets(t, s, lb.tg, "healthy", 60*time.Second, func(m map[string]string) bool { return countState(m, "healthy") == 1 })
	first := serviceTaskArns(t, s, "sick", "web", "RUNNING")
	if len(first) != 1 {
		t.Fatalf("running tasks: %v", first)
	}
	waitTargets(t, s, lb.tg, "unhealthy", 60*time.Second, func(m map[string]string) bool {
		for _, v := range m {
			if v == "unhealthy/Target.ResponseCodeMismatch" {
				return true
			}
		}
		return false
	})

	svc := waitService(t, s, "sick", "web", "replacing the unhealthy task", 90*time.Second, func(svc cliService) bool {
		return svc.hasEvent("is unhealthy in target-group sick due to (reason Health checks failed")
	})
	old := describeTask(t, s, "sick", first[0])
	if old.DesiredStatus != "STOPPED" || old.StopCode != "ServiceSchedulerInitiated" ||
		old.StoppedReason != "Task failed ELB health checks in (target-group "+lb.tg+")" {
		t.Errorf("unhealthy task: desired %s, stopCode %q, reason %q", old.DesiredStatus, old.StopCode, old.StoppedReason)
	}
	if old.StoppingAt == nil {
		t.Fatalf("unhealthy task has no stoppingAt: %+v", old)
	}
	if d := anyTime(t, old.StoppingAt).Sub(anyTime(t, old.StartedAt)); d < grace*time.Second {
		t.Errorf("unhealthy task stopped %v after it started, within the %ds grace period", d, grace)
	}
	want := "(task " + first[0][strings.LastIndex(first[0], "/")+1:] + ") (port 80) is unhealthy in target-group sick due to (reason Health checks failed with these codes: [404])."
	if !svc.hasEvent(want) {
		t.Errorf("no event %q: %+v", want, svc.Events)
	}

	// A replacement runs and passes its health checks.
	waitService(t, s, "sick", "web", "running a replacement", 60*time.Second, func(svc cliService) bool {
		arns := serviceTaskArns(t, s, "sick", "web", "RUNNING")
		return len(arns) == 1 && arns[0] != first[0] && svc.RunningCount == 1
	})
	waitTargets(t, s, lb.tg, "replacement healthy", 60*time.Second, func(m map[string]string) bool {
		_, oldThere := m[taskIPOf(t, s, "sick", first[0])+":80"]
		return countState(m, "healthy") == 1 && !oldThere
	})
}

func taskIPOf(t *testing.T, s *testenv.Server, cluster, arn string) string {
	t.Helper()
	task := describeTask(t, s, cluster, arn)
	for _, a := range task.Attachments {
		for _, d := range a.Details {
			if d.Name == "privateIPv4Address" {
				return d.Value
			}
		}
	}
	return ""
}
