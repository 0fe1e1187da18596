package local

// EFS volumes. On this host a file system is the directory tree
// DataDir/efs/<fs-id> (internal/efs). A task's EFS volume is that tree,
// or a directory inside it (rootDirectory, or an access point's root
// directory), mounted into its containers. Every task mounting the same
// file system sees the same files, live, and they outlive the task. The
// container sees the mount's root as its top: it cannot name anything
// above it, and symlinks it follows resolve in its own mount namespace,
// not on the host.
//
// How the directory reaches the container depends on the identity EFS
// would use:
//   - An access point with a POSIX user: EFS performs every operation as
//     that user, whatever the client's. The agent mounts the root
//     directory with FUSE at DataDir/agent/efs/<task>/<access point>,
//     served by a helper process running as that user (internal/efsfuse),
//     and binds that mount into the containers. It is made when the first
//     container needs it and stopped when the task's containers are gone.
//     In a gVisor sandbox the mount is made per container user as well:
//     gVisor's kernel checks permissions against the owners the mount
//     shows, which it shows as that user's (efsfuse.Client).
//   - Otherwise the client's identity applies, as with NFS without
//     squashing: the directory is bind-mounted as it is.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// efsMu serialises making and stopping access point mounts.
var efsMu sync.Mutex

// efsHelper is the binary run as `efs-mount` helper: this one, gantry.
var efsHelper = os.Executable

func (a *Agent) efsTaskDir(taskID string) string {
	return filepath.Join(a.cfg.DataDir, "agent", "efs", taskID)
}

// efsVolume is a container's EFS mount whose host directory is not known
// until the container's user is (withEFS).
type efsVolume struct {
	name string // the task's volume
	m    *agent.EFSMount
}

// withEFS sets the source of the container's EFS mounts (by destination),
// after every option that decides the container's user: a sandbox's
// mount of an access point is made for that user (efsfuse.Client).
func (a *Agent) withEFS(taskID, isolation string, vols map[string]efsVolume) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var client *efsfuse.Client
		if isolation == agent.IsolationSandbox && s.Process != nil {
			client = &efsfuse.Client{UID: s.Process.User.UID, GID: s.Process.User.GID}
		}
		for i, mnt := range s.Mounts {
			v, ok := vols[mnt.Destination]
			if !ok {
				continue
			}
			dir, err := a.efsDir(taskID, v.m, client)
			if err != nil {
				return fmt.Errorf("EFS volume %s: %w", v.name, err)
			}
			s.Mounts[i].Source = dir
			if isolation == agent.IsolationSandbox {
				s.Mounts[i].Options = append(s.Mounts[i].Options, gvisorOwnHandles)
			}
		}
		return nil
	}
}

// gvisorOwnHandles is the gVisor mount option (runsc reads it from the
// spec's mount options) that gives every open of a file on the mount a
// host handle of its own, as runsc does by itself for FUSE and NFS
// sources. A volume's other clients, other sandboxes and runc containers,
// write the same file at the same time, and an O_APPEND write in a
// sandbox only lands at their end if the host appends it: with a host
// handle per open, scripts/runsc-efs-append.patch opens the host file
// O_APPEND for an O_APPEND open, which the shared per-file handle cannot
// be. Reads and writes on such a mount already go to the host (runsc's
// shared file access), so the cost is a host open per open.
const gvisorOwnHandles = "disable_file_handle_sharing"

// efsDir is the host directory the task's containers bind for m; client
// is the container's user under a sandbox, else nil.
func (a *Agent) efsDir(taskID string, m *agent.EFSMount, client *efsfuse.Client) (string, error) {
	if a.cfg.EFSMode == "nfs" {
		return a.efsNFS(taskID, m, client)
	}
	root, dir, err := a.openEFSRoot(m)
	if err != nil {
		return "", err
	}
	defer root.Close()
	if m.User == nil {
		// Root squashed (no ClientRootAccess): runc's requests carry
		// their caller, so one mount squashes root and keeps every other
		// user (efsfuse's squash mode); a sandbox's come from its gofer,
		// so a root container gets a mount as 65534 and any other user
		// keeps its identity on the plain directory.
		if m.RootSquash && (client == nil || client.UID == 0) {
			return a.efsServe(taskID, m, root, client)
		}
		return dir, nil
	}
	return a.efsServe(taskID, m, root, client)
}

// efsServe returns the FUSE mount of m for the task (and, in a sandbox,
// the container's user: the ownership it shows depends on it), starting
// its helper unless one serves it already (a task resumed by a restarted
// agent).
func (a *Agent) efsServe(taskID string, m *agent.EFSMount, root *os.File, client *efsfuse.Client) (string, error) {
	efsMu.Lock()
	defer efsMu.Unlock()
	name := m.AccessPointID
	if name == "" {
		name = m.FileSystemID
	}
	if m.User == nil { // root squashed: see efsDir
		name = fmt.Sprintf("%s-squash-%x", m.FileSystemID, sha256.Sum256([]byte(m.Root)))[:len(m.FileSystemID)+15]
	}
	if client != nil {
		name += fmt.Sprintf("-as-%d-%d", client.UID, client.GID)
	}
	mp := filepath.Join(a.efsTaskDir(taskID), name)
	if efsfuse.Serving(mp) {
		return mp, nil
	}
	// An earlier helper died: its mount is dead for good.
	if err := efsfuse.Stop(mp, readPid(mp+".pid")); err != nil {
		return "", err
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return "", err
	}
	exe, err := efsHelper()
	if err != nil {
		return "", err
	}
	fm := efsfuse.Mount{
		Mountpoint: mp,
		Source:     m.FileSystemID + ":" + m.AccessPointID,
		Client:     client,
	}
	switch {
	case m.User != nil:
		fm.UID, fm.GID, fm.Groups = m.User.UID, m.User.GID, m.User.SecondaryGIDs
	case client != nil: // a sandbox's root container, squashed
		fm.UID, fm.GID = efsfuse.Anonymous, efsfuse.Anonymous
		fm.Source = m.FileSystemID + ":" + m.Root
	default:
		fm.Squash, fm.Source = true, m.FileSystemID+":"+m.Root
	}
	pid, err := efsfuse.Start(exe, root, fm, mp+".log")
	if err != nil {
		return "", fmt.Errorf("mount %s%s as uid %d (squash %v): %w", m.FileSystemID, m.Root, fm.UID, fm.Squash, err)
	}
	if err := os.WriteFile(mp+".pid", []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return "", err
	}
	return mp, nil
}

// unmountEFS stops the task's access point mounts and their helpers.
// Safe to repeat, and for a task that had none. Mount points are removed
// one by one, never recursively: a mount still in place would take the
// shared tree's files with it.
func (a *Agent) unmountEFS(taskID string) error {
	efsMu.Lock()
	defer efsMu.Unlock()
	a.efsNFSStop(taskID)
	dir := a.efsTaskDir(taskID)
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".pid") || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		mp := filepath.Join(dir, e.Name())
		if err := efsfuse.Stop(mp, readPid(mp+".pid")); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(mp); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
			continue
		}
		os.Remove(mp + ".pid")
		os.Remove(mp + ".log")
	}
	if len(errs) == 0 {
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// openEFSRoot opens m's root directory inside the file system's tree,
// each component without following symlinks, so a symlink a task planted
// in the shared tree cannot point a later task's mount elsewhere on the
// host; it returns the open directory and its path. A missing root is
// made with the access point's CreationInfo (intermediate directories
// root-owned, 0755), as EFS does on first use; without CreationInfo it is
// an error, as on AWS.
func (a *Agent) openEFSRoot(m *agent.EFSMount) (*os.File, string, error) {
	base := m.HostPath
	if base == "" {
		base = filepath.Join(a.cfg.DataDir, "efs", m.FileSystemID)
	}
	fd, err := unix.Open(base, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("file system %s is not on this host (%s): %w", m.FileSystemID, base, err)
	}
	var parts []string
	for _, p := range strings.Split(m.Root, "/") {
		switch p {
		case "", ".":
		case "..":
			unix.Close(fd)
			return nil, "", fmt.Errorf("root directory %q climbs out of the file system", m.Root)
		default:
			parts = append(parts, p)
		}
	}
	for i, p := range parts {
		last := i == len(parts)-1
		next, err := unix.Openat(fd, p, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			if last && m.Create == nil {
				unix.Close(fd)
				return nil, "", fmt.Errorf("root directory %s does not exist in %s and the access point has no CreationInfo", m.Root, m.FileSystemID)
			}
			mode, uid, gid := uint32(0o755), 0, 0
			if last {
				mode, uid, gid = m.Create.Mode&0o7777, int(m.Create.UID), int(m.Create.GID)
			}
			if err := unix.Mkdirat(fd, p, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return nil, "", fmt.Errorf("create root directory %s: %w", m.Root, err)
			} else if err == nil {
				// Owner first, then mode: chown clears setuid/setgid bits.
				if err := unix.Fchownat(fd, p, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					unix.Close(fd)
					return nil, "", err
				}
				if err := unix.Fchmodat(fd, p, mode, 0); err != nil {
					unix.Close(fd)
					return nil, "", err
				}
			}
			next, err = unix.Openat(fd, p, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil, "", fmt.Errorf("root directory %s: %q is not a directory (symlinks are not followed)", m.Root, p)
			}
			return nil, "", fmt.Errorf("root directory %s: %w", m.Root, err)
		}
		fd = next
	}
	dir := filepath.Join(append([]string{base}, parts...)...)
	return os.NewFile(uintptr(fd), dir), dir, nil
}
