package test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestLBStopTaskReplacement stops a service's tasks one at a time with
// `stop-task` while requests keep coming through the load balancer: the
// scheduler starts a replacement for each, and no request may fail or
// time out, because a stopped task's target drains before its containers
// get SIGTERM. Every answer is counted, by status, with client timeouts
// apart. GANTRY_LB_REPLACE_ROUNDS (default 2) and GANTRY_LB_REPLACE_DEPLOYS
// (forced deployments after them, default 0: TestLBRollingDeployment has
// one) make it a soak.
func TestLBStopTaskReplacement(t *testing.T) {
	rounds, deploys := envInt("GANTRY_LB_REPLACE_ROUNDS", 2), envInt("GANTRY_LB_REPLACE_DEPLOYS", 0)
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "repl")
	forceDeleteServices(t, s, "repl")
	lb := newLB(t, s, "repl", "--health-check-path", "/health")
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", lb.tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=2")
	versionedWeb(t, s, "repl", "v1", "")
	webBehindLB(t, s, lb, "repl", "repl")

	ld := startLoad("http://"+lb.dns+"/", 4, 5*time.Millisecond)
	defer ld.end()
	time.Sleep(time.Second)
	for i := 0; i < rounds; i++ {
		running := serviceTaskArns(t, s, "repl", "web", "RUNNING")
		if len(running) != 3 {
			t.Fatalf("round %d: running tasks %v", i, running)
		}
		victim := running[i%len(running)]
		s.MustAWS(nil, "ecs", "stop-task", "--cluster", "repl", "--task", victim, "--reason", "replacement test")
		waitStatus(t, s, "repl", victim, "STOPPED", 90*time.Second)
		waitService(t, s, "repl", "web", "back to 3 running", 90*time.Second, func(v cliService) bool {
			return v.RunningCount == 3 && v.PendingCount == 0
		})
		waitTargets(t, s, lb.tg, "3 healthy again", 90*time.Second, threeHealthy)
		t.Logf("round %d: %s", i, ld.summary())
	}
	for i := 0; i < deploys; i++ {
		s.MustAWS(nil, "ecs", "update-service", "--cluster", "repl", "--service", "web", "--force-new-deployment")
		waitService(t, s, "repl", "web", "deployed", 3*time.Minute, func(v cliService) bool {
			return stable(v) && v.Deployments[0].RolloutState == "COMPLETED" && countState(targetStates(t, s, lb.tg), "healthy") == 3 &&
				len(targetStates(t, s, lb.tg)) == 3
		})
		t.Logf("deployment %d: %s", i, ld.summary())
	}
	time.Sleep(time.Second)
	ld.end()
	t.Logf("requests: %s", ld.summary())
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d requests failed while tasks were replaced: %s (first: %v)", n, ld.summary(), ld.firstErr.Load())
	}
	if n := ld.count("v1"); n < 100 {
		t.Errorf("only %d requests answered", n)
	}
	// The stopped tasks went through DEACTIVATING: each was stopped only
	// once its target had drained for the 2 s deregistration delay.
	for _, arn := range serviceTaskArns(t, s, "repl", "web", "STOPPED") {
		task := describeTask(t, s, "repl", arn)
		if task.StoppedAt == nil || task.StoppingAt == nil {
			continue
		}
		if d := anyTime(t, task.StoppedAt).Sub(anyTime(t, task.StoppingAt)); d < 2*time.Second {
			t.Errorf("task %s (%s) stopped %v after stoppingAt, before its target drained", arn, task.StoppedReason, d)
		}
		if strings.Contains(task.StoppedReason, "replacement test") && task.StopCode != "UserInitiated" {
			t.Errorf("task %s: stopCode %q", arn, task.StopCode)
		}
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n >= 0 {
		return n
	}
	return def
}
