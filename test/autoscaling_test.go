package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type aasActivity struct {
	Description   string `json:"Description"`
	Cause         string `json:"Cause"`
	StatusCode    string `json:"StatusCode"`
	StatusMessage string `json:"StatusMessage"`
	ResourceID    string `json:"ResourceId"`
}

// TestAutoScalingCPU runs a service of one 0.25-vCPU task burning CPU with
// a target-tracking policy at 50% CPU: CloudWatch shows the service (and
// cluster) near 100% of the reserved CPU, measured from the task's cgroup,
// and Application Auto Scaling scales the service out and records it. A
// restart keeps the datapoints; a narrower capacity range pulls the count
// back in.
func TestAutoScalingCPU(t *testing.T) {
	// One alarm datapoint per 10 s instead of a minute: 3 high ones scale out.
	t.Setenv("GANTRY_AUTOSCALING_PERIOD", "10s")
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "as")
	forceDeleteServices(t, s, "as")
	registerJSON(t, s, `{"family":"burn","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","trap 'exit 0' TERM; while :; do :; done"],"stopTimeout":2}]}`)

	// API errors before there is anything to scale.
	for _, c := range []struct {
		args []string
		code string
	}{
		{[]string{"application-autoscaling", "register-scalable-target", "--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount",
			"--resource-id", "service/as/web", "--min-capacity", "1", "--max-capacity", "3"}, "ValidationException"}, // no such service
		{[]string{"application-autoscaling", "register-scalable-target", "--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount",
			"--resource-id", "web", "--min-capacity", "1", "--max-capacity", "3"}, "ValidationException"},
		{[]string{"application-autoscaling", "deregister-scalable-target", "--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount",
			"--resource-id", "service/as/web"}, "ObjectNotFoundException"},
		{[]string{"application-autoscaling", "put-scaling-policy", "--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount",
			"--resource-id", "service/as/web", "--policy-name", "p", "--policy-type", "TargetTrackingScaling",
			"--target-tracking-scaling-policy-configuration", `{"TargetValue":50,"PredefinedMetricSpecification":{"PredefinedMetricType":"ECSServiceAverageCPUUtilization"}}`}, "ObjectNotFoundException"},
	} {
		if code, msg := s.AWSError(c.args...); code != c.code {
			t.Errorf("aws %s: %q want %q (%s)", strings.Join(c.args, " "), code, c.code, msg)
		}
	}

	s.MustAWS(nil, "ecs", "create-service", "--cluster", "as", "--service-name", "web", "--task-definition", "burn",
		"--desired-count", "1", "--launch-type", "FARGATE", "--network-configuration", awsvpc(defaultSubnet(t, s)))
	target := []string{"--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount", "--resource-id", "service/as/web"}
	s.MustAWS(nil, append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "1", "--max-capacity", "3"}, target...)...)
	if code, _ := s.AWSError(append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "4", "--max-capacity", "3"}, target...)...); code != "ValidationException" {
		t.Errorf("min > max: %q", code)
	}
	var targets struct {
		ScalableTargets []struct {
			ResourceID        string `json:"ResourceId"`
			MinCapacity       int    `json:"MinCapacity"`
			MaxCapacity       int    `json:"MaxCapacity"`
			ScalableTargetARN string `json:"ScalableTargetARN"`
		} `json:"ScalableTargets"`
	}
	s.MustAWS(&targets, "application-autoscaling", "describe-scalable-targets", "--service-namespace", "ecs")
	if len(targets.ScalableTargets) != 1 || targets.ScalableTargets[0].MaxCapacity != 3 || targets.ScalableTargets[0].ResourceID != "service/as/web" ||
		!strings.HasPrefix(targets.ScalableTargets[0].ScalableTargetARN, "arn:aws:application-autoscaling:") {
		t.Fatalf("describe-scalable-targets: %+v", targets)
	}
	if code, _ := s.AWSError(append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "bad", "--policy-type", "TargetTrackingScaling",
		"--target-tracking-scaling-policy-configuration", `{"TargetValue":50,"PredefinedMetricSpecification":{"PredefinedMetricType":"ALBRequestCountPerTarget"}}`}, target...)...); code != "ValidationException" {
		t.Errorf("ALB metric for ECS CPU policy: %q", code)
	}
	var put struct {
		PolicyARN string `json:"PolicyARN"`
		Alarms    []struct {
			AlarmName string `json:"AlarmName"`
		} `json:"Alarms"`
	}
	s.MustAWS(&put, append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "cpu50", "--policy-type", "TargetTrackingScaling",
		"--target-tracking-scaling-policy-configuration", `{"TargetValue":50,"PredefinedMetricSpecification":{"PredefinedMetricType":"ECSServiceAverageCPUUtilization"},
		"ScaleOutCooldown":15,"ScaleInCooldown":15}`}, target...)...)
	if !strings.Contains(put.PolicyARN, ":scalingPolicy:") || !strings.HasSuffix(put.PolicyARN, ":resource/ecs/service/as/web:policyName/cpu50") || len(put.Alarms) != 2 {
		t.Errorf("put-scaling-policy: %+v", put)
	}
	// A second policy, on memory, which a busy loop never trips.
	s.MustAWS(nil, append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "mem90", "--policy-type", "TargetTrackingScaling",
		"--target-tracking-scaling-policy-configuration", `{"TargetValue":90,"PredefinedMetricSpecification":{"PredefinedMetricType":"ECSServiceAverageMemoryUtilization"},"DisableScaleIn":true}`}, target...)...)
	var pols struct {
		ScalingPolicies []struct {
			PolicyName string `json:"PolicyName"`
			Config     struct {
				TargetValue      float64 `json:"TargetValue"`
				ScaleOutCooldown int     `json:"ScaleOutCooldown"`
				ScaleInCooldown  int     `json:"ScaleInCooldown"`
			} `json:"TargetTrackingScalingPolicyConfiguration"`
		} `json:"ScalingPolicies"`
	}
	s.MustAWS(&pols, "application-autoscaling", "describe-scaling-policies", "--service-namespace", "ecs", "--resource-id", "service/as/web")
	if len(pols.ScalingPolicies) != 2 || pols.ScalingPolicies[0].PolicyName != "cpu50" || pols.ScalingPolicies[0].Config.ScaleOutCooldown != 15 ||
		pols.ScalingPolicies[1].Config.ScaleInCooldown != 300 {
		t.Errorf("describe-scaling-policies: %+v", pols)
	}

	// The burner pushes the service past 50% of its CPU: it scales out.
	svc := waitService(t, s, "as", "web", "scaled out", 150*time.Second, func(v cliService) bool { return v.DesiredCount >= 2 })
	if svc.DesiredCount > 3 {
		t.Errorf("desired count %d beyond max 3", svc.DesiredCount)
	}
	var acts struct {
		ScalingActivities []aasActivity `json:"ScalingActivities"`
	}
	s.MustAWS(&acts, "application-autoscaling", "describe-scaling-activities", "--service-namespace", "ecs", "--resource-id", "service/as/web")
	if len(acts.ScalingActivities) == 0 {
		t.Fatalf("no scaling activities")
	}
	last := acts.ScalingActivities[len(acts.ScalingActivities)-1]
	// ceil(1 × CPU / 50): 2, or 3 when a sample reads a hair over 100%.
	if last.StatusCode != "Successful" || (last.Description != "Setting desired count to 2." && last.Description != "Setting desired count to 3.") || !strings.Contains(last.Cause, "AlarmHigh") ||
		!strings.Contains(last.Cause, "triggered policy cpu50") || last.ResourceID != "service/as/web" {
		t.Errorf("first activity: %+v", last)
	}

	// CloudWatch shows what the scaler saw: ~100% of 0.25 vCPU, from cgroups.
	checkCPU := func(when string) {
		t.Helper()
		for _, dims := range [][]string{{"ClusterName=as", "ServiceName=web"}, {"ClusterName=as"}} {
			st := metricStats(t, s, "AWS/ECS", "CPUUtilization", 60, 10*time.Minute, dims...)
			var max, sum, n float64
			for _, d := range st.Datapoints {
				if d.Unit != "Percent" || d.Average == nil || d.Maximum == nil || d.SampleCount == nil {
					t.Fatalf("%s %v: datapoint %+v", when, dims, d)
				}
				max, sum, n = maxf(max, *d.Maximum), sum+*d.Sum, n+*d.SampleCount
			}
			if n == 0 || max < 85 || max > 115 {
				t.Errorf("%s CPUUtilization %v: max %.1f over %v samples, want ~100%%: %+v", when, dims, max, n, st.Datapoints)
			}
			t.Logf("%s CPUUtilization %v: max %.1f%%, average %.1f%% over %v samples", when, dims, max, sum/n, n)
			if avg := sum / n; avg < 60 || avg > 110 {
				t.Errorf("%s CPUUtilization %v: average %.1f", when, dims, avg)
			}
		}
		mem := metricStats(t, s, "AWS/ECS", "MemoryUtilization", 60, 10*time.Minute, "ClusterName=as", "ServiceName=web")
		if len(mem.Datapoints) == 0 || *mem.Datapoints[0].Maximum <= 0 || *mem.Datapoints[0].Maximum > 50 {
			t.Errorf("%s MemoryUtilization: %+v", when, mem.Datapoints)
		}
	}
	checkCPU("running")
	var lm cwMetrics
	s.MustAWS(&lm, "cloudwatch", "list-metrics", "--namespace", "AWS/ECS", "--dimensions", "Name=ServiceName,Value=web")
	if len(lm.Metrics) != 2 {
		t.Errorf("list-metrics ServiceName=web: %+v", lm)
	}
	lm.Metrics = nil
	s.MustAWS(&lm, "cloudwatch", "list-metrics", "--namespace", "AWS/ECS", "--metric-name", "CPUUtilization")
	if len(lm.Metrics) != 2 { // {ClusterName} and {ClusterName, ServiceName}
		t.Errorf("list-metrics CPUUtilization: %+v", lm)
	}
	out, err := s.Python(`
import boto3, datetime, json
cw = boto3.client("cloudwatch")
end = datetime.datetime.now(datetime.timezone.utc)
r = cw.get_metric_data(StartTime=end - datetime.timedelta(minutes=10), EndTime=end, MetricDataQueries=[{"Id": "cpu", "MetricStat": {
    "Metric": {"Namespace": "AWS/ECS", "MetricName": "CPUUtilization", "Dimensions": [{"Name": "ClusterName", "Value": "as"}, {"Name": "ServiceName", "Value": "web"}]},
    "Period": 60, "Stat": "Maximum", "Unit": "Percent"}}])
print(json.dumps(r["MetricDataResults"][0]["Values"]))
`)
	var vals []float64
	if err != nil || json.Unmarshal([]byte(out), &vals) != nil || len(vals) == 0 || vals[0] < 50 {
		t.Errorf("boto3 get_metric_data: %v %s", err, out)
	}

	// Datapoints are durable.
	s.Restart()
	checkCPU("after restart")

	// Narrowing the range to exactly 1 brings the service back to 1 at once,
	// and the CPU policy cannot push it past the new maximum.
	s.MustAWS(nil, append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "1", "--max-capacity", "1"}, target...)...)
	waitService(t, s, "as", "web", "back to 1", 30*time.Second, func(v cliService) bool { return v.DesiredCount == 1 })
	acts.ScalingActivities = nil
	s.MustAWS(&acts, "application-autoscaling", "describe-scaling-activities", "--service-namespace", "ecs")
	if a := acts.ScalingActivities[0]; a.Description != "Setting desired count to 1." || a.StatusCode != "Successful" {
		t.Errorf("newest activity: %+v", a)
	}
	time.Sleep(22 * time.Second)
	if v := describeService(t, s, "as", "web"); v.DesiredCount != 1 {
		t.Errorf("desired count %d with max 1", v.DesiredCount)
	}

	// Deleting a policy and deregistering the target (which takes its policies).
	s.MustAWS(nil, append([]string{"application-autoscaling", "delete-scaling-policy", "--policy-name", "mem90"}, target...)...)
	if code, _ := s.AWSError(append([]string{"application-autoscaling", "delete-scaling-policy", "--policy-name", "mem90"}, target...)...); code != "ObjectNotFoundException" {
		t.Errorf("delete-scaling-policy twice: %q", code)
	}
	// Scheduled actions are stored with the target (their timing is
	// covered by internal/autoscaling's tests) and go with it.
	s.MustAWS(nil, append([]string{"application-autoscaling", "put-scheduled-action", "--scheduled-action-name", "nightly",
		"--schedule", "cron(0 22 ? * MON-FRI *)", "--timezone", "Europe/Paris", "--scalable-target-action", "MinCapacity=0,MaxCapacity=1"}, target...)...)
	if code, _ := s.AWSError(append([]string{"application-autoscaling", "put-scheduled-action", "--scheduled-action-name", "bad",
		"--schedule", "cron(0 22 * * MON *)", "--scalable-target-action", "MinCapacity=0,MaxCapacity=1"}, target...)...); code != "ValidationException" {
		t.Errorf("bad cron: %q", code)
	}
	var sched struct {
		ScheduledActions []struct {
			Name     string `json:"ScheduledActionName"`
			Schedule string `json:"Schedule"`
			Timezone string `json:"Timezone"`
		} `json:"ScheduledActions"`
	}
	s.MustAWS(&sched, "application-autoscaling", "describe-scheduled-actions", "--service-namespace", "ecs")
	if len(sched.ScheduledActions) != 1 || sched.ScheduledActions[0].Schedule != "cron(0 22 ? * MON-FRI *)" || sched.ScheduledActions[0].Timezone != "Europe/Paris" {
		t.Errorf("describe-scheduled-actions: %+v", sched)
	}
	s.MustAWS(nil, append([]string{"application-autoscaling", "deregister-scalable-target"}, target...)...)
	pols.ScalingPolicies, targets.ScalableTargets = nil, nil
	s.MustAWS(&pols, "application-autoscaling", "describe-scaling-policies", "--service-namespace", "ecs")
	s.MustAWS(&targets, "application-autoscaling", "describe-scalable-targets", "--service-namespace", "ecs")
	sched.ScheduledActions = nil
	s.MustAWS(&sched, "application-autoscaling", "describe-scheduled-actions", "--service-namespace", "ecs")
	if len(pols.ScalingPolicies) != 0 || len(targets.ScalableTargets) != 0 || len(sched.ScheduledActions) != 0 {
		t.Errorf("after deregister: policies %+v targets %+v", pols, targets)
	}
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}
