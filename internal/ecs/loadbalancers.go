package ecs

import (
	"context"
	"sync"
	"time"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
)

// TargetRegistrar is the load balancer side of services with
// loadBalancers (internal/elbv2 implements it). After every scheduler pass
// it is told the targets the service wants registered right now: the
// private address and container port of each of its RUNNING tasks that is
// not being stopped, in each of its target groups. It registers the new
// ones and starts draining the ones the service registered before and no
// longer wants. It must be cheap when nothing changed.
//
// TargetHealth is how the scheduler sees what the load balancer sees, as
// ECS does: a task counts as healthy for a deployment only once its
// targets pass their health checks, a task whose target fails them is
// replaced, and a task being stopped keeps running until its targets have
// drained (State "" once a target is no longer registered at all).
type TargetRegistrar interface {
	SyncServiceTargets(ctx context.Context, serviceARN string, targets []ServiceTarget)
	TargetHealth(targetGroupARN, ip string, port int32) TargetHealth
}

// ServiceTarget is one task address in one target group.
type ServiceTarget struct {
	TargetGroupARN string
	IP             string
	Port           int32
}

// TargetHealth is a target's state as DescribeTargetHealth words it
// (initial, healthy, unhealthy, draining, unavailable), or "" when the
// target is not registered.
type TargetHealth struct {
	State, Reason, Description string
}

// drainSet holds the tasks the scheduler has decided to stop but keeps
// running while their targets drain. It is memory only: after a restart
// the targets are still draining in the store, such a task no longer
// counts as healthy, so the first pass picks it again and waits the rest
// of its drain.
type drainSet struct {
	mu sync.Mutex
	m  map[string]drainingTask // by task ARN
}

type drainingTask struct {
	reason string
	since  time.Time
}

func (d *drainSet) get(arn string) (drainingTask, bool) {
	if d == nil {
		return drainingTask{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.m[arn]
	return t, ok
}

func (d *drainSet) add(arn string, t drainingTask) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.m[arn]; ok {
		return false
	}
	if d.m == nil {
		d.m = map[string]drainingTask{}
	}
	d.m[arn] = t
	return true
}

func (d *drainSet) remove(arn string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, arn)
}

// lbTargets are a service's target groups and container ports.
func lbTargets(svc *ecstypes.Service) []ServiceTarget {
	var out []ServiceTarget
	for _, lb := range svc.LoadBalancers {
		if lb == nil || ecstypes.Deref(lb.TargetGroupArn) == "" || lb.ContainerPort == nil {
			continue
		}
		out = append(out, ServiceTarget{TargetGroupARN: *lb.TargetGroupArn, Port: *lb.ContainerPort})
	}
	return out
}

func taskIP(r *model.TaskRecord) string {
	for _, a := range r.Task.Attachments {
		for _, d := range a.Details {
			if ecstypes.Deref(d.Name) == "privateIPv4Address" {
				return ecstypes.Deref(d.Value)
			}
		}
	}
	return ""
}

// syncTargets tells the registrar what the pass left running: its RUNNING
// tasks, less those draining before their stop.
func (s *Service) syncTargets(ctx context.Context, p *pass) {
	if s.Targets == nil {
		return
	}
	svc := p.svc()
	var want []ServiceTarget
	if ecstypes.Deref(svc.Status) == "ACTIVE" {
		for _, r := range p.tasks {
			if !taskRunning(&r.Task) || p.draining(r) {
				continue
			}
			ip := taskIP(r)
			if ip == "" {
				continue
			}
			for _, t := range lbTargets(svc) {
				t.IP = ip
				want = append(want, t)
			}
		}
	}
	s.Targets.SyncServiceTargets(ctx, ecstypes.Deref(svc.ServiceArn), want)
}
