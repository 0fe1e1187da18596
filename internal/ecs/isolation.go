package ecs

import (
	"context"
	"slices"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// Isolation is a cluster setting of Gantry's own (ECS knows only
// containerInsights; the CLI and SDKs pass other names through):
//
//	aws ecs create-cluster --cluster-name c --settings name=isolation,value=sandbox
//
// sandbox runs each task's containers in gVisor (a user-space kernel of
// their own); container, the default, runs them with runc on the host's
// kernel. Tasks keep the isolation they started with; DescribeTasks shows
// it as the task attribute gantry.isolation.
const (
	settingIsolation   = "isolation"
	attributeIsolation = "gantry.isolation"
	defaultIsolation   = agent.IsolationContainer
)

// clusterIsolation is the isolation the cluster's new tasks get.
func clusterIsolation(c *ecstypes.Cluster) string {
	for _, st := range c.Settings {
		if st != nil && ecstypes.Deref(st.Name) == settingIsolation {
			return ecstypes.Deref(st.Value)
		}
	}
	return defaultIsolation
}

func validIsolationSetting(value string) error {
	switch value {
	case agent.IsolationSandbox, agent.IsolationContainer:
		return nil
	}
	return awsapi.InvalidParameter("The value for the isolation setting must be one of: sandbox, container.")
}

// checkIsolationAvailable refuses settings asking for sandbox isolation on
// a host that cannot run sandboxes, with the host's reason: a sandbox
// cluster whose tasks would silently run in plain containers would be a
// lie about its isolation.
func (s *Service) checkIsolationAvailable(ctx context.Context, settings []*ecstypes.ClusterSetting) error {
	want := ""
	for _, st := range settings {
		if st != nil && ecstypes.Deref(st.Name) == settingIsolation {
			want = ecstypes.Deref(st.Value)
		}
	}
	if want != agent.IsolationSandbox || s.Controller == nil || s.Controller.Agent == nil {
		return nil
	}
	info, err := s.Controller.Agent.Info(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(info.Isolations, agent.IsolationSandbox) {
		why := info.SandboxUnavailable
		if why == "" {
			why = "the host's agent does not offer it"
		}
		return awsapi.InvalidParameter("Sandbox isolation is not available on this host: %s", why)
	}
	return nil
}
