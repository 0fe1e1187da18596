package autoscaling

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/elbv2"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// Datapoints target tracking's alarms need: 3 above the target to scale
// out, 15 below 90% of it to scale in, as AWS creates them.
const (
	highPoints = 3
	lowPoints  = 15
	lowRatio   = 0.9
)

type metricSpec struct {
	id   cloudwatch.MetricID
	stat string
}

// policyMetric is the metric a target-tracking policy follows.
func policyMetric(sc model.Scope, r ref, cfg *aastypes.TargetTrackingScalingPolicyConfiguration) (metricSpec, error) {
	pre, cust := cfg.PredefinedMetricSpecification, cfg.CustomizedMetricSpecification
	if (pre == nil) == (cust == nil) {
		return metricSpec{}, validation("Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification must be given.")
	}
	base := cloudwatch.MetricID{Account: sc.Account, Region: sc.Region}
	if pre != nil {
		typ := ecstypes.Deref(pre.PredefinedMetricType)
		base.Namespace = cloudwatch.NamespaceECS
		base.Dims = []cloudwatch.Dim{{Name: cloudwatch.DimCluster, Value: r.cluster}, {Name: cloudwatch.DimService, Value: r.service}}
		switch typ {
		case "ECSServiceAverageCPUUtilization":
			base.Name = cloudwatch.CPUUtilization
		case "ECSServiceAverageMemoryUtilization":
			base.Name = cloudwatch.MemoryUtilization
		case "ALBRequestCountPerTarget":
			// Requests per healthy target over each evaluation period (a
			// minute, as AWS's alarm), from the load balancer's own counts.
			tg, err := checkALBLabel(ecstypes.Deref(pre.ResourceLabel))
			if err != nil {
				return metricSpec{}, err
			}
			base.Namespace, base.Name = elbv2.NamespaceALB, "RequestCountPerTarget"
			base.Dims = []cloudwatch.Dim{{Name: "TargetGroup", Value: tg}}
			return metricSpec{id: base, stat: "Sum"}, nil
		case "":
			return metricSpec{}, validation("1 validation error detected: Value null at 'targetTrackingScalingPolicyConfiguration.predefinedMetricSpecification.predefinedMetricType' failed to satisfy constraint: Member must not be null")
		default:
			if !contains(aastypes.Enums["MetricType"], typ) {
				return metricSpec{}, validation("1 validation error detected: Value '%s' at 'targetTrackingScalingPolicyConfiguration.predefinedMetricSpecification.predefinedMetricType' failed to satisfy constraint: Member must satisfy enum value set: %v", typ, aastypes.Enums["MetricType"])
			}
			return metricSpec{}, validation("Predefined metric type %s is not supported for ECS services: use ECSServiceAverageCPUUtilization, ECSServiceAverageMemoryUtilization or ALBRequestCountPerTarget.", typ)
		}
		return metricSpec{id: base, stat: "Average"}, nil
	}
	if len(cust.Metrics) > 0 {
		return metricSpec{}, validation("Metric math (CustomizedMetricSpecification.Metrics) is not supported by this endpoint.")
	}
	if ecstypes.Deref(cust.Namespace) == "" || ecstypes.Deref(cust.MetricName) == "" || ecstypes.Deref(cust.Statistic) == "" {
		return metricSpec{}, validation("CustomizedMetricSpecification needs MetricName, Namespace and Statistic.")
	}
	if !contains([]string{"Average", "Minimum", "Maximum", "SampleCount", "Sum"}, *cust.Statistic) {
		return metricSpec{}, validation("1 validation error detected: Value '%s' at 'targetTrackingScalingPolicyConfiguration.customizedMetricSpecification.statistic' failed to satisfy constraint: Member must satisfy enum value set: [Average, Minimum, Maximum, SampleCount, Sum]", *cust.Statistic)
	}
	base.Namespace, base.Name = *cust.Namespace, *cust.MetricName
	for _, d := range cust.Dimensions {
		if d == nil || ecstypes.Deref(d.Name) == "" || d.Value == nil {
			return metricSpec{}, validation("Each dimension of CustomizedMetricSpecification needs a Name and a Value.")
		}
		base.Dims = append(base.Dims, cloudwatch.Dim{Name: *d.Name, Value: *d.Value})
	}
	sort.Slice(base.Dims, func(i, j int) bool { return base.Dims[i].Name < base.Dims[j].Name })
	return metricSpec{id: base, stat: *cust.Statistic}, nil
}

// Start evaluates the policies every Period until Stop.
func (s *Service) Start(ctx context.Context) {
	ctx, s.stop = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.period())
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if err := s.Evaluate(ctx); err != nil && ctx.Err() == nil && s.Log != nil {
				s.Log.Warn("autoscaling: evaluate", "err", err)
			}
		}
	}()
}

func (s *Service) Stop() {
	if s.stop != nil {
		s.stop()
		<-s.done
	}
}

// Evaluate runs every scalable target's policies once.
func (s *Service) Evaluate(ctx context.Context) error {
	type work struct {
		sc       model.Scope
		r        ref
		target   targetRecord
		policies []policyRecord
		current  int32
	}
	var todo []work
	err := s.Store.View(ctx, func(tx state.Tx) error {
		todo = nil
		return tx.Scan(KindTarget, "", "", 0, func(key string, data []byte) error {
			var t targetRecord
			if err := json.Unmarshal(data, &t); err != nil {
				return err
			}
			parts := strings.SplitN(key, "/", 3)
			if len(parts) != 3 {
				return nil
			}
			sc := model.Scope{Account: parts[0], Region: parts[1]}
			r, err := checkRef(t.Target.ServiceNamespace, t.Target.ScalableDimension, t.Target.ResourceId)
			if err != nil {
				return nil
			}
			svc, err := activeService(tx, sc, r)
			if err != nil || svc == nil {
				return err
			}
			ps, err := state.List[policyRecord](tx, KindPolicy, key+"/")
			if err != nil {
				return err
			}
			todo = append(todo, work{sc: sc, r: r, target: t, policies: ps, current: ecstypes.Deref(svc.Service.DesiredCount)})
			return nil
		})
	})
	if err != nil {
		return err
	}
	now := s.now()
	if err := s.runScheduled(ctx, now); err != nil && s.Log != nil {
		s.Log.Warn("autoscaling: scheduled actions", "err", err)
	}
	for _, w := range todo {
		s.evaluateTarget(ctx, now, w.sc, w.r, w.target, w.policies, w.current)
	}
	return nil
}

type decision struct {
	policy  string
	alarm   string
	value   float64
	desired int32
}

func (s *Service) evaluateTarget(ctx context.Context, now time.Time, sc model.Scope, r ref, t targetRecord, ps []policyRecord, cur int32) {
	if len(ps) == 0 {
		return
	}
	lo, hi := ecstypes.Deref(t.Target.MinCapacity), ecstypes.Deref(t.Target.MaxCapacity)
	ss := t.Target.SuspendedState
	outSuspended := ss != nil && ecstypes.Deref(ss.DynamicScalingOutSuspended)
	inSuspended := ss != nil && ecstypes.Deref(ss.DynamicScalingInSuspended)
	var out *decision
	var in *decision
	allLow := true
	for _, p := range ps {
		cfg := p.Policy.TargetTrackingScalingPolicyConfiguration
		if cfg == nil {
			continue // step scaling: its alarms drive it (step.go)
		}
		spec, err := policyMetric(sc, r, cfg)
		if err != nil {
			allLow = false
			continue
		}
		target := ecstypes.Deref(cfg.TargetValue)
		highVals, highOK := s.windows(ctx, spec, now, highPoints)
		if highOK && allAbove(highVals, target) {
			v := highVals[0]
			want := int32(math.Ceil(float64(max(cur, 1)) * v / target))
			if want > cur && (out == nil || want > out.desired) {
				out = &decision{policy: *p.Policy.PolicyName, alarm: alarmName(p.Policy, "AlarmHigh"), value: v, desired: want}
			}
		}
		lowVals, lowOK := s.windows(ctx, spec, now, lowPoints)
		if ecstypes.Deref(cfg.DisableScaleIn) || !lowOK || !allBelow(lowVals, target*lowRatio) {
			allLow = false
			continue
		}
		v := lowVals[0]
		want := int32(math.Ceil(float64(cur) * v / target))
		if in == nil || want > in.desired {
			in = &decision{policy: *p.Policy.PolicyName, alarm: alarmName(p.Policy, "AlarmLow"), value: v, desired: want}
		}
	}
	cooling := func(last *time.Time, secs int32) bool {
		return last != nil && now.Sub(*last) < time.Duration(secs)*time.Second
	}
	outCooldown, inCooldown := int32(0), int32(0)
	for _, p := range ps {
		if cfg := p.Policy.TargetTrackingScalingPolicyConfiguration; cfg != nil {
			outCooldown = max(outCooldown, ecstypes.Deref(cfg.ScaleOutCooldown))
			inCooldown = max(inCooldown, ecstypes.Deref(cfg.ScaleInCooldown))
		}
	}
	if out != nil && !outSuspended {
		n := min(out.desired, hi)
		if n > cur && !cooling(t.LastScaleOut, outCooldown) {
			s.scale(ctx, sc, r, n, fmt.Sprintf("monitor alarm %s in state ALARM triggered policy %s", out.alarm, out.policy),
				fmt.Sprintf("Setting desired count to %d.", n), true)
		}
		return
	}
	if in != nil && allLow && !inSuspended {
		n := max(in.desired, lo)
		if n < cur && !cooling(t.LastScaleIn, inCooldown) && !cooling(t.LastScaleOut, outCooldown) {
			s.scale(ctx, sc, r, n, fmt.Sprintf("monitor alarm %s in state ALARM triggered policy %s", in.alarm, in.policy),
				fmt.Sprintf("Setting desired count to %d.", n), false)
		}
	}
}

func alarmName(p aastypes.ScalingPolicy, kind string) string {
	for _, a := range p.Alarms {
		if strings.Contains(ecstypes.Deref(a.AlarmName), "-"+kind+"-") {
			return *a.AlarmName
		}
	}
	return "TargetTracking-" + ecstypes.Deref(p.ResourceId) + "-" + kind
}

// windows returns the statistic of the last n periods, newest first; ok is
// false when any period has no data (the alarm has insufficient data).
func (s *Service) windows(ctx context.Context, spec metricSpec, now time.Time, n int) ([]float64, bool) {
	p := s.period()
	vals := make([]float64, 0, n)
	for k := 0; k < n; k++ {
		end := now.Add(-time.Duration(k) * p)
		st, ok, err := s.Metrics.Aggregate(ctx, spec.id, end.Add(-p), end)
		if err != nil || !ok {
			return nil, false
		}
		vals = append(vals, cloudwatch.Statistic(spec.stat, st))
	}
	return vals, true
}

func allAbove(vs []float64, t float64) bool {
	for _, v := range vs {
		if !(v > t) {
			return false
		}
	}
	return true
}

func allBelow(vs []float64, t float64) bool {
	for _, v := range vs {
		if !(v < t) {
			return false
		}
	}
	return true
}

// scale sets the service's desired count and records the activity (and,
// for policy actions, when the target last scaled out or in).
func (s *Service) scale(ctx context.Context, sc model.Scope, r ref, n int32, cause, desc string, out bool) {
	start := s.now()
	act := aastypes.ScalingActivity{
		ActivityId:        ecstypes.String(newID()),
		ServiceNamespace:  ecstypes.String(r.namespace),
		ScalableDimension: ecstypes.String(r.dimension),
		ResourceId:        ecstypes.String(r.resource),
		Description:       &desc,
		Cause:             &cause,
		StartTime:         ecstypes.At(start),
	}
	prev, err := s.ECS.ScaleService(ctx, sc, r.cluster, r.service, n)
	end := s.now()
	act.EndTime = ecstypes.At(end)
	if err != nil {
		act.StatusCode = ecstypes.String("Failed")
		act.StatusMessage = ecstypes.String(fmt.Sprintf("Failed to set desired count to %d. Reason: %v", n, err))
	} else {
		act.StatusCode = ecstypes.String("Successful")
		act.StatusMessage = ecstypes.String(fmt.Sprintf("Successfully set desired count to %d. Change successfully fulfilled by ecs.", n))
		act.Details = ecstypes.String(fmt.Sprintf("Desired count changed from %d to %d.", prev, n))
	}
	if s.Log != nil {
		s.Log.Info("autoscaling: scale", "resource", r.resource, "from", prev, "to", n, "cause", cause, "err", err)
	}
	key := r.key(sc)
	uerr := s.Store.Update(ctx, func(tx state.Tx) error {
		var t targetRecord
		ok, err := tx.Get(KindTarget, key, &t)
		if err != nil {
			return err
		}
		if ok && strings.HasPrefix(cause, "monitor alarm") { // policy actions start cooldowns
			at := start
			if out {
				t.LastScaleOut = &at
			} else {
				t.LastScaleIn = &at
			}
			if err := tx.Put(KindTarget, key, &t); err != nil {
				return err
			}
		}
		akey := fmt.Sprintf("%s/%019d-%s", key, math.MaxInt64-start.UnixNano(), *act.ActivityId)
		if err := tx.Put(KindActivity, akey, &act); err != nil {
			return err
		}
		var old []string
		i := 0
		err = tx.Scan(KindActivity, key+"/", "", 0, func(k string, _ []byte) error {
			if i++; i > maxActivities {
				old = append(old, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if _, err := tx.Delete(KindActivity, k); err != nil {
				return err
			}
		}
		return nil
	})
	if uerr != nil && s.Log != nil {
		s.Log.Warn("autoscaling: record activity", "err", uerr)
	}
}

var albLabel = regexp.MustCompile(`^app/[A-Za-z0-9-]{1,32}/[0-9a-f]+/(targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]+)$`)

// checkALBLabel checks an ALBRequestCountPerTarget ResourceLabel's form
// and returns its TargetGroup dimension (targetgroup/NAME/ID).
func checkALBLabel(label string) (string, error) {
	if label == "" {
		return "", validation("ResourceLabel is required for predefined metric type ALBRequestCountPerTarget: app/<load-balancer-name>/<load-balancer-id>/targetgroup/<target-group-name>/<target-group-id>.")
	}
	m := albLabel.FindStringSubmatch(label)
	if m == nil {
		return "", validation("Invalid ResourceLabel '%s': it must be app/<load-balancer-name>/<load-balancer-id>/targetgroup/<target-group-name>/<target-group-id>.", label)
	}
	return m[1], nil
}
