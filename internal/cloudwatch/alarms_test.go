package cloudwatch

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch/cwtypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

type recordedAction struct {
	arn string
	ev  AlarmEvent
}

type actionLog struct{ got []recordedAction }

func (l *actionLog) AlarmAction(_ context.Context, arn string, ev AlarmEvent) error {
	l.got = append(l.got, recordedAction{arn, ev})
	return nil
}

// TestAlarmEvaluation drives an alarm over stored datapoints: OK, then
// ALARM with its action, INSUFFICIENT_DATA without data; odd input gets
// client errors.
func TestAlarmEvaluation(t *testing.T) {
	dir := t.TempDir()
	ms, err := Open(filepath.Join(dir, "metrics.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	st, err := state.OpenSQLite(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	log := &actionLog{}
	svc := &Service{Store: ms, State: st, Actions: log, Now: func() time.Time { return now }}
	ctx := awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: "1", Region: "r"})
	ops := svc.JSON().Ops
	for _, body := range []string{
		`{}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"p99","Period":60,"EvaluationPeriods":1,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold"}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"Sum","Period":60,"EvaluationPeriods":0,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold"}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"Sum","Period":60,"EvaluationPeriods":1,"Threshold":1,"ComparisonOperator":"LessThanLowerThreshold"}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"Sum","Period":604800,"EvaluationPeriods":2,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold"}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"Sum","Period":60,"EvaluationPeriods":1,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold","AlarmActions":["nope"]}`,
		`{"AlarmName":"a","Namespace":"N","MetricName":"M","Statistic":"Sum","Period":60,"EvaluationPeriods":1,"Threshold":1,"ComparisonOperator":"GreaterThanThreshold","Dimensions":[null]}`,
	} {
		if _, err := ops["PutMetricAlarm"](ctx, []byte(body)); err == nil || awsapi.AsError(err).Status >= 500 {
			t.Errorf("PutMetricAlarm %s: %v, want a client error", body, err)
		}
	}
	for op, body := range map[string]string{"DescribeAlarms": `{"MaxRecords":0}`, "DeleteAlarms": `{"AlarmNames":[]}`, "SetAlarmState": `{"AlarmName":"x","StateValue":"RED","StateReason":"r"}`} {
		if _, err := ops[op](ctx, []byte(body)); err == nil || awsapi.AsError(err).Status >= 500 {
			t.Errorf("%s %s: %v, want a client error", op, body, err)
		}
	}

	_, err = svc.putMetricAlarm(ctx, &cwtypes.PutMetricAlarmInput{AlarmName: ecstypes.String("high"), Namespace: ecstypes.String("N"), MetricName: ecstypes.String("M"),
		Statistic: ecstypes.String("Average"), Period: ecstypes.Int32(60), EvaluationPeriods: ecstypes.Int32(2), Threshold: ptr(50.0),
		ComparisonOperator: ecstypes.String("GreaterThanThreshold"), AlarmActions: []string{"arn:aws:autoscaling:r:1:scalingPolicy:x:resource/ecs/service/c/s:policyName/p"}})
	if err != nil {
		t.Fatal(err)
	}
	put := func(at time.Time, v float64) {
		if err := ms.Put(context.Background(), []Point{{Metric: MetricID{Account: "1", Region: "r", Namespace: "N", Name: "M"}, Time: at, Unit: "None", Stats: Of(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	state := func() string {
		out, err := svc.describeAlarms(ctx, &cwtypes.DescribeAlarmsInput{AlarmNames: []string{"high"}})
		if err != nil || len(out.MetricAlarms) != 1 {
			t.Fatalf("describe: %v %+v", err, out)
		}
		return *out.MetricAlarms[0].StateValue
	}
	if err := svc.EvaluateAlarms(ctx); err != nil || state() != "INSUFFICIENT_DATA" {
		t.Fatalf("no data: %v %s", err, state())
	}
	now = now.Add(time.Minute)
	put(now.Add(-90*time.Second), 40)
	put(now.Add(-30*time.Second), 70)
	svc.EvaluateAlarms(ctx)
	if s := state(); s != "OK" {
		t.Errorf("one of two periods above 50: %s", s)
	}
	now = now.Add(time.Minute)
	put(now.Add(-30*time.Second), 90)
	svc.EvaluateAlarms(ctx)
	if s := state(); s != "ALARM" || len(log.got) != 1 || log.got[0].ev.Value != 90 || log.got[0].ev.Threshold != 50 {
		t.Errorf("two periods above 50: %s, actions %+v", s, log.got)
	}
	// Still in ALARM a period later: Auto Scaling actions run again.
	now = now.Add(time.Minute)
	put(now.Add(-10*time.Second), 95)
	svc.EvaluateAlarms(ctx)
	if len(log.got) != 2 {
		t.Errorf("actions while in ALARM: %+v", log.got)
	}
	if _, err := svc.deleteAlarms(ctx, &cwtypes.DeleteAlarmsInput{AlarmNames: []string{"high", "nope"}}); awsapi.AsError(err).Code != "ResourceNotFound" {
		t.Errorf("delete with a missing name: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
