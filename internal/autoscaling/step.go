package autoscaling

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// Step scaling: a policy that CloudWatch alarms invoke (the policy's ARN in
// the alarm's AlarmActions). The step is chosen by how far the alarm's
// newest value is from its threshold, as Application Auto Scaling does:
// each step's interval is relative to the threshold, lower bound
// inclusive, upper bound exclusive.

func checkStepConfig(c *aastypes.StepScalingPolicyConfiguration) error {
	if c == nil {
		return validation("StepScalingPolicyConfiguration is required for a policy of type StepScaling.")
	}
	at := ecstypes.Deref(c.AdjustmentType)
	if at == "" {
		return validation("1 validation error detected: Value null at 'stepScalingPolicyConfiguration.adjustmentType' failed to satisfy constraint: Member must not be null")
	}
	if !contains([]string{"ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity"}, at) {
		return validation("1 validation error detected: Value '%s' at 'stepScalingPolicyConfiguration.adjustmentType' failed to satisfy constraint: Member must satisfy enum value set: [ChangeInCapacity, PercentChangeInCapacity, ExactCapacity]", at)
	}
	if m := c.MinAdjustmentMagnitude; m != nil && at != "PercentChangeInCapacity" {
		return validation("MinAdjustmentMagnitude may only be specified with the PercentChangeInCapacity adjustment type.")
	}
	if c.Cooldown != nil && (*c.Cooldown < 0 || *c.Cooldown > 31536000) {
		return validation("1 validation error detected: Value '%d' at 'stepScalingPolicyConfiguration.cooldown' failed to satisfy constraint: Member must have value between 0 and 31536000", *c.Cooldown)
	}
	if t := ecstypes.Deref(c.MetricAggregationType); t != "" && !contains([]string{"Average", "Minimum", "Maximum"}, t) {
		return validation("1 validation error detected: Value '%s' at 'stepScalingPolicyConfiguration.metricAggregationType' failed to satisfy constraint: Member must satisfy enum value set: [Average, Minimum, Maximum]", t)
	}
	if len(c.StepAdjustments) == 0 {
		return validation("StepScalingPolicyConfiguration must have at least one StepAdjustment.")
	}
	steps := slices.Clone(c.StepAdjustments)
	lo := func(s *aastypes.StepAdjustment) float64 {
		if s.MetricIntervalLowerBound == nil {
			return math.Inf(-1)
		}
		return *s.MetricIntervalLowerBound
	}
	hi := func(s *aastypes.StepAdjustment) float64 {
		if s.MetricIntervalUpperBound == nil {
			return math.Inf(1)
		}
		return *s.MetricIntervalUpperBound
	}
	for _, st := range steps {
		if st == nil || st.ScalingAdjustment == nil {
			return validation("Each StepAdjustment needs a ScalingAdjustment.")
		}
		if st.MetricIntervalLowerBound == nil && st.MetricIntervalUpperBound == nil && len(steps) > 1 {
			return validation("Only one StepAdjustment may have both bounds null.")
		}
		if !(lo(st) < hi(st)) {
			return validation("The upper bound of a StepAdjustment must be greater than its lower bound.")
		}
	}
	slices.SortFunc(steps, func(a, b *aastypes.StepAdjustment) int {
		switch {
		case lo(a) < lo(b):
			return -1
		case lo(a) > lo(b):
			return 1
		}
		return 0
	})
	for i := 1; i < len(steps); i++ {
		if hi(steps[i-1]) > lo(steps[i]) {
			return validation("StepAdjustments must not overlap.")
		}
		if hi(steps[i-1]) < lo(steps[i]) {
			return validation("StepAdjustments must not have gaps between them.")
		}
	}
	return nil
}

func (s *Service) putStepPolicy(ctx context.Context, r ref, name string, in *aastypes.PutScalingPolicyRequest) (*aastypes.PutScalingPolicyResponse, error) {
	cfg := in.StepScalingPolicyConfiguration
	if in.TargetTrackingScalingPolicyConfiguration != nil || in.PredictiveScalingPolicyConfiguration != nil {
		return nil, validation("Only StepScalingPolicyConfiguration may be given for a policy of type StepScaling.")
	}
	if err := checkStepConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.MetricAggregationType == nil {
		cfg.MetricAggregationType = ecstypes.String("Average")
	}
	sc := scopeOf(ctx)
	now := s.now()
	typ := "StepScaling"
	var out *aastypes.PutScalingPolicyResponse
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var t targetRecord
		ok, err := tx.Get(KindTarget, r.key(sc), &t)
		if err != nil {
			return err
		}
		if !ok {
			return notFound(r)
		}
		var rec policyRecord
		if _, err := tx.Get(KindPolicy, r.key(sc)+"/"+name, &rec); err != nil {
			return err
		}
		if rec.Policy.PolicyARN == nil {
			rec.Policy = aastypes.ScalingPolicy{
				PolicyARN: ecstypes.String(fmt.Sprintf("arn:aws:autoscaling:%s:%s:scalingPolicy:%s:resource/%s/%s:policyName/%s",
					sc.Region, sc.Account, newID(), r.namespace, r.resource, name)),
				PolicyName:   &name,
				CreationTime: ecstypes.At(now),
			}
		}
		p := &rec.Policy
		p.PolicyType = &typ
		p.ServiceNamespace, p.ScalableDimension, p.ResourceId = &r.namespace, &r.dimension, &r.resource
		p.StepScalingPolicyConfiguration, p.TargetTrackingScalingPolicyConfiguration, p.Alarms = cfg, nil, nil
		out = &aastypes.PutScalingPolicyResponse{PolicyARN: p.PolicyARN}
		return tx.Put(KindPolicy, r.key(sc)+"/"+name, &rec)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// stepFor picks the step for how far value is past the threshold.
func stepFor(steps []*aastypes.StepAdjustment, diff float64) *aastypes.StepAdjustment {
	for _, st := range steps {
		if (st.MetricIntervalLowerBound == nil || diff >= *st.MetricIntervalLowerBound) &&
			(st.MetricIntervalUpperBound == nil || diff < *st.MetricIntervalUpperBound) {
			return st
		}
	}
	// A value exactly on the threshold of a below-threshold alarm has no
	// step with an exclusive upper bound of 0: take that one.
	for _, st := range steps {
		if st.MetricIntervalUpperBound != nil && diff == *st.MetricIntervalUpperBound {
			return st
		}
	}
	return nil
}

// adjust applies a step to the current capacity.
func adjust(c *aastypes.StepScalingPolicyConfiguration, cur, by int32) int32 {
	switch ecstypes.Deref(c.AdjustmentType) {
	case "ExactCapacity":
		return by
	case "PercentChangeInCapacity":
		d := float64(cur) * float64(by) / 100
		n := int32(math.Trunc(d))
		if n == 0 && d != 0 {
			n = int32(math.Copysign(1, d))
		}
		if m := ecstypes.Deref(c.MinAdjustmentMagnitude); m > 0 && abs32(n) < m {
			n = int32(math.Copysign(float64(m), d))
		}
		return cur + n
	}
	return cur + by
}

func abs32(n int32) int32 {
	if n < 0 {
		return -n
	}
	return n
}

// AlarmAction runs the step scaling policy an alarm action names
// (cloudwatch.AlarmActionHandler).
func (s *Service) AlarmAction(ctx context.Context, arn string, ev cloudwatch.AlarmEvent) error {
	// arn:aws:autoscaling:REGION:ACCOUNT:scalingPolicy:ID:resource/NS/RESOURCE:policyName/NAME
	parts := strings.SplitN(arn, ":", 8)
	if len(parts) != 8 || parts[2] != "autoscaling" || parts[5] != "scalingPolicy" {
		return fmt.Errorf("not a scaling policy ARN: %s", arn)
	}
	sc := model.Scope{Account: parts[4], Region: parts[3]}
	res, name, ok := strings.Cut(parts[7], ":policyName/")
	if !ok || sc.Account != ev.Account || sc.Region != ev.Region {
		return fmt.Errorf("not a scaling policy of this account: %s", arn)
	}
	ns, resource, _ := strings.Cut(strings.TrimPrefix(res, "resource/"), "/")
	r, err := checkRef(&ns, ecstypes.String("ecs:service:DesiredCount"), &resource)
	if err != nil {
		return err
	}
	if ev.State != "ALARM" {
		return nil
	}
	var t targetRecord
	var rec policyRecord
	var cur int32
	err = s.Store.View(ctx, func(tx state.Tx) error {
		if ok, err := tx.Get(KindTarget, r.key(sc), &t); err != nil || !ok {
			return err
		}
		if ok, err := tx.Get(KindPolicy, r.key(sc)+"/"+name, &rec); err != nil || !ok {
			return err
		}
		svc, err := activeService(tx, sc, r)
		if err != nil || svc == nil {
			return err
		}
		cur = ecstypes.Deref(svc.Service.DesiredCount)
		return nil
	})
	if err != nil {
		return err
	}
	cfg := rec.Policy.StepScalingPolicyConfiguration
	if ecstypes.Deref(rec.Policy.PolicyARN) != arn || cfg == nil || t.Target.ResourceId == nil {
		return fmt.Errorf("no step scaling policy %s", arn)
	}
	now := s.now()
	if rec.LastStep != nil && now.Sub(*rec.LastStep).Seconds() < float64(ecstypes.Deref(cfg.Cooldown)) {
		return nil
	}
	diff := ev.Value - ev.Threshold
	if math.IsNaN(diff) { // SetAlarmState: no value, so on the threshold
		diff = 0
	}
	st := stepFor(cfg.StepAdjustments, diff)
	if st == nil {
		return nil
	}
	n := adjust(cfg, cur, *st.ScalingAdjustment)
	n = min(max(n, ecstypes.Deref(t.Target.MinCapacity)), ecstypes.Deref(t.Target.MaxCapacity))
	ss := t.Target.SuspendedState
	if n == cur || (n > cur && ss != nil && ecstypes.Deref(ss.DynamicScalingOutSuspended)) ||
		(n < cur && ss != nil && ecstypes.Deref(ss.DynamicScalingInSuspended)) {
		return nil
	}
	s.scale(ctx, sc, r, n, fmt.Sprintf("monitor alarm %s in state ALARM triggered policy %s", ev.AlarmName, name),
		fmt.Sprintf("Setting desired count to %d.", n), n > cur)
	return s.Store.Update(ctx, func(tx state.Tx) error {
		var cur policyRecord
		key := r.key(sc) + "/" + name
		if ok, err := tx.Get(KindPolicy, key, &cur); err != nil || !ok {
			return err
		}
		cur.LastStep = &now
		return tx.Put(KindPolicy, key, &cur)
	})
}
