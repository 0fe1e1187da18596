package ecs

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
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
// replaced, and a task being stopped stays DEACTIVATING, still running,
// until its targets have drained (State "" once a target is no longer
// registered at all).
//
// SyncServiceTargets returns how many targets it registered in each target
// group (by ARN), for the service's "registered N targets" events.
type TargetRegistrar interface {
	SyncServiceTargets(ctx context.Context, serviceARN string, targets []ServiceTarget) map[string]int
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
// tasks the service still wants. A DEACTIVATING task is no longer among
// them, so this is where its targets start draining. It returns what the
// registrar registered, by target group.
func (s *Service) syncTargets(ctx context.Context, p *pass) map[string]int {
	if s.Targets == nil {
		return nil
	}
	svc := p.svc()
	var want []ServiceTarget
	if ecstypes.Deref(svc.Status) == "ACTIVE" {
		for _, r := range p.tasks {
			if !taskRunning(&r.Task) {
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
	return s.Targets.SyncServiceTargets(ctx, ecstypes.Deref(svc.ServiceArn), want)
}

// registerEvents writes ECS's "registered N targets" events for what
// syncTargets registered. They come after the pass's transaction because
// only the registrar knows which targets were new (a target group deleted
// under the service registers nothing, and must not repeat the event on
// every pass).
func (s *Service) registerEvents(ctx context.Context, key string, registered map[string]int) error {
	if len(registered) == 0 {
		return nil
	}
	return s.Store.Update(ctx, func(tx state.Tx) error {
		var rec model.ServiceRecord
		ok, err := tx.Get(model.KindService, key, &rec)
		if err != nil || !ok {
			return err
		}
		// In the order of the service's loadBalancers, as the user wrote them.
		var seen []string
		for _, lt := range lbTargets(&rec.Service) {
			n := registered[lt.TargetGroupARN]
			if n == 0 || slices.Contains(seen, lt.TargetGroupARN) {
				continue
			}
			seen = append(seen, lt.TargetGroupARN)
			serviceEvent(&rec, s.now(), "registered %d targets in (target-group %s)", n, lt.TargetGroupARN)
		}
		if len(seen) == 0 {
			return nil
		}
		return tx.Put(model.KindService, key, &rec)
	})
}

// deactivating is a task whose targets are draining before it is stopped:
// ECS's DEACTIVATING, desiredStatus already STOPPED, its containers still
// running. The state is stored, so a restarted server finishes the drain.
func deactivating(t *ecstypes.Task) bool { return ecstypes.Deref(t.LastStatus) == "DEACTIVATING" }

// registeredTargets are the target groups (of tgs) in which the task at ip
// still has a target, draining or not.
func registeredTargets(reg TargetRegistrar, tgs []ServiceTarget, ip string) []string {
	if reg == nil || ip == "" {
		return nil
	}
	var out []string
	for _, lt := range tgs {
		if reg.TargetHealth(lt.TargetGroupARN, ip, lt.Port).State != "" {
			out = append(out, lt.TargetGroupARN)
		}
	}
	return out
}

// drainEvents are the service events ECS writes when it starts draining
// tasks' targets.
func drainEvents(rec *model.ServiceRecord, now time.Time, n int, tgs []string) {
	for _, tg := range tgs {
		serviceEvent(rec, now, "deregistered %d targets in (target-group %s)", n, tg)
	}
	serviceEvent(rec, now, "has begun draining connections on %d tasks.", n)
}

// deactivateForUser is StopTask's side of draining: a RUNNING service task
// with targets in its service's target groups is deregistered first, as
// ECS does, and only stopped once they have drained (the scheduler's
// finishDrains). r already carries the user's stop; the service's events
// are written in the same transaction. It reports whether the task is
// left DEACTIVATING.
func (s *Service) deactivateForUser(tx state.Tx, sc model.Scope, cluster string, r *model.TaskRecord) (bool, error) {
	name, ok := strings.CutPrefix(ecstypes.Deref(r.Task.Group), "service:")
	if !ok || s.Targets == nil || ecstypes.Deref(r.Task.LastStatus) != "RUNNING" {
		return false, nil
	}
	rec, key, err := getService(tx, sc, cluster, name)
	if err != nil || rec == nil {
		return false, err
	}
	tgs := registeredTargets(s.Targets, lbTargets(&rec.Service), taskIP(r))
	if len(tgs) == 0 {
		return false, nil
	}
	r.Task.LastStatus = ecstypes.String("DEACTIVATING")
	drainEvents(rec, s.now(), 1, tgs)
	return true, tx.Put(model.KindService, key, rec)
}
