// Package ecs serves the Amazon ECS API (JSON 1.1,
// AmazonEC2ContainerServiceV20141113) on Gantry's state: the control plane's
// front door. Shapes come from ecstypes, generated from the botocore model.
package ecs

import (
	"context"
	"log/slog"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/controller"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// TargetPrefix is ECS's X-Amz-Target prefix.
const TargetPrefix = "AmazonEC2ContainerServiceV20141113"

// Service implements the ECS operations.
type Service struct {
	Store      state.Store
	Controller *controller.Controller
	Log        *slog.Logger
	Now        func() time.Time

	// Targets, when set, registers services' tasks with their load
	// balancers' target groups (see TargetRegistrar).
	Targets TargetRegistrar

	// DefaultIsolation is the isolation (agent.Isolation*) of clusters
	// created without the isolation setting; empty: container.
	DefaultIsolation string

	// TaskRoles, when set, is asked (in RunTask's transaction) whether ECS
	// could assume a task's role: an *awsapi.Error refuses the task (see
	// checkTaskRole), any other error is a fault.
	TaskRoles func(tx state.Tx, taskARN, roleARN string) error

	sched *serviceScheduler // the service scheduler, once started
}

// JSON returns the operations to mount on the AWS router.
func (s *Service) JSON() *awsapi.JSONService {
	ops := map[string]awsapi.Handler{}
	for _, group := range []map[string]awsapi.Handler{
		s.clusterOps(),
		s.capacityProviderOps(),
		s.taskDefinitionOps(),
		s.taskOps(),
		s.serviceOps(),
		s.tagOps(),
		s.accountSettingOps(),
		s.execOps(),
	} {
		for name, h := range group {
			ops[name] = h
		}
	}
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Ops: ops, Log: s.Log}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// scopeOf is the caller's account and region.
func scopeOf(ctx context.Context) model.Scope {
	id := awsapi.IdentityFrom(ctx)
	return model.Scope{Account: id.Account, Region: id.Region}
}
