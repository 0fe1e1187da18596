package local

import (
	"fmt"

	"github.com/gantry-dev/gantry/internal/agent"
)

// efsMountDenied fails the task, before any container, when the file
// system policy refused one of its EFS volumes elasticfilesystem:
// ClientMount (EFSMount.MountDenied), with the reason the ECS agent gives
// when amazon-efs-utils' mount is refused by the server.
func efsMountDenied(spec agent.TaskSpec) error {
	for _, c := range spec.Containers {
		for _, m := range c.Mounts {
			if m.EFS != nil && m.EFS.MountDenied != "" {
				return fmt.Errorf("ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: "+
					"stderr: b'%s' : unsuccessful EFS utils command execution; code: 32", m.EFS.MountDenied)
			}
		}
	}
	return nil
}
