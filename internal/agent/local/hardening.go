package local

import (
	"context"

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
