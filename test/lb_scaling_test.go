package test

import (
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestLBRequestCountScaling scales a service out on ALBRequestCountPerTarget:
// the load balancer's real request counts, published as the
// AWS/ApplicationELB metrics, drive a target-tracking policy whose
// ResourceLabel names the load balancer and target group.
func TestLBRequestCountScaling(t *testing.T) {
	// One alarm datapoint per 5 s instead of a minute: the target value is
	// requests per target per 5 s.
	t.Setenv("GANTRY_AUTOSCALING_PERIOD", "5s")
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "req")
	forceDeleteServices(t, s, "req")
	lb := newLB(t, s, "req")
	s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", lb.tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0")
	versionedWeb(t, s, "req", "v1", "")
	s.MustAWS(nil, "ecs", "create-service", "--cluster", "req", "--service-name", "web", "--task-definition", "req",
		"--desired-count", "1", "--launch-type", "FARGATE", "--network-configuration", awsvpc(lb.sn1),
		"--load-balancers", "targetGroupArn="+lb.tg+",containerName=web,containerPort=80")
	waitTargets(t, s, lb.tg, "healthy", 60*time.Second, func(m map[string]string) bool { return countState(m, "healthy") == 1 })

	target := []string{"--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount", "--resource-id", "service/req/web"}
	s.MustAWS(nil, append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "1", "--max-capacity", "3"}, target...)...)
	lbDim := lb.lbARN[strings.Index(lb.lbARN, ":loadbalancer/")+len(":loadbalancer/"):]
	tgDim := lb.tg[strings.LastIndex(lb.tg, ":")+1:]
	label := lbDim + "/" + tgDim
	policy := func(label string) []string {
		return append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "req", "--policy-type", "TargetTrackingScaling",
			"--target-tracking-scaling-policy-configuration", `{"TargetValue":20,"PredefinedMetricSpecification":{"PredefinedMetricType":"ALBRequestCountPerTarget","ResourceLabel":"` + label + `"},"ScaleOutCooldown":5,"ScaleInCooldown":600}`}, target...)
	}
	for _, bad := range []string{"targetgroup/x/1", "app/req/0123/targetgroup/nope/4567", strings.Replace(label, "app/req/", "app/other/", 1)} {
		if code, msg := s.AWSError(policy(bad)...); code != "ValidationException" || !strings.Contains(msg, "ResourceLabel") {
			t.Errorf("ResourceLabel %q: %s %s", bad, code, msg)
		}
	}
	s.MustAWS(nil, policy(label)...)

	// Up to 100 requests/s against a target value of 20 per target per 5 s,
	// so a host where the sandboxed httpd answers slowly still scales out:
	// on one that starts processes slowly these two clients stayed under
	// the earlier target of 100 per 5 s.
	ld := startLoad("http://"+lb.dns+"/", 2, 20*time.Millisecond)
	defer func() {
		select {
		case <-ld.stop:
		default:
			ld.end()
		}
	}()
	svc := waitService(t, s, "req", "web", "scaled out", 120*time.Second, func(v cliService) bool { return v.DesiredCount >= 2 })
	if svc.DesiredCount > 3 {
		t.Errorf("desired count %d beyond max 3", svc.DesiredCount)
	}
	// The new tasks take traffic: the group has as many healthy targets.
	waitTargets(t, s, lb.tg, "scaled-out targets healthy", 90*time.Second, func(m map[string]string) bool {
		return countState(m, "healthy") == svc.DesiredCount
	})
	ld.end()
	if n := ld.failed.Load(); n != 0 {
		t.Errorf("%d requests failed while scaling out (first: %v)", n, ld.firstErr.Load())
	}

	var acts struct {
		ScalingActivities []aasActivity `json:"ScalingActivities"`
	}
	s.MustAWS(&acts, "application-autoscaling", "describe-scaling-activities", "--service-namespace", "ecs", "--resource-id", "service/req/web")
	if len(acts.ScalingActivities) == 0 || !strings.Contains(acts.ScalingActivities[0].Cause, "triggered policy req") {
		t.Errorf("scaling activities: %+v", acts.ScalingActivities)
	}

	// The counts are CloudWatch metrics a user can read.
	var stats struct {
		Datapoints []struct {
			Sum float64 `json:"Sum"`
		} `json:"Datapoints"`
	}
	now := time.Now().UTC()
	s.MustAWS(&stats, "cloudwatch", "get-metric-statistics", "--namespace", "AWS/ApplicationELB", "--metric-name", "RequestCount",
		"--dimensions", "Name=LoadBalancer,Value="+lbDim, "--statistics", "Sum", "--period", "60",
		"--start-time", now.Add(-10*time.Minute).Format(time.RFC3339), "--end-time", now.Add(time.Minute).Format(time.RFC3339))
	total := 0.0
	for _, d := range stats.Datapoints {
		total += d.Sum
	}
	served := float64(ld.count("v1"))
	if total < served*0.8 || total > served*1.2+50 {
		t.Errorf("AWS/ApplicationELB RequestCount sums to %v, the test sent %v", total, served)
	}
}
