package local

// Ephemeral storage. Each task gets an ext4 file system of its own, in a
// sparse file under DataDir/agent/storage, loop-mounted at
// DataDir/agent/storage/<task id>. Its containers' writable layers and its
// volumes live on it, so the size of the file system is the task's cap:
// writing past it is ENOSPC inside the task and nowhere else. These hosts
// have no project quotas (the kernel lacks ext4/XFS quota support) and
// tmpfs would count against the task's memory, hence a file system per
// task. Creating, mounting, unmounting and deleting one takes about 30 ms.
//
// A container's root is an overlay mount: the image's layers read-only
// from a containerd view snapshot, the upper and work directories on the
// task's file system. The view is created with the container, so spec
// options that read the image's /etc/passwd work as usual, but the
// container does not keep it as its snapshot: the rootfs the task gets is
// our overlay (containerd.WithRootFS), which the shim mounts and unmounts.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/images"
)

// defaultEphemeralGiB is Fargate's ephemeral storage when the task
// definition sets none.
const defaultEphemeralGiB = 20

func (a *Agent) storageDir() string           { return filepath.Join(a.cfg.DataDir, "agent", "storage") }
func (a *Agent) taskFS(id string) string      { return filepath.Join(a.storageDir(), id) }
func (a *Agent) taskFSImage(id string) string { return filepath.Join(a.storageDir(), id+".ext4") }

// volumeDir is where a task volume lives on the task's file system.
func (a *Agent) volumeDir(taskID, volume string) string {
	return filepath.Join(a.taskFS(taskID), "volumes", volume)
}

// layerDir holds a container's overlay upper and work directories.
func (a *Agent) layerDir(taskID, ctrID string) string {
	return filepath.Join(a.taskFS(taskID), "containers", ctrID)
}

// ephemeralMiB is the task's cap.
func (a *Agent) ephemeralMiB(spec agent.TaskSpec) int64 {
	if a.cfg.EphemeralMiB > 0 {
		return a.cfg.EphemeralMiB
	}
	gib := int64(spec.EphemeralGiB)
	if gib <= 0 {
		gib = defaultEphemeralGiB
	}
	return gib << 10
}

// mountTaskFS creates and mounts the task's file system, and the
// directories of its volumes. A task that a new agent resumes finds it
// mounted already, data and all.
func (a *Agent) mountTaskFS(spec agent.TaskSpec) error {
	dir, img := a.taskFS(spec.TaskID), a.taskFSImage(spec.TaskID)
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		// An earlier agent stopped before mounting it: nothing was written.
		if err := os.Remove(img); err != nil && !os.IsNotExist(err) {
			return err
		}
		// ext4 without reserved blocks or a journal (the data dies with the
		// task) keeps about 2% for itself, inode tables mostly: this size
		// leaves the task at least its cap (measured from 64 MiB to 200 GiB).
		capMiB := a.ephemeralMiB(spec)
		size := (capMiB + capMiB/50 + 16) << 20
		if err := makeSparse(img, size); err != nil {
			return err
		}
		// Lazy inode tables, never initialised (noinit_itable below): a
		// sparse file reads as zeros already, and the kernel's zeroing
		// thread would otherwise fill hundreds of MiB of the host's disk.
		out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
			"-E", "lazy_itable_init=1,nodiscard", img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mkfs.ext4 (apt package e2fsprogs): %v: %s", err, strings.TrimSpace(string(out)))
		}
		// The loop device is set to detach itself when the file system is
		// unmounted. discard gives deleted files' space back to the host.
		m := mount.Mount{Type: "ext4", Source: img, Options: []string{"loop", "noinit_itable", "discard"}}
		if err := m.Mount(dir); err != nil {
			return fmt.Errorf("mount %s: %w", img, err)
		}
	}
	for _, c := range spec.Containers {
		for _, m := range c.Mounts {
			if m.EFS != nil {
				continue // not on the task's storage: efsDir finds it
			}
			if err := os.MkdirAll(a.volumeDir(spec.TaskID, m.Volume), 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

func makeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// unmountTaskFS removes the task's file system: the mount, its loop device
// and the file; and its EFS access point mounts. It is safe to repeat,
// and to call for a task that never had one. The containers must be gone
// first: their overlays keep it busy.
func (a *Agent) unmountTaskFS(id string) error {
	if err := a.unmountEFS(id); err != nil {
		return fmt.Errorf("EFS mounts: %w", err)
	}
	dir := a.taskFS(id)
	for {
		mounted, err := isMountPoint(dir)
		if err != nil {
			return err
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(dir, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.Remove(a.taskFSImage(id)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func isMountPoint(dir string) (bool, error) {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return false, nil
	}
	info, err := mount.Lookup(dir)
	if err != nil {
		return false, err
	}
	return info.Mountpoint == filepath.Clean(dir), nil
}

// EphemeralStorage is what a running task's ephemeral storage holds
// (utilized) and may hold (reserved, its cap), in MiB: the task metadata
// endpoint's EphemeralStorageMetrics.
func (a *Agent) EphemeralStorage(taskID string) (utilizedMiB, reservedMiB int64, err error) {
	a.mu.Lock()
	t := a.tasks[taskID]
	a.mu.Unlock()
	if t == nil {
		return 0, 0, fmt.Errorf("unknown task %q", taskID)
	}
	dir := a.taskFS(taskID)
	if ok, err := isMountPoint(dir); err != nil || !ok {
		return 0, 0, fmt.Errorf("task %s has no ephemeral storage mounted (%v)", taskID, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	used := int64(st.Blocks-st.Bfree) * st.Bsize
	return used >> 20, a.ephemeralMiB(t.record().Spec), nil
}

// rootfsView makes the read-only view of the image's layers that the
// container's overlay uses as its lower layers. The view is a gc root,
// since no container refers to it; release removes it by its task label.
func (r *runner) rootfsView(ctx context.Context, c *ctr, img containerd.Image) error {
	sn := r.t.a.client.SnapshotService(images.Snapshotter)
	if _, err := sn.Stat(ctx, c.id); err == nil {
		return nil // an earlier attempt made it; the layers are the same
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return err
	}
	parent := identity.ChainID(diffIDs).String()
	labels := map[string]string{
		labelTask:               r.t.id,
		"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339),
	}
	if _, err := sn.View(ctx, c.id, parent, snapshots.WithLabels(labels)); err != nil && !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("image layers of %s: %w", c.spec.Name, err)
	}
	return nil
}

// withSpecSnapshot lends the view to the spec options (oci.WithUser and
// friends read the image's /etc/passwd through the container's snapshot);
// withoutSnapshot takes it back before the container is stored, so that
// containerd gives the task only the rootfs passed to NewTask.
func withSpecSnapshot(key string) containerd.NewContainerOpts {
	return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
		c.Snapshotter, c.SnapshotKey = images.Snapshotter, key
		return nil
	}
}

func withoutSnapshot() containerd.NewContainerOpts {
	return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
		c.Snapshotter, c.SnapshotKey = "", ""
		return nil
	}
}

// rootfs is the container's root: the view's layers under an upper layer
// on the task's file system. fresh empties the upper layer, for a
// container being created (again).
func (r *runner) rootfs(ctx context.Context, c *ctr, fresh bool) ([]mount.Mount, error) {
	view, err := r.t.a.client.SnapshotService(images.Snapshotter).Mounts(ctx, c.id)
	if err != nil {
		return nil, err
	}
	if len(view) != 1 {
		return nil, fmt.Errorf("unexpected image layer mounts %+v", view)
	}
	var lower string
	var opts []string
	switch m := view[0]; m.Type {
	case "bind": // one layer
		lower = m.Source
	case "overlay":
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				lower = v
			} else if o != "ro" {
				opts = append(opts, o)
			}
		}
	}
	if lower == "" {
		return nil, fmt.Errorf("unexpected image layer mount %+v", view[0])
	}
	dir := r.t.a.layerDir(r.t.id, c.id)
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	if fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	opts = append(opts, "lowerdir="+lower, "upperdir="+upper, "workdir="+work)
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

// removeViews removes the task's image views, once its containers are gone.
func (a *Agent) removeViews(ctx context.Context, taskID string) error {
	sn := a.client.SnapshotService(images.Snapshotter)
	var keys []string
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		keys = append(keys, info.Name)
		return nil
	}, fmt.Sprintf("labels.%q==%s", labelTask, taskID))
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if err := sn.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
