// Package autoscaling is Application Auto Scaling (JSON 1.1,
// AnyScaleFrontendService) for ECS services: scalable targets on
// ecs:service:DesiredCount, target-tracking policies evaluated from the
// CloudWatch metrics Gantry stores, and the scaling activities they cause.
// Targets, policies and activities are state documents; the scaler changes
// a service's desired count only through ecs.Service.ScaleService.
package autoscaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/elbv2"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// TargetPrefix is Application Auto Scaling's X-Amz-Target prefix.
const TargetPrefix = "AnyScaleFrontendService"

// Document kinds, keyed ACCOUNT/REGION/NAMESPACE/DIMENSION/RESOURCE[/...]
// (KindScheduled too, in schedule.go).
const (
	KindTarget   = "aas.target"   // targetKey -> targetRecord
	KindPolicy   = "aas.policy"   // targetKey/policyName -> policyRecord
	KindActivity = "aas.activity" // targetKey/inverted time -> ScalingActivity
)

const (
	ecsDimension = "ecs:service:DesiredCount"
	// defaultCooldown is ScaleOut/ScaleInCooldown when a policy gives none.
	defaultCooldown = 300
	// maxActivities are kept per target, newest first.
	maxActivities = 100
)

// Scaler changes a service's desired count; ecs.Service implements it.
type Scaler interface {
	ScaleService(ctx context.Context, sc model.Scope, cluster, name string, n int32) (int32, error)
}

// Service serves the API and runs the policy evaluation loop.
type Service struct {
	Store   state.Store
	Metrics *cloudwatch.Store
	ECS     Scaler
	Log     *slog.Logger
	// Period is the length of one alarm datapoint (default one minute, as
	// target tracking's alarms use): scale out after 3 periods above the
	// target, in after 15 below 90% of it, as AWS's alarms do.
	Period time.Duration
	Now    func() time.Time

	stop context.CancelFunc
	done chan struct{}
}

type targetRecord struct {
	Target       aastypes.ScalableTarget `json:"target"`
	Tags         map[string]string       `json:"tags,omitempty"`
	LastScaleOut *time.Time              `json:"lastScaleOut,omitempty"`
	LastScaleIn  *time.Time              `json:"lastScaleIn,omitempty"`
}

type policyRecord struct {
	Policy aastypes.ScalingPolicy `json:"policy"`
	// LastStep is when a step scaling policy last changed the capacity,
	// for its cooldown.
	LastStep *time.Time `json:"lastStep,omitempty"`
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) period() time.Duration {
	if s.Period > 0 {
		return s.Period
	}
	return time.Minute
}

// JSON returns the operations to mount on the AWS router.
func (s *Service) JSON() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"RegisterScalableTarget":    awsapi.Op(s.registerScalableTarget),
		"DescribeScalableTargets":   awsapi.Op(s.describeScalableTargets),
		"DeregisterScalableTarget":  awsapi.Op(s.deregisterScalableTarget),
		"PutScalingPolicy":          awsapi.Op(s.putScalingPolicy),
		"DescribeScalingPolicies":   awsapi.Op(s.describeScalingPolicies),
		"DeleteScalingPolicy":       awsapi.Op(s.deleteScalingPolicy),
		"DescribeScalingActivities": awsapi.Op(s.describeScalingActivities),
		"PutScheduledAction":        awsapi.Op(s.putScheduledAction),
		"DescribeScheduledActions":  awsapi.Op(s.describeScheduledActions),
		"DeleteScheduledAction":     awsapi.Op(s.deleteScheduledAction),
	}}
}

func validation(format string, args ...any) error {
	return awsapi.Errorf("ValidationException", format, args...)
}

func scopeOf(ctx context.Context) model.Scope {
	id := awsapi.IdentityFrom(ctx)
	return model.Scope{Account: id.Account, Region: id.Region}
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var ecsResource = regexp.MustCompile(`^service/([A-Za-z0-9_-]{1,255})/([A-Za-z0-9_-]{1,255})$`)

// ref is a scalable target's identity.
type ref struct {
	namespace, dimension, resource string
	cluster, service               string
}

func (r ref) key(sc model.Scope) string {
	return sc.Prefix() + r.namespace + "/" + r.dimension + "/" + r.resource
}

// checkRef validates the three identifying parameters; only ECS services
// are scalable here.
func checkRef(ns, dim, res *string) (ref, error) {
	switch {
	case ecstypes.Deref(ns) == "":
		return ref{}, validation("1 validation error detected: Value null at 'serviceNamespace' failed to satisfy constraint: Member must not be null")
	case ecstypes.Deref(res) == "":
		return ref{}, validation("1 validation error detected: Value null at 'resourceId' failed to satisfy constraint: Member must not be null")
	case ecstypes.Deref(dim) == "":
		return ref{}, validation("1 validation error detected: Value null at 'scalableDimension' failed to satisfy constraint: Member must not be null")
	}
	r := ref{namespace: *ns, dimension: *dim, resource: *res}
	if !contains(aastypes.Enums["ServiceNamespace"], r.namespace) {
		return ref{}, validation("1 validation error detected: Value '%s' at 'serviceNamespace' failed to satisfy constraint: Member must satisfy enum value set: %v", r.namespace, aastypes.Enums["ServiceNamespace"])
	}
	if r.namespace != "ecs" {
		return ref{}, validation("Unsupported service namespace %s: this endpoint scales ecs services only.", r.namespace)
	}
	if !contains(aastypes.Enums["ScalableDimension"], r.dimension) {
		return ref{}, validation("1 validation error detected: Value '%s' at 'scalableDimension' failed to satisfy constraint: Member must satisfy enum value set: %v", r.dimension, aastypes.Enums["ScalableDimension"])
	}
	if r.dimension != ecsDimension {
		return ref{}, validation("Unsupported scalable dimension %s for service namespace ecs.", r.dimension)
	}
	m := ecsResource.FindStringSubmatch(r.resource)
	if m == nil {
		return ref{}, validation("Unsupported resource ID format %s: ECS resource IDs look like service/CLUSTER/SERVICE.", r.resource)
	}
	r.cluster, r.service = m[1], m[2]
	return r, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func activeService(tx state.Tx, sc model.Scope, r ref) (*model.ServiceRecord, error) {
	var rec model.ServiceRecord
	ok, err := tx.Get(model.KindService, sc.ServiceKey(r.cluster, r.service), &rec)
	if err != nil {
		return nil, err
	}
	if !ok || ecstypes.Deref(rec.Service.Status) != "ACTIVE" {
		return nil, nil
	}
	return &rec, nil
}

func notFound(r ref) error {
	return awsapi.Errorf("ObjectNotFoundException", "No scalable target registered for service namespace: %s, resource ID: %s, scalable dimension: %s", r.namespace, r.resource, r.dimension)
}

func (s *Service) registerScalableTarget(ctx context.Context, in *aastypes.RegisterScalableTargetRequest) (*aastypes.RegisterScalableTargetResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	for name, p := range map[string]*int32{"minCapacity": in.MinCapacity, "maxCapacity": in.MaxCapacity} {
		if p != nil && *p < 0 {
			return nil, validation("1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to 0", *p, name)
		}
	}
	sc := scopeOf(ctx)
	now := s.now()
	var out *aastypes.RegisterScalableTargetResponse
	var clamp *int32
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		clamp = nil
		svc, err := activeService(tx, sc, r)
		if err != nil {
			return err
		}
		if svc == nil {
			return validation("ECS service doesn't exist: %s", r.resource)
		}
		var rec targetRecord
		found, err := tx.Get(KindTarget, r.key(sc), &rec)
		if err != nil {
			return err
		}
		if !found {
			if in.MinCapacity == nil || in.MaxCapacity == nil {
				return validation("MinCapacity and MaxCapacity are required for registering a new scalable target.")
			}
			rec = targetRecord{Target: aastypes.ScalableTarget{
				ServiceNamespace:  &r.namespace,
				ScalableDimension: &r.dimension,
				ResourceId:        &r.resource,
				CreationTime:      ecstypes.At(now),
				ScalableTargetARN: ecstypes.String(fmt.Sprintf("arn:aws:application-autoscaling:%s:%s:scalable-target/%s", sc.Region, sc.Account, strings.ReplaceAll(newID(), "-", "")[:28])),
				RoleARN:           ecstypes.String(fmt.Sprintf("arn:aws:iam::%s:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService", sc.Account)),
				SuspendedState:    &aastypes.SuspendedState{DynamicScalingInSuspended: ecstypes.Bool(false), DynamicScalingOutSuspended: ecstypes.Bool(false), ScheduledScalingSuspended: ecstypes.Bool(false)},
			}}
		}
		t := &rec.Target
		if in.MinCapacity != nil {
			t.MinCapacity = in.MinCapacity
		}
		if in.MaxCapacity != nil {
			t.MaxCapacity = in.MaxCapacity
		}
		if *t.MinCapacity > *t.MaxCapacity {
			return validation("Minimum capacity cannot be greater than maximum capacity")
		}
		if in.RoleARN != nil {
			t.RoleARN = in.RoleARN
		}
		if ss := in.SuspendedState; ss != nil {
			if ss.DynamicScalingInSuspended != nil {
				t.SuspendedState.DynamicScalingInSuspended = ss.DynamicScalingInSuspended
			}
			if ss.DynamicScalingOutSuspended != nil {
				t.SuspendedState.DynamicScalingOutSuspended = ss.DynamicScalingOutSuspended
			}
			if ss.ScheduledScalingSuspended != nil {
				t.SuspendedState.ScheduledScalingSuspended = ss.ScheduledScalingSuspended
			}
		}
		if len(in.Tags) > 0 && !found {
			rec.Tags = in.Tags
		}
		// A desired count outside the new range is brought into it.
		if cur := ecstypes.Deref(svc.Service.DesiredCount); cur < *t.MinCapacity {
			clamp = t.MinCapacity
		} else if cur > *t.MaxCapacity {
			clamp = t.MaxCapacity
		}
		out = &aastypes.RegisterScalableTargetResponse{ScalableTargetARN: t.ScalableTargetARN}
		return tx.Put(KindTarget, r.key(sc), &rec)
	})
	if err != nil {
		return nil, err
	}
	if clamp != nil {
		s.scale(ctx, sc, r, *clamp, "monitor capacity range", fmt.Sprintf("Setting desired count to %d.", *clamp), true)
	}
	return out, nil
}

// page applies MaxResults (1-50, default 50) and a NextToken (an offset).
func page(n int, max *int32, token *string) (lo, hi int, next *string, err error) {
	limit := 50
	if max != nil {
		if *max < 1 || *max > 50 {
			return 0, 0, nil, validation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 50", *max)
		}
		limit = int(*max)
	}
	if t := ecstypes.Deref(token); t != "" {
		v, err := strconv.Atoi(t)
		if err != nil || v < 0 {
			return 0, 0, nil, awsapi.Errorf("InvalidNextTokenException", "Invalid token")
		}
		lo = v
	}
	lo = min(lo, n)
	hi = min(lo+limit, n)
	if hi < n {
		next = ecstypes.String(strconv.Itoa(hi))
	}
	return lo, hi, next, nil
}

func checkNamespace(ns *string) error {
	if ecstypes.Deref(ns) == "" {
		return validation("1 validation error detected: Value null at 'serviceNamespace' failed to satisfy constraint: Member must not be null")
	}
	if !contains(aastypes.Enums["ServiceNamespace"], *ns) {
		return validation("1 validation error detected: Value '%s' at 'serviceNamespace' failed to satisfy constraint: Member must satisfy enum value set: %v", *ns, aastypes.Enums["ServiceNamespace"])
	}
	return nil
}

func (s *Service) describeScalableTargets(ctx context.Context, in *aastypes.DescribeScalableTargetsRequest) (*aastypes.DescribeScalableTargetsResponse, error) {
	q := query{namespace: in.ServiceNamespace, dimension: in.ScalableDimension, resources: in.ResourceIds, max: in.MaxResults, token: in.NextToken}
	items, next, err := describe(ctx, s, KindTarget, q, func(r *targetRecord) (*aastypes.ScalableTarget, string, string, string) {
		return &r.Target, *r.Target.ScalableDimension, *r.Target.ResourceId, ""
	})
	return &aastypes.DescribeScalableTargetsResponse{ScalableTargets: items, NextToken: next}, err
}

func (s *Service) deregisterScalableTarget(ctx context.Context, in *aastypes.DeregisterScalableTargetRequest) (*aastypes.DeregisterScalableTargetResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	sc := scopeOf(ctx)
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(KindTarget, r.key(sc))
		if err != nil {
			return err
		}
		if !ok {
			return notFound(r)
		}
		// Its policies and scheduled actions go with it; its activities
		// stay describable.
		for _, kind := range []string{KindPolicy, KindScheduled} {
			var keys []string
			err = tx.Scan(kind, r.key(sc)+"/", "", 0, func(k string, _ []byte) error {
				keys = append(keys, k)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range keys {
				if _, err := tx.Delete(kind, k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &aastypes.DeregisterScalableTargetResponse{}, nil
}

var policyName = regexp.MustCompile(`^[[:print:]]{1,256}$`)

func (s *Service) putScalingPolicy(ctx context.Context, in *aastypes.PutScalingPolicyRequest) (*aastypes.PutScalingPolicyResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	name := ecstypes.Deref(in.PolicyName)
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'policyName' failed to satisfy constraint: Member must not be null")
	}
	if !policyName.MatchString(name) || strings.Contains(name, ":") || strings.Contains(name, "/") {
		return nil, validation("1 validation error detected: Value '%s' at 'policyName' failed to satisfy constraint: Member must satisfy regular expression pattern: \\p{Print}+ (without ':' or '/'), length 1-256", name)
	}
	typ := ecstypes.Deref(in.PolicyType)
	if typ == "" {
		typ = "StepScaling"
	}
	if !contains(aastypes.Enums["PolicyType"], typ) {
		return nil, validation("1 validation error detected: Value '%s' at 'policyType' failed to satisfy constraint: Member must satisfy enum value set: %v", typ, aastypes.Enums["PolicyType"])
	}
	if typ == "StepScaling" {
		return s.putStepPolicy(ctx, r, name, in)
	}
	if typ != "TargetTrackingScaling" {
		return nil, validation("Policy type %s is not supported by this endpoint: use TargetTrackingScaling or StepScaling.", typ)
	}
	cfg := in.TargetTrackingScalingPolicyConfiguration
	if cfg == nil {
		return nil, validation("TargetTrackingScalingPolicyConfiguration is required for a policy of type TargetTrackingScaling.")
	}
	if in.StepScalingPolicyConfiguration != nil || in.PredictiveScalingPolicyConfiguration != nil {
		return nil, validation("Only TargetTrackingScalingPolicyConfiguration may be given for a policy of type TargetTrackingScaling.")
	}
	if cfg.TargetValue == nil {
		return nil, validation("1 validation error detected: Value null at 'targetTrackingScalingPolicyConfiguration.targetValue' failed to satisfy constraint: Member must not be null")
	}
	if *cfg.TargetValue < 8.515920e-109 || *cfg.TargetValue > 6.174597e+307 {
		return nil, validation("The target value must be greater than 0 (and at most 6.174597e+307).")
	}
	for name, p := range map[string]*int32{"scaleInCooldown": cfg.ScaleInCooldown, "scaleOutCooldown": cfg.ScaleOutCooldown} {
		if p != nil && (*p < 0 || *p > 31536000) {
			return nil, validation("1 validation error detected: Value '%d' at 'targetTrackingScalingPolicyConfiguration.%s' failed to satisfy constraint: Member must have value between 0 and 31536000", *p, name)
		}
	}
	if _, err := policyMetric(model.Scope{}, r, cfg); err != nil {
		return nil, err
	}
	if cfg.ScaleInCooldown == nil {
		cfg.ScaleInCooldown = ecstypes.Int32(defaultCooldown)
	}
	if cfg.ScaleOutCooldown == nil {
		cfg.ScaleOutCooldown = ecstypes.Int32(defaultCooldown)
	}
	if cfg.DisableScaleIn == nil {
		cfg.DisableScaleIn = ecstypes.Bool(false)
	}
	sc := scopeOf(ctx)
	now := s.now()
	var out *aastypes.PutScalingPolicyResponse
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		var t targetRecord
		ok, err := tx.Get(KindTarget, r.key(sc), &t)
		if err != nil {
			return err
		}
		if !ok {
			return notFound(r)
		}
		if pre := cfg.PredefinedMetricSpecification; pre != nil && ecstypes.Deref(pre.PredefinedMetricType) == "ALBRequestCountPerTarget" {
			if err := elbv2.CheckResourceLabel(tx, sc.Account, sc.Region, ecstypes.Deref(pre.ResourceLabel)); err != nil {
				return validation("Invalid ResourceLabel '%s': %v.", ecstypes.Deref(pre.ResourceLabel), err)
			}
		}
		var rec policyRecord
		ok, err = tx.Get(KindPolicy, r.key(sc)+"/"+name, &rec)
		if err != nil {
			return err
		}
		if !ok {
			id := newID()
			alarm := func(kind string) *aastypes.Alarm {
				n := fmt.Sprintf("TargetTracking-%s-%s-%s", r.resource, kind, newID())
				return &aastypes.Alarm{AlarmName: &n, AlarmARN: ecstypes.String(fmt.Sprintf("arn:aws:cloudwatch:%s:%s:alarm:%s", sc.Region, sc.Account, n))}
			}
			rec.Policy = aastypes.ScalingPolicy{
				PolicyARN:    ecstypes.String(fmt.Sprintf("arn:aws:autoscaling:%s:%s:scalingPolicy:%s:resource/%s/%s:policyName/%s", sc.Region, sc.Account, id, r.namespace, r.resource, name)),
				PolicyName:   &name,
				CreationTime: ecstypes.At(now),
				Alarms:       []*aastypes.Alarm{alarm("AlarmHigh"), alarm("AlarmLow")},
			}
		}
		p := &rec.Policy
		p.PolicyType = &typ
		p.ServiceNamespace, p.ScalableDimension, p.ResourceId = &r.namespace, &r.dimension, &r.resource
		p.TargetTrackingScalingPolicyConfiguration = cfg
		out = &aastypes.PutScalingPolicyResponse{PolicyARN: p.PolicyARN, Alarms: p.Alarms}
		return tx.Put(KindPolicy, r.key(sc)+"/"+name, &rec)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Service) describeScalingPolicies(ctx context.Context, in *aastypes.DescribeScalingPoliciesRequest) (*aastypes.DescribeScalingPoliciesResponse, error) {
	q := query{namespace: in.ServiceNamespace, dimension: in.ScalableDimension, resources: one(in.ResourceId), names: in.PolicyNames, max: in.MaxResults, token: in.NextToken}
	items, next, err := describe(ctx, s, KindPolicy, q, func(r *policyRecord) (*aastypes.ScalingPolicy, string, string, string) {
		return &r.Policy, *r.Policy.ScalableDimension, *r.Policy.ResourceId, *r.Policy.PolicyName
	})
	return &aastypes.DescribeScalingPoliciesResponse{ScalingPolicies: items, NextToken: next}, err
}

func (s *Service) deleteScalingPolicy(ctx context.Context, in *aastypes.DeleteScalingPolicyRequest) (*aastypes.DeleteScalingPolicyResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	name := ecstypes.Deref(in.PolicyName)
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'policyName' failed to satisfy constraint: Member must not be null")
	}
	sc := scopeOf(ctx)
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(KindPolicy, r.key(sc)+"/"+name)
		if err != nil {
			return err
		}
		if !ok {
			return awsapi.Errorf("ObjectNotFoundException", "No scaling policy found for service namespace: %s, resource ID: %s, scalable dimension: %s, policy name: %s", r.namespace, r.resource, r.dimension, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &aastypes.DeleteScalingPolicyResponse{}, nil
}

func (s *Service) describeScalingActivities(ctx context.Context, in *aastypes.DescribeScalingActivitiesRequest) (*aastypes.DescribeScalingActivitiesResponse, error) {
	q := query{namespace: in.ServiceNamespace, dimension: in.ScalableDimension, resources: one(in.ResourceId), max: in.MaxResults, token: in.NextToken}
	items, next, err := describe(ctx, s, KindActivity, q, func(a *aastypes.ScalingActivity) (*aastypes.ScalingActivity, string, string, string) {
		return a, *a.ScalableDimension, *a.ResourceId, ""
	}, func(all []*aastypes.ScalingActivity) {
		// Newest first across targets.
		sort.SliceStable(all, func(i, j int) bool { return all[i].StartTime.After(all[j].StartTime.Time) })
	})
	return &aastypes.DescribeScalingActivitiesResponse{ScalingActivities: items, NextToken: next}, err
}
