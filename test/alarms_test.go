package test

import (
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type cliAlarms struct {
	MetricAlarms []struct {
		AlarmName    string   `json:"AlarmName"`
		AlarmArn     string   `json:"AlarmArn"`
		StateValue   string   `json:"StateValue"`
		StateReason  string   `json:"StateReason"`
		AlarmActions []string `json:"AlarmActions"`
		Period       int      `json:"Period"`
	} `json:"MetricAlarms"`
}

// TestAlarmStepScaling: a CloudWatch alarm on the service's measured CPU
// goes to ALARM and invokes a StepScaling policy (its ARN in the alarm's
// actions), which adds a task; alarms through the CLI (JSON) and boto3
// over the Query protocol, with CloudWatch's errors.
func TestAlarmStepScaling(t *testing.T) {
	// Its threshold (10% of a busy 0.25 vCPU task) holds however busy the
	// host is, so it may share the machine with the other parallel tests.
	t.Parallel()
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "alarm")
	forceDeleteServices(t, s, "alarm")
	registerJSON(t, s, `{"family":"burn","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","trap 'exit 0' TERM; while :; do :; done"],"stopTimeout":2}]}`)
	s.MustAWS(nil, "ecs", "create-service", "--cluster", "alarm", "--service-name", "web", "--task-definition", "burn",
		"--desired-count", "1", "--launch-type", "FARGATE", "--network-configuration", awsvpc(defaultSubnet(t, s)))
	target := []string{"--service-namespace", "ecs", "--scalable-dimension", "ecs:service:DesiredCount", "--resource-id", "service/alarm/web"}
	s.MustAWS(nil, append([]string{"application-autoscaling", "register-scalable-target", "--min-capacity", "1", "--max-capacity", "2"}, target...)...)

	step := func(cfg string) []string {
		return append([]string{"application-autoscaling", "put-scaling-policy", "--policy-name", "step", "--policy-type", "StepScaling",
			"--step-scaling-policy-configuration", cfg}, target...)
	}
	for _, bad := range []string{
		`{"AdjustmentType":"ChangeInCapacity","StepAdjustments":[{"MetricIntervalLowerBound":0,"ScalingAdjustment":1},{"MetricIntervalLowerBound":5,"MetricIntervalUpperBound":50,"ScalingAdjustment":2}]}`,
		`{"AdjustmentType":"Sideways","StepAdjustments":[{"MetricIntervalLowerBound":0,"ScalingAdjustment":1}]}`,
		`{"AdjustmentType":"ChangeInCapacity","StepAdjustments":[]}`,
		`{"AdjustmentType":"ChangeInCapacity","MinAdjustmentMagnitude":2,"StepAdjustments":[{"MetricIntervalLowerBound":0,"ScalingAdjustment":1}]}`,
	} {
		if code, msg := s.AWSError(step(bad)...); code != "ValidationException" {
			t.Errorf("step config %s: %s %s", bad, code, msg)
		}
	}
	var put struct {
		PolicyARN string `json:"PolicyARN"`
	}
	s.MustAWS(&put, step(`{"AdjustmentType":"ChangeInCapacity","Cooldown":60,"StepAdjustments":[{"MetricIntervalLowerBound":0,"MetricIntervalUpperBound":1000,"ScalingAdjustment":1},{"MetricIntervalLowerBound":1000,"ScalingAdjustment":2}]}`)...)
	if !strings.HasSuffix(put.PolicyARN, ":resource/ecs/service/alarm/web:policyName/step") {
		t.Fatalf("put-scaling-policy StepScaling: %+v", put)
	}

	alarm := []string{"cloudwatch", "put-metric-alarm", "--alarm-name", "cpu-high", "--namespace", "AWS/ECS", "--metric-name", "CPUUtilization",
		"--dimensions", "Name=ClusterName,Value=alarm", "Name=ServiceName,Value=web", "--statistic", "Average",
		"--evaluation-periods", "2", "--comparison-operator", "GreaterThanThreshold"}
	for _, c := range []struct {
		args []string
		code string
	}{
		{append(slicesClone(alarm), "--period", "7", "--threshold", "30"), "InvalidParameterValue"},
		{append(slicesClone(alarm), "--period", "10"), "MissingParameter"},
		{append(slicesClone(alarm), "--period", "10", "--threshold", "30", "--datapoints-to-alarm", "3"), "InvalidParameterValue"},
		{[]string{"cloudwatch", "set-alarm-state", "--alarm-name", "nope", "--state-value", "OK", "--state-reason", "x"}, "ResourceNotFound"},
		{[]string{"cloudwatch", "delete-alarms", "--alarm-names", "nope"}, "ResourceNotFound"},
	} {
		if code, msg := s.AWSError(c.args...); code != c.code {
			t.Errorf("aws %s: %s (%s), want %s", strings.Join(c.args[:2], " "), code, msg, c.code)
		}
	}
	s.MustAWS(nil, append(slicesClone(alarm), "--period", "10", "--threshold", "10", "--alarm-actions", put.PolicyARN)...)
	var al cliAlarms
	s.MustAWS(&al, "cloudwatch", "describe-alarms", "--alarm-names", "cpu-high")
	if len(al.MetricAlarms) != 1 || al.MetricAlarms[0].AlarmArn != "arn:aws:cloudwatch:us-east-1:000000000000:alarm:cpu-high" ||
		al.MetricAlarms[0].AlarmActions[0] != put.PolicyARN || al.MetricAlarms[0].Period != 10 {
		t.Fatalf("describe-alarms: %+v", al)
	}

	// The burner keeps CPU over 10% (a busy loop reads ~100% on an idle
	// host): the alarm fires and the policy steps.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s.MustAWS(&al, "cloudwatch", "describe-alarms", "--alarm-names", "cpu-high")
		if al.MetricAlarms[0].StateValue == "ALARM" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alarm not in ALARM after 2m: %+v", al)
		}
		time.Sleep(2 * time.Second)
	}
	if r := al.MetricAlarms[0].StateReason; !strings.HasPrefix(r, "Threshold Crossed: 2 out of the last 2 datapoints") || !strings.Contains(r, "were greater than the threshold (10.0)") {
		t.Errorf("state reason: %q", r)
	}
	waitService(t, s, "alarm", "web", "stepped out", 60*time.Second, func(v cliService) bool { return v.DesiredCount == 2 })
	var acts struct {
		ScalingActivities []aasActivity `json:"ScalingActivities"`
	}
	s.MustAWS(&acts, "application-autoscaling", "describe-scaling-activities", "--service-namespace", "ecs", "--resource-id", "service/alarm/web")
	if len(acts.ScalingActivities) == 0 || acts.ScalingActivities[0].Cause != "monitor alarm cpu-high in state ALARM triggered policy step" ||
		acts.ScalingActivities[0].StatusCode != "Successful" {
		t.Errorf("scaling activities: %+v", acts.ScalingActivities)
	}
	var filtered cliAlarms
	s.MustAWS(&filtered, "cloudwatch", "describe-alarms", "--alarm-name-prefix", "nope")
	if len(filtered.MetricAlarms) != 0 {
		t.Errorf("describe-alarms --alarm-name-prefix nope: %+v", filtered)
	}
	// SetAlarmState holds until the next evaluation (a period, 10 s).
	s.MustAWS(nil, "cloudwatch", "set-alarm-state", "--alarm-name", "cpu-high", "--state-value", "OK", "--state-reason", "testing")
	s.MustAWS(&filtered, "cloudwatch", "describe-alarms", "--state-value", "OK", "--alarm-name-prefix", "cpu-")
	if len(filtered.MetricAlarms) != 1 || filtered.MetricAlarms[0].StateReason != "testing" {
		t.Errorf("after set-alarm-state: %+v", filtered)
	}

	// The Query protocol (boto3 with the model switched to query).
	out, err := s.Python(`
import boto3, botocore, botocore.session, gzip, json, os, tempfile
src = os.path.join(os.path.dirname(botocore.__file__), "data", "cloudwatch", "2010-08-01", "service-2.json.gz")
m = json.load(gzip.open(src))
m["metadata"]["protocol"] = "query"
m["metadata"]["protocols"] = ["query"]
d = tempfile.mkdtemp()
os.makedirs(os.path.join(d, "cloudwatch", "2010-08-01"))
json.dump(m, open(os.path.join(d, "cloudwatch", "2010-08-01", "service-2.json"), "w"))
bs = botocore.session.get_session()
bs.get_component("data_loader").search_paths.insert(0, d)
cw = boto3.Session(botocore_session=bs).client("cloudwatch")
cw.put_metric_alarm(AlarmName="q-low", Namespace="Custom", MetricName="Queue", Dimensions=[{"Name": "Q", "Value": "jobs"}],
    Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=5, ComparisonOperator="LessThanThreshold")
a = cw.describe_alarms(AlarmNamePrefix="q-")["MetricAlarms"]
try:
    cw.delete_alarms(AlarmNames=["q-low", "nope"])
    code = "none"
except cw.exceptions.ClientError as e:
    code = e.response["Error"]["Code"]
cw.delete_alarms(AlarmNames=["q-low"])
print(json.dumps({"n": len(a), "name": a[0]["AlarmName"], "state": a[0]["StateValue"], "dims": a[0]["Dimensions"], "err": code,
    "after": len(cw.describe_alarms(AlarmNames=["q-low"])["MetricAlarms"])}))
`)
	if err != nil {
		t.Fatalf("boto3 over Query: %v\n%s", err, out)
	}
	if want := `{"n": 1, "name": "q-low", "state": "INSUFFICIENT_DATA", "dims": [{"Name": "Q", "Value": "jobs"}], "err": "ResourceNotFound", "after": 0}`; strings.TrimSpace(out) != want {
		t.Errorf("boto3 over Query:\n got %s\nwant %s", out, want)
	}

	s.MustAWS(nil, "cloudwatch", "delete-alarms", "--alarm-names", "cpu-high")
	s.MustAWS(&al, "cloudwatch", "describe-alarms")
	if len(al.MetricAlarms) != 0 {
		t.Errorf("alarms left after delete-alarms: %+v", al)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
