package main

import (
	"context"

	"github.com/gantry-dev/gantry/internal/efsnfs"
)

// runEFSNFSMount is the hidden `gantry efs-nfs-mount`: the helper the
// agent runs, in the task's network namespace, for each task's mount of
// an EFS volume over NFS (internal/efsnfs). Not for users.
func runEFSNFSMount(ctx context.Context, args []string) error {
	return efsnfs.Main(ctx, args)
}
