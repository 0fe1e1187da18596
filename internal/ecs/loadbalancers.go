package ecs

import (
	"context"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// TargetRegistrar is the load balancer side of services with
// loadBalancers (internal/elbv2 implements it). After every scheduler pass
// it is told the targets the service wants registered right now: the
// private address and container port of each of its RUNNING tasks that is
// not being stopped, in each of its target groups. It registers the new
// ones and starts draining the ones the service registered before and no
// longer wants. It must be cheap when nothing changed.
type TargetRegistrar interface {
	SyncServiceTargets(ctx context.Context, serviceARN string, targets []ServiceTarget)
}

// ServiceTarget is one task address in one target group.
type ServiceTarget struct {
	TargetGroupARN string
	IP             string
	Port           int32
}

// syncTargets tells the registrar what the pass left running.
func (s *Service) syncTargets(ctx context.Context, p *pass) {
	if s.Targets == nil {
		return
	}
	svc := p.svc()
	var want []ServiceTarget
	if ecstypes.Deref(svc.Status) == "ACTIVE" {
		for _, r := range p.tasks {
			if !taskRunning(&r.Task) {
				continue
			}
			ip := ""
			for _, a := range r.Task.Attachments {
				for _, d := range a.Details {
					if ecstypes.Deref(d.Name) == "privateIPv4Address" {
						ip = ecstypes.Deref(d.Value)
					}
				}
			}
			if ip == "" {
				continue
			}
			for _, lb := range svc.LoadBalancers {
				if lb == nil || ecstypes.Deref(lb.TargetGroupArn) == "" || lb.ContainerPort == nil {
					continue
				}
				want = append(want, ServiceTarget{TargetGroupARN: *lb.TargetGroupArn, IP: ip, Port: *lb.ContainerPort})
			}
		}
	}
	s.Targets.SyncServiceTargets(ctx, ecstypes.Deref(svc.ServiceArn), want)
}
