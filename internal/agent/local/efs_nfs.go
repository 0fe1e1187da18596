package local

// EFS over NFS (Config.EFSMode "nfs"): what an agent does when its tasks
// run on a host that does not hold the file system's tree, exercised here
// on the one host. Two halves:
//
//   - Serving, by the host holding the tree: one NFS server per mount
//     target address, on that subnet's VPC bridge, port 2049, with one
//     export per access point (or root directory) that tasks use
//     (internal/efsnfs). On one host the agent starts it when a task first
//     needs it and stops it, and takes the address off the bridge, when
//     the last such task is gone; a restarted agent serves again, before
//     it resumes them, what its unfinished tasks mount (efsNFSResume).
//   - Mounting, by the task's agent: the `gantry efs-nfs-mount` helper in
//     the task's network namespace mounts the export with FUSE at
//     DataDir/agent/efs/<task>/<name>, which is bound into the containers
//     as a local mount is. A gVisor sandbox gets a mount per container
//     user (sandboxNFS) and runs on the namespace's kernel stack
//     (withEFSNFSNetwork).

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/efsfuse"
	"github.com/gantry-dev/gantry/internal/efsnfs"
)

// nfsServed is one mount target's server and the tasks that use it.
type nfsServed struct {
	srv    *efsnfs.Server
	bridge string
	addr   *netlink.Addr
	groups []string // the mount target's security groups
	tasks  map[string]bool
}

var (
	// nfsServeMu makes starting servers one at a time: nfsMu is let go
	// while a new server's firewall rules are rendered.
	nfsServeMu sync.Mutex
	nfsMu      sync.Mutex
	nfsServers = map[string]*nfsServed{} // by mount target address
)

// efsNFS mounts m for the task over NFS and returns the mount point.
// client is the container's user under a gVisor sandbox (else nil): a
// mount of an access point with a POSIX user is then made for that user,
// showing the access point's user as it (efsfuse.IDView), as the local
// access point mounts do.
func (a *Agent) efsNFS(taskID string, m *agent.EFSMount, client *efsfuse.Client) (string, error) {
	mt := m.MountTarget
	if mt == nil || mt.IP == "" {
		return "", fmt.Errorf("file system %s has no mount target in the task's VPC", m.FileSystemID)
	}
	m, view := sandboxNFS(m, client)
	export := nfsExport(m)
	if err := a.nfsServe(taskID, m, export, true); err != nil {
		return "", fmt.Errorf("serve %s at %s: %w", m.FileSystemID, mt.IP, err)
	}
	efsMu.Lock()
	defer efsMu.Unlock()
	name := strings.TrimPrefix(strings.ReplaceAll(export, "/", "_"), "_")
	if view != nil {
		name += fmt.Sprintf("-as-%d-%d", client.UID, client.GID)
	}
	mp := filepath.Join(a.efsTaskDir(taskID), "nfs-"+name)
	if isMount(mp) {
		return mp, nil
	}
	// A helper that died leaves a dead mount (ENOTCONN): clear it.
	unix.Unmount(mp, unix.MNT_DETACH)
	att, err := a.net.Get(taskID)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return "", err
	}
	exe, err := efsHelper()
	if err != nil {
		return "", err
	}
	pid, err := efsnfs.Start(exe, att.NetNSPath, efsnfs.MountSpec{
		Mountpoint: mp,
		Addr:       net.JoinHostPort(mt.IP, strconv.Itoa(efsnfs.Port)),
		Export:     export,
		Source:     mt.IP + ":" + export,
		View:       view,
	}, mp+".log")
	if err != nil {
		os.Remove(mp)
		return "", fmt.Errorf("mount %s from %s: %w", export, mt.IP, err)
	}
	if err := os.WriteFile(mp+".pid", []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return "", err
	}
	// Where it was served, for a restarted agent that no longer knows.
	if err := os.WriteFile(mp+".mt", []byte(mt.IP+" "+a.net.BridgeName(mt.VPCID)), 0o600); err != nil {
		return "", err
	}
	return mp, nil
}

// sandboxNFS is the mount a sandboxed container of user client (nil:
// not in a sandbox) makes of m, and how it shows owners. A sandbox's
// requests all come from its gofer, as root, and gVisor checks
// permissions itself against the owners shown:
//   - an access point's user is shown as the container's (efsfuse.IDView);
//   - root squashed (no ClientRootAccess): a root container's mount shows
//     65534 as root, so the gofer's chown of each file it makes to root
//     is one to 65534, which the squashed server allows; any other user
//     uses the export that is not squashed, where the gofer acts as root
//     and gVisor as the container's user, as local mode binds the plain
//     directory for it.
func sandboxNFS(m *agent.EFSMount, client *efsfuse.Client) (*agent.EFSMount, *efsfuse.IDView) {
	switch {
	case client == nil:
		return m, nil
	case m.User != nil:
		return m, &efsfuse.IDView{UID: m.User.UID, GID: m.User.GID, Groups: m.User.SecondaryGIDs, Client: client}
	case m.RootSquash && client.UID == 0:
		return m, &efsfuse.IDView{UID: efsfuse.Anonymous, GID: efsfuse.Anonymous, Client: client}
	case m.RootSquash:
		plain := *m
		plain.RootSquash = false
		return &plain, nil
	}
	return m, nil
}

// nfsExport is m's export name, what its mount helper asks to MOUNT.
func nfsExport(m *agent.EFSMount) string {
	name := path.Join("/", m.FileSystemID, m.Root)
	if m.AccessPointID != "" {
		name = "/" + m.AccessPointID
	}
	if m.RootSquash {
		// Another export than the unsquashed one: one export has one
		// policy ('#' is in no EFS path or id).
		name += "#root-squash"
	}
	return name
}

// efsNFSResume serves again, as a restarted agent starts, every export
// its unfinished tasks mount over NFS: the servers ran in the previous
// agent's process and went with it, while the tasks' mount helpers
// (processes of their own) wait and reconnect to the same address with
// the handles they hold, which name the same files (efsnfs: handles
// outlive the server). Every export of a mount target is added before
// its server answers, so no waiting call meets a handle of an export not
// yet back.
func (a *Agent) efsNFSResume(recs []record) {
	if a.cfg.EFSMode != "nfs" {
		return
	}
	for _, rec := range recs {
		if rec.Status.Phase == agent.PhaseStopped {
			continue
		}
		for _, c := range rec.Spec.Containers {
			for _, m := range c.Mounts {
				if m.EFS == nil {
					continue
				}
				mounts := []*agent.EFSMount{m.EFS}
				if rec.Spec.Isolation == agent.IsolationSandbox {
					// A non-root container's export (sandboxNFS).
					if p, _ := sandboxNFS(m.EFS, &efsfuse.Client{UID: 1}); p != m.EFS {
						mounts = append(mounts, p)
					}
				}
				for _, em := range mounts {
					if err := a.nfsServe(rec.Spec.TaskID, em, nfsExport(em), false); err != nil {
						a.log.Warn("serve EFS over NFS again for a running task", "task", rec.Spec.TaskID, "fs", em.FileSystemID, "err", err)
					}
				}
			}
		}
	}
	nfsMu.Lock()
	defer nfsMu.Unlock()
	for _, s := range nfsServers {
		s.srv.Serve()
	}
}

func isMount(dir string) bool {
	var st, parent unix.Stat_t
	return unix.Lstat(dir, &st) == nil && unix.Lstat(filepath.Dir(dir), &parent) == nil && st.Dev != parent.Dev
}

// nfsServe makes sure the mount target's server runs, on its address on
// the VPC's bridge, and publishes the export; the server answers once
// start (efsNFSResume starts them after adding every export).
func (a *Agent) nfsServe(taskID string, m *agent.EFSMount, export string, start bool) error {
	nfsServeMu.Lock()
	defer nfsServeMu.Unlock()
	nfsMu.Lock()
	defer nfsMu.Unlock()
	mt := m.MountTarget
	s := nfsServers[mt.IP]
	if s == nil {
		ip, err := netip.ParseAddr(mt.IP)
		if err != nil {
			return err
		}
		bridge := a.net.BridgeName(mt.VPCID)
		link, err := netlink.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("VPC bridge %s: %w", bridge, err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", ip, bridge, err)
		}
		// The mount target's rules go in before it listens: the address
		// is new on the bridge, and nothing may reach it unfiltered.
		s = &nfsServed{bridge: bridge, addr: addr, groups: mt.SecurityGroups, tasks: map[string]bool{}}
		nfsServers[mt.IP] = s
		nfsMu.Unlock()
		err = a.efsNFSFirewall()
		nfsMu.Lock()
		if err == nil {
			s.srv, err = listenRetry(net.JoinHostPort(mt.IP, strconv.Itoa(efsnfs.Port)))
		}
		if err != nil {
			delete(nfsServers, mt.IP)
			netlink.AddrDel(link, addr)
			go a.efsNFSFirewall()
			return err
		}
	}
	s.tasks[taskID] = true
	if start {
		defer s.srv.Serve()
	}
	root, _, err := a.openEFSRoot(m)
	if err != nil {
		return err
	}
	e := efsnfs.Export{Root: root}
	if u := m.User; u != nil {
		e.Squash, e.UID, e.GID, e.Groups = true, u.UID, u.GID, u.SecondaryGIDs
	} else {
		e.RootSquash = m.RootSquash
	}
	return s.srv.Add(export, e)
}

// listenRetry binds the address just added: it may be tentative for a
// moment.
func listenRetry(addr string) (*efsnfs.Server, error) {
	var err error
	for range 50 {
		var s *efsnfs.Server
		if s, err = efsnfs.Listen(addr); err == nil {
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// efsNFSStop stops the task's NFS mount helpers (unmountEFS removes their
// mount points after) and releases the servers it used; the last task of
// a server stops it and takes its address off the bridge. Called with
// efsMu held.
func (a *Agent) efsNFSStop(taskID string) {
	dir := a.efsTaskDir(taskID)
	ents, _ := os.ReadDir(dir)
	served := map[string]string{} // mount target address -> bridge
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, "nfs-") || strings.HasSuffix(n, ".pid") || strings.HasSuffix(n, ".log") || strings.HasSuffix(n, ".mt") {
			continue
		}
		mp := filepath.Join(dir, e.Name())
		pid := readPid(mp + ".pid")
		if b, err := os.ReadFile(mp + ".mt"); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 {
				served[f[0]] = f[1]
			}
			os.Remove(mp + ".mt")
		}
		for i := 0; i < 50; i++ {
			err := unix.Unmount(mp, 0)
			if err == unix.EBUSY {
				err = unix.Unmount(mp, unix.MNT_DETACH)
			}
			if err != nil {
				break
			}
		}
		// The helper ends when its mount goes; one that has not in 5 s
		// is killed, once its command line shows it is still that helper.
		for deadline := time.Now().Add(5 * time.Second); pid > 0 && efsnfs.Runs(pid, mp); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
	nfsMu.Lock()
	defer nfsMu.Unlock()
	for ip, s := range nfsServers {
		if !s.tasks[taskID] {
			continue
		}
		delete(s.tasks, taskID)
		if len(s.tasks) > 0 {
			continue
		}
		s.srv.Close()
		if link, err := netlink.LinkByName(s.bridge); err == nil {
			netlink.AddrDel(link, s.addr)
		}
		delete(nfsServers, ip)
	}
	// An address this agent does not serve (it was served by the agent
	// before a restart, which took its server along) is taken off its
	// bridge once no task here uses it; rendering the table below drops
	// its rules.
	for ip, bridge := range served {
		if nfsServers[ip] != nil || a.nfsAddrInUse(ip, taskID) {
			continue
		}
		if link, err := netlink.LinkByName(bridge); err == nil {
			if addr, err := netlink.ParseAddr(ip + "/32"); err == nil {
				netlink.AddrDel(link, addr)
			}
		}
	}
	go a.efsNFSFirewall()
}

// nfsAddrInUse reports whether a task other than except still has a
// mount from the mount target address ip.
func (a *Agent) nfsAddrInUse(ip, except string) bool {
	tasks, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, "agent", "efs", "*", "nfs-*.mt"))
	for _, f := range tasks {
		if filepath.Base(filepath.Dir(f)) == except {
			continue
		}
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), ip+" ") {
			return true
		}
	}
	return false
}

// annotationNetwork sets the sandbox's runsc flag --network
// (--allow-flag-override lets the spec carry it).
const annotationNetwork = "dev.gvisor.flag.network"

// withEFSNFSNetwork puts a sandboxed task that mounts EFS over NFS on
// its network namespace's own kernel stack (runsc --network=host) rather
// than gVisor's netstack. The mount helper's NFS client runs on the host
// kernel in the task's namespace, so that its connections leave from the
// task's ENI address, which the mount target's security groups judge as
// on AWS; netstack takes eth0's address over from the host kernel when
// the sandbox starts, which would cut those connections and hang every
// access to the mount. The task keeps its own namespace (its address,
// routes, security group rules on the bridge and the metadata endpoint
// are the same as under runc); what it gives up is netstack: its
// sockets are the host kernel's, as a runc task's are. On the root
// container and on every container, so that each runsc invocation of
// the task agrees.
func (a *Agent) withEFSNFSNetwork(spec agent.TaskSpec) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if !efsNFSHostNetwork(a.cfg.EFSMode, spec) {
			return nil
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[annotationNetwork] = "host"
		return nil
	}
}

// efsNFSHostNetwork reports whether the task's sandbox runs on the
// namespace's kernel stack: see withEFSNFSNetwork.
func efsNFSHostNetwork(mode string, spec agent.TaskSpec) bool {
	if mode != "nfs" || spec.Isolation != agent.IsolationSandbox {
		return false
	}
	for _, c := range spec.Containers {
		for _, m := range c.Mounts {
			if m.EFS != nil {
				return true
			}
		}
	}
	return false
}

// efsNFSMountAll mounts the task's EFS volumes over NFS while the task's
// resources are set up, before any container, as the ECS agent has EFS
// utils do: a volume that cannot be mounted fails the task with the ECS
// agent's reason.
func (a *Agent) efsNFSMountAll(taskID string, spec agent.TaskSpec) error {
	if err := efsMountDenied(spec); err != nil {
		return err
	}
	if a.cfg.EFSMode != "nfs" {
		return nil
	}
	for _, c := range spec.Containers {
		for _, m := range c.Mounts {
			if m.EFS == nil {
				continue
			}
			// In a sandbox, each container then gets a mount made for its
			// user (withEFS); this one finds refused mounts before any
			// container starts.
			if _, err := a.efsNFS(taskID, m.EFS, nil); err != nil {
				return fmt.Errorf("ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: "+
					"mounting %s of %s failed: %w", m.EFS.Root, m.EFS.FileSystemID, err)
			}
		}
	}
	return nil
}
