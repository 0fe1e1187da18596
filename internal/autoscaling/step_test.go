package autoscaling

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

func f(v float64) *float64 { return &v }

func TestStepScaling(t *testing.T) {
	steps := []*aastypes.StepAdjustment{
		{MetricIntervalUpperBound: f(0), ScalingAdjustment: ecstypes.Int32(-1)},
		{MetricIntervalLowerBound: f(0), MetricIntervalUpperBound: f(20), ScalingAdjustment: ecstypes.Int32(1)},
		{MetricIntervalLowerBound: f(20), ScalingAdjustment: ecstypes.Int32(3)},
	}
	cfg := &aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("ChangeInCapacity"), StepAdjustments: steps}
	if err := checkStepConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		diff float64
		want int32
	}{{-5, -1}, {0, 1}, {19.9, 1}, {20, 3}, {500, 3}} {
		if st := stepFor(steps, c.diff); st == nil || *st.ScalingAdjustment != c.want {
			t.Errorf("step for %v: %+v, want %d", c.diff, st, c.want)
		}
	}
	pct := &aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("PercentChangeInCapacity"), MinAdjustmentMagnitude: ecstypes.Int32(2)}
	for _, c := range []struct {
		cfg          *aastypes.StepScalingPolicyConfiguration
		cur, by, out int32
	}{
		{cfg, 4, 2, 6},
		{&aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("ExactCapacity")}, 4, 2, 2},
		{&aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("PercentChangeInCapacity")}, 3, 10, 4}, // 0.3 rounds away from 0
		{&aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("PercentChangeInCapacity")}, 10, -50, 5},
		{pct, 4, 10, 6}, // 0.4 -> at least 2
	} {
		if got := adjust(c.cfg, c.cur, c.by); got != c.out {
			t.Errorf("%s %d by %d: %d, want %d", *c.cfg.AdjustmentType, c.cur, c.by, got, c.out)
		}
	}
	for _, bad := range [][]*aastypes.StepAdjustment{
		{{MetricIntervalLowerBound: f(0), ScalingAdjustment: ecstypes.Int32(1)}, {MetricIntervalLowerBound: f(10), ScalingAdjustment: ecstypes.Int32(2)}},                                  // overlap
		{{MetricIntervalLowerBound: f(0), MetricIntervalUpperBound: f(10), ScalingAdjustment: ecstypes.Int32(1)}, {MetricIntervalLowerBound: f(20), ScalingAdjustment: ecstypes.Int32(2)}}, // gap
		{{MetricIntervalLowerBound: f(10), MetricIntervalUpperBound: f(10), ScalingAdjustment: ecstypes.Int32(1)}},
		{{MetricIntervalLowerBound: f(0)}},
	} {
		if err := checkStepConfig(&aastypes.StepScalingPolicyConfiguration{AdjustmentType: ecstypes.String("ChangeInCapacity"), StepAdjustments: bad}); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
