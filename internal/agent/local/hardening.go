package local

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// pidsLimit caps the processes (threads included) of each container: a
// fork bomb stops there instead of exhausting the host's pids.
const pidsLimit = 4096

// withHardening is Fargate's container rules on top of containerd's
// default spec, which already gives Docker's default capability set, no
// new privileges, masked /proc paths and read-only /proc/sys, /sys and
// friends, and no host namespaces or host paths beyond the task's own:
// Docker's default seccomp profile and a pids limit. Both modes get it;
// runsc enforces the pids limit on the sandbox's cgroup and has its own
// syscall filter under the application (it applies an OCI seccomp profile
// only with --oci-seccomp).
func withHardening() oci.SpecOpts {
	return oci.Compose(
		seccomp.WithDefaultProfile(),
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Linux.Resources == nil {
				s.Linux.Resources = &specs.LinuxResources{}
			}
			s.Linux.Resources.Pids = &specs.LinuxPids{Limit: pidsLimit}
			s.Process.NoNewPrivileges = true
			return nil
		},
	)
}

// withCapabilities applies a container's linuxParameters.capabilities to
// the default set: drops first, then adds, as Docker and ECS do. Fargate
// lets a task add SYS_PTRACE and nothing else (RegisterTaskDefinition
// refuses the rest); the agent holds to that too, so a record from
// elsewhere cannot widen a container. An added capability goes into the
// bounding, effective and permitted sets. It must run before withHardening:
// Docker's seccomp profile allows ptrace and friends by the capabilities it
// finds in the spec.
func withCapabilities(add, drop []string) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		var dropCaps, addCaps []string
		for _, name := range drop {
			if name == "ALL" {
				if err := oci.WithCapabilities(nil)(ctx, c, ctr, s); err != nil {
					return err
				}
				continue
			}
			dropCaps = append(dropCaps, "CAP_"+name)
		}
		for _, name := range add {
			if name != "SYS_PTRACE" {
				return fmt.Errorf("linuxParameters.capabilities.add: %s is not allowed (Fargate only supports adding SYS_PTRACE)", name)
			}
			addCaps = append(addCaps, "CAP_"+name)
		}
		if err := oci.WithDroppedCapabilities(dropCaps)(ctx, c, ctr, s); err != nil {
			return err
		}
		return oci.WithAddedCapabilities(addCaps)(ctx, c, ctr, s)
	}
}
