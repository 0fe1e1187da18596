package autoscaling

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/ecs"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// TestTargetTracking drives the policy evaluation on a clock of its own,
// over the real state store, metrics store and ECS service code: scale out
// after 3 high periods (capped at max), out-cooldown, scale in only after 15
// low periods and its cooldown, never below min, and DisableScaleIn.
func TestTargetTracking(t *testing.T) {
	dir := t.TempDir()
	st, err := state.OpenSQLite(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ms, err := cloudwatch.Open(filepath.Join(dir, "metrics.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	sc := model.Scope{Account: "000000000000", Region: "us-east-1"}
	ctx := awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: sc.Account, Region: sc.Region})
	// Near the real clock: the metrics store prunes datapoints older than
	// its retention by the real clock, so a fixed past date races the pruner.
	now := time.Now().UTC().Truncate(time.Hour)
	svc := &Service{Store: st, Metrics: ms, ECS: &ecs.Service{Store: st}, Period: time.Minute, Now: func() time.Time { return now }}

	rec := model.ServiceRecord{Service: ecstypes.Service{ServiceName: ecstypes.String("web"), Status: ecstypes.String("ACTIVE"), DesiredCount: ecstypes.Int32(1)}}
	if err := st.Update(ctx, func(tx state.Tx) error { return tx.Put(model.KindService, sc.ServiceKey("c", "web"), &rec) }); err != nil {
		t.Fatal(err)
	}
	desired := func() int32 {
		var r model.ServiceRecord
		st.View(ctx, func(tx state.Tx) error {
			_, err := tx.Get(model.KindService, sc.ServiceKey("c", "web"), &r)
			return err
		})
		return ecstypes.Deref(r.Service.DesiredCount)
	}
	ns, dim, res := ecstypes.String("ecs"), ecstypes.String(ecsDimension), ecstypes.String("service/c/web")
	if _, err := svc.registerScalableTarget(ctx, &aastypes.RegisterScalableTargetRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res,
		MinCapacity: ecstypes.Int32(1), MaxCapacity: ecstypes.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.putScalingPolicy(ctx, &aastypes.PutScalingPolicyRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res,
		PolicyName: ecstypes.String("cpu"), PolicyType: ecstypes.String("TargetTrackingScaling"),
		TargetTrackingScalingPolicyConfiguration: &aastypes.TargetTrackingScalingPolicyConfiguration{TargetValue: f64(50),
			PredefinedMetricSpecification: &aastypes.PredefinedMetricSpecification{PredefinedMetricType: ecstypes.String("ECSServiceAverageCPUUtilization")},
			ScaleOutCooldown:              ecstypes.Int32(120), ScaleInCooldown: ecstypes.Int32(300)}}); err != nil {
		t.Fatal(err)
	}
	cpu := cloudwatch.MetricID{Account: sc.Account, Region: sc.Region, Namespace: "AWS/ECS", Name: "CPUUtilization",
		Dims: []cloudwatch.Dim{{Name: "ClusterName", Value: "c"}, {Name: "ServiceName", Value: "web"}}}
	// minute advances the clock a minute with one CPU sample in it.
	minute := func(v float64) {
		if err := ms.Put(ctx, []cloudwatch.Point{{Metric: cpu, Time: now.Add(30 * time.Second), Unit: "Percent", Stats: cloudwatch.Of(v)}}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
		if err := svc.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	minute(90)
	minute(90)
	if d := desired(); d != 1 {
		t.Fatalf("scaled after 2 high periods: %d", d)
	}
	minute(90) // 3 above 50%: ceil(1*90/50) = 2
	if d := desired(); d != 2 {
		t.Fatalf("after 3 high periods: %d, want 2", d)
	}
	minute(100) // within the 120 s out-cooldown
	if d := desired(); d != 2 {
		t.Fatalf("scaled during cooldown: %d", d)
	}
	minute(100)
	minute(100) // ceil(2*100/50) = 4
	if d := desired(); d != 4 {
		t.Fatalf("second scale-out: %d, want 4", d)
	}
	now = now.Add(5 * time.Minute)
	minute(200)
	minute(200)
	minute(200) // ceil(4*200/50) = 16, capped at 5
	if d := desired(); d != 5 {
		t.Fatalf("capped scale-out: %d, want 5", d)
	}
	for i := 0; i < 14; i++ {
		minute(10)
	}
	if d := desired(); d != 5 {
		t.Fatalf("scaled in after 14 low periods: %d", d)
	}
	minute(10) // 15 below 45%: ceil(5*10/50) = 1
	if d := desired(); d != 1 {
		t.Fatalf("scale-in: %d, want 1", d)
	}

	var acts aastypes.DescribeScalingActivitiesResponse
	if out, err := svc.describeScalingActivities(ctx, &aastypes.DescribeScalingActivitiesRequest{ServiceNamespace: ns}); err != nil {
		t.Fatal(err)
	} else {
		acts = *out
	}
	want := []string{"Setting desired count to 1.", "Setting desired count to 5.", "Setting desired count to 4.", "Setting desired count to 2."}
	if len(acts.ScalingActivities) != len(want) {
		t.Fatalf("activities: %d", len(acts.ScalingActivities))
	}
	for i, a := range acts.ScalingActivities {
		if *a.Description != want[i] || *a.StatusCode != "Successful" {
			t.Errorf("activity %d: %s %s", i, *a.Description, *a.StatusCode)
		}
	}

	// DisableScaleIn keeps the count; a missing period blocks the alarm.
	if _, err := svc.registerScalableTarget(ctx, &aastypes.RegisterScalableTargetRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res, MinCapacity: ecstypes.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	if d := desired(); d != 3 {
		t.Fatalf("raising min to 3: %d", d)
	}
	if _, err := svc.putScalingPolicy(ctx, &aastypes.PutScalingPolicyRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res,
		PolicyName: ecstypes.String("cpu"), PolicyType: ecstypes.String("TargetTrackingScaling"),
		TargetTrackingScalingPolicyConfiguration: &aastypes.TargetTrackingScalingPolicyConfiguration{TargetValue: f64(50), DisableScaleIn: ecstypes.Bool(true),
			PredefinedMetricSpecification: &aastypes.PredefinedMetricSpecification{PredefinedMetricType: ecstypes.String("ECSServiceAverageCPUUtilization")}}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	for i := 0; i < 16; i++ {
		minute(1)
	}
	if d := desired(); d != 3 {
		t.Fatalf("DisableScaleIn: %d", d)
	}
	now = now.Add(time.Hour)
	minute(90)
	now = now.Add(time.Minute) // a period without data
	minute(90)
	minute(90)
	if d := desired(); d != 3 {
		t.Fatalf("scaled out over missing data: %d", d)
	}
}

func f64(v float64) *float64 { return &v }

// TestScheduledActions: cron, rate and at schedules fire when due, in the
// action's time zone, set the target's range and move the count into it.
func TestScheduledActions(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	for _, c := range []struct {
		expr     string
		from, to time.Time
		want     bool
	}{
		{"cron(0 9 ? * MON-FRI *)", time.Date(2026, 1, 5, 7, 59, 0, 0, time.UTC), time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC), true},  // Monday 09:00 Paris
		{"cron(0 9 ? * MON-FRI *)", time.Date(2026, 1, 4, 7, 59, 0, 0, time.UTC), time.Date(2026, 1, 4, 8, 0, 0, 0, time.UTC), false}, // Sunday
		{"cron(*/15 * * * ? *)", time.Date(2026, 1, 4, 7, 31, 0, 0, time.UTC), time.Date(2026, 1, 4, 7, 44, 0, 0, time.UTC), false},
		{"cron(*/15 * * * ? *)", time.Date(2026, 1, 4, 7, 31, 0, 0, time.UTC), time.Date(2026, 1, 4, 7, 45, 0, 0, time.UTC), true},
		{"at(2026-01-04T09:00:00)", time.Date(2026, 1, 4, 7, 0, 0, 0, time.UTC), time.Date(2026, 1, 4, 7, 59, 0, 0, time.UTC), false},
		{"at(2026-01-04T09:00:00)", time.Date(2026, 1, 4, 7, 0, 0, 0, time.UTC), time.Date(2026, 1, 4, 8, 0, 0, 0, time.UTC), true},
	} {
		sch, err := parseSchedule(c.expr, paris)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if got := sch.due(c.from, c.to, paris, time.Time{}); got != c.want {
			t.Errorf("%s due in (%v, %v]: %v", c.expr, c.from, c.to, got)
		}
	}
	for _, bad := range []string{"cron(0 9 * * MON *)", "cron(61 * * * ? *)", "cron(0 9 * *)", "rate(1 minutes)", "rate(0 hours)", "at(2026-13-01T00:00:00)", "every day"} {
		if _, err := parseSchedule(bad, time.UTC); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}

	dir := t.TempDir()
	st, err := state.OpenSQLite(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ms, err := cloudwatch.Open(filepath.Join(dir, "metrics.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	sc := model.Scope{Account: "000000000000", Region: "us-east-1"}
	ctx := awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: sc.Account, Region: sc.Region})
	now := time.Date(2026, 1, 5, 7, 58, 30, 0, time.UTC)
	svc := &Service{Store: st, Metrics: ms, ECS: &ecs.Service{Store: st}, Now: func() time.Time { return now }}
	rec := model.ServiceRecord{Service: ecstypes.Service{ServiceName: ecstypes.String("web"), Status: ecstypes.String("ACTIVE"), DesiredCount: ecstypes.Int32(1)}}
	st.Update(ctx, func(tx state.Tx) error { return tx.Put(model.KindService, sc.ServiceKey("c", "web"), &rec) })
	desired := func() int32 {
		var r model.ServiceRecord
		st.View(ctx, func(tx state.Tx) error {
			_, err := tx.Get(model.KindService, sc.ServiceKey("c", "web"), &r)
			return err
		})
		return ecstypes.Deref(r.Service.DesiredCount)
	}
	ns, dim, res := ecstypes.String("ecs"), ecstypes.String(ecsDimension), ecstypes.String("service/c/web")
	if _, err := svc.registerScalableTarget(ctx, &aastypes.RegisterScalableTargetRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res,
		MinCapacity: ecstypes.Int32(1), MaxCapacity: ecstypes.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	put := func(name, expr string, lo, hi int32) {
		t.Helper()
		if _, err := svc.putScheduledAction(ctx, &aastypes.PutScheduledActionRequest{ServiceNamespace: ns, ScalableDimension: dim, ResourceId: res,
			ScheduledActionName: &name, Schedule: &expr, Timezone: ecstypes.String("Europe/Paris"),
			ScalableTargetAction: &aastypes.ScalableTargetAction{MinCapacity: &lo, MaxCapacity: &hi}}); err != nil {
			t.Fatal(err)
		}
	}
	put("morning", "cron(0 9 ? * MON-FRI *)", 3, 6)
	put("evening", "at(2026-01-05T18:00:00)", 0, 2)
	step := func(d time.Duration) {
		now = now.Add(d)
		if err := svc.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	step(time.Minute) // 07:59:30 UTC: not yet
	if d := desired(); d != 1 {
		t.Fatalf("before 09:00 Paris: %d", d)
	}
	step(time.Minute) // 08:00:30 UTC = 09:00:30 Paris
	if d := desired(); d != 3 {
		t.Fatalf("after the morning action: %d, want 3", d)
	}
	step(10 * time.Hour) // 18:00:30 UTC = 19:00 Paris, past the evening at()
	if d := desired(); d != 2 {
		t.Fatalf("after the evening action: %d, want 2", d)
	}
	out, err := svc.describeScalableTargets(ctx, &aastypes.DescribeScalableTargetsRequest{ServiceNamespace: ns})
	if err != nil || *out.ScalableTargets[0].MinCapacity != 0 || *out.ScalableTargets[0].MaxCapacity != 2 {
		t.Fatalf("target after the evening action: %+v %v", out, err)
	}
}
