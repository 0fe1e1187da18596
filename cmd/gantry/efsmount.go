package main

import (
	"context"

	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// runEFSMount is the hidden `gantry efs-mount`: the helper the agent runs
// for each task's mount of an EFS access point with a POSIX user
// (internal/efsfuse). Not for users; it takes its root directory and a
// status pipe as inherited descriptors.
func runEFSMount(ctx context.Context, args []string) error {
	return efsfuse.Main(ctx, args)
}
