package ecs

import (
	"cmp"
	"context"
	"fmt"
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
// their own); container runs them with runc on the host's kernel. A cluster
// created without the setting gets the server's default
// (Service.DefaultIsolation), written into its settings, so DescribeClusters
// says what its tasks get and a server restarted with another default does
// not change existing clusters. Tasks keep the isolation they started with;
// DescribeTasks shows it as the task attribute gantry.isolation.
const (
	settingIsolation   = "isolation"
	attributeIsolation = "gantry.isolation"
)

// clusterIsolation is the isolation the cluster's new tasks get. Clusters
// made before the setting existed have none and ran containers.
func clusterIsolation(c *ecstypes.Cluster) string {
	for _, st := range c.Settings {
		if st != nil && ecstypes.Deref(st.Name) == settingIsolation {
			return ecstypes.Deref(st.Value)
		}
	}
	return agent.IsolationContainer
}

// newClusterIsolation is the isolation setting of a cluster created
// without one.
func (s *Service) newClusterIsolation() *ecstypes.ClusterSetting {
	v := s.DefaultIsolation
	if v == "" {
		v = agent.IsolationContainer
	}
	return &ecstypes.ClusterSetting{Name: ecstypes.String(settingIsolation), Value: ecstypes.String(v)}
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
	if want, _ := isolationSetting(settings); want != agent.IsolationSandbox {
		return nil
	}
	why, err := s.sandboxUnavailable(ctx)
	if err != nil || why == "" {
		return err
	}
	return awsapi.InvalidParameter("Sandbox isolation is not available on this host: %s", why)
}

// isolationSetting is the value of settings' isolation setting, if given.
func isolationSetting(settings []*ecstypes.ClusterSetting) (string, bool) {
	want, given := "", false
	for _, st := range settings {
		if st != nil && ecstypes.Deref(st.Name) == settingIsolation {
			want, given = ecstypes.Deref(st.Value), true
		}
	}
	return want, given
}

// sandboxUnavailable is why this host's agent cannot run sandboxes, "" if
// it can (or there is no agent to ask).
func (s *Service) sandboxUnavailable(ctx context.Context) (string, error) {
	if s.Controller == nil || s.Controller.Agent == nil {
		return "", nil
	}
	info, err := s.Controller.Agent.Info(ctx)
	if err != nil || slices.Contains(info.Isolations, agent.IsolationSandbox) {
		return "", err
	}
	return cmp.Or(info.SandboxUnavailable, "the host's agent does not offer it"), nil
}

// IsolationAuto asks for sandbox isolation where the host can run
// sandboxes, and container isolation where it cannot.
const IsolationAuto = "auto"

// ResolveDefaultIsolation turns the server's --default-isolation (sandbox,
// the default; container; or auto) into what new clusters get on this
// host, and why sandbox isolation cannot be had here, if it cannot.
// Sandbox never quietly becomes container: on a host without a working
// runsc, new clusters still default to sandbox and CreateCluster refuses
// them until the host is fixed or the server is told otherwise. The server
// keeps starting so that clusters already set to container, and the other
// services, stay usable. auto picks container there.
func ResolveDefaultIsolation(want string, host agent.HostInfo) (isolation, unavailable string, err error) {
	if !slices.Contains(host.Isolations, agent.IsolationSandbox) {
		unavailable = cmp.Or(host.SandboxUnavailable, "the host's agent does not offer it")
	}
	switch want {
	case agent.IsolationContainer:
		return want, unavailable, nil
	case agent.IsolationSandbox, "":
		return agent.IsolationSandbox, unavailable, nil
	case IsolationAuto:
		if unavailable == "" {
			return agent.IsolationSandbox, "", nil
		}
		return agent.IsolationContainer, unavailable, nil
	}
	return "", "", fmt.Errorf("default isolation %q: want %s, %s or %s", want, agent.IsolationSandbox, agent.IsolationContainer, IsolationAuto)
}

// checkDefaultIsolation refuses to create a cluster without the isolation
// setting while the server's default is sandbox and this host cannot run
// sandboxes. The user did not ask for sandbox, so it is a ClientException
// (not a bad parameter) that says which setting decides and both ways out.
func (s *Service) checkDefaultIsolation(ctx context.Context, settings []*ecstypes.ClusterSetting) error {
	if _, given := isolationSetting(settings); given || s.DefaultIsolation != agent.IsolationSandbox {
		return nil
	}
	why, err := s.sandboxUnavailable(ctx)
	if err != nil || why == "" {
		return err
	}
	return awsapi.ClientException("Clusters created without the isolation setting get this server's default, isolation=sandbox, "+
		"but sandbox isolation is not available on this host: %s. Create the cluster with --settings name=isolation,value=container, "+
		"or install gVisor's runsc (scripts/build-runsc.sh) and restart the server.", why)
}
