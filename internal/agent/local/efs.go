package local

// EFS volumes. On this host a file system is the directory tree
// DataDir/efs/<fs-id> (internal/efs); a task's EFS volume is a bind mount
// of that tree or of a directory inside it (rootDirectory, or an access
// point's root directory). Every task mounting the same file system sees
// the same files, live, and they outlive the task. The container sees the
// mount's root as its top: it cannot name anything above it, and symlinks
// it follows resolve in its own mount namespace, not on the host.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
)

// efsDir is the host directory an EFS mount binds: Root inside the file
// system's tree, each component opened without following symlinks, so a
// symlink a task planted in the shared tree cannot point a later task's
// mount elsewhere on the host. A missing root is made with the access
// point's CreationInfo (intermediate directories root-owned, 0755), as EFS
// does on first use; without CreationInfo it is an error, as on AWS.
func (a *Agent) efsDir(m *agent.EFSMount) (string, error) {
	base := m.HostPath
	if base == "" {
		base = filepath.Join(a.cfg.DataDir, "efs", m.FileSystemID)
	}
	fd, err := unix.Open(base, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("file system %s is not on this host (%s): %w", m.FileSystemID, base, err)
	}
	var parts []string
	for _, p := range strings.Split(m.Root, "/") {
		switch p {
		case "", ".":
		case "..":
			unix.Close(fd)
			return "", fmt.Errorf("root directory %q climbs out of the file system", m.Root)
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
				return "", fmt.Errorf("root directory %s does not exist in %s and the access point has no CreationInfo", m.Root, m.FileSystemID)
			}
			mode, uid, gid := uint32(0o755), 0, 0
			if last {
				mode, uid, gid = m.Create.Mode&0o7777, int(m.Create.UID), int(m.Create.GID)
			}
			if err := unix.Mkdirat(fd, p, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return "", fmt.Errorf("create root directory %s: %w", m.Root, err)
			} else if err == nil {
				// Owner first, then mode: chown clears setuid/setgid bits.
				if err := unix.Fchownat(fd, p, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					unix.Close(fd)
					return "", err
				}
				if err := unix.Fchmodat(fd, p, mode, 0); err != nil {
					unix.Close(fd)
					return "", err
				}
			}
			next, err = unix.Openat(fd, p, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return "", fmt.Errorf("root directory %s: %q is not a directory (symlinks are not followed)", m.Root, p)
			}
			return "", fmt.Errorf("root directory %s: %w", m.Root, err)
		}
		fd = next
	}
	unix.Close(fd)
	dir := filepath.Join(append([]string{base}, parts...)...)
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	return dir, nil
}
