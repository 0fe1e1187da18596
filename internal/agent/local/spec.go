package local

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
)

const mib = 1 << 20

// specOpts turns a container definition into its OCI spec, in the order the
// options build on each other: the image's config first, then the task's
// overrides.
func (r *runner) specOpts(c *ctr, img containerd.Image) ([]oci.SpecOpts, error) {
	ic, err := img.Spec(r.ctx)
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	rec := r.t.record()
	s := c.spec

	// As Docker does: an entryPoint override drops the image's CMD too.
	entry, cmd := ic.Config.Entrypoint, ic.Config.Cmd
	if len(s.EntryPoint) > 0 {
		entry, cmd = s.EntryPoint, nil
	}
	if len(s.Command) > 0 {
		cmd = s.Command
	}
	args := append(append([]string{}, entry...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: the image has neither ENTRYPOINT nor CMD and the container sets neither")
	}

	hostname := s.Hostname
	if hostname == "" {
		hostname = defaultHostname(rec.Status.IPv4Address)
	}
	env := []string{"HOSTNAME=" + hostname, "AWS_EXECUTION_ENV=AWS_ECS_FARGATE"}
	if md := r.t.a.cfg.Metadata; md != nil {
		v4, v3 := md.ContainerURIs(c.id)
		env = append(env, "ECS_CONTAINER_METADATA_URI_V4="+v4, "ECS_CONTAINER_METADATA_URI="+v3)
		if rec.Spec.TaskRoleARN != "" {
			env = append(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="+md.CredentialsURI(c.id))
		}
	}
	environment, err := r.environment(c) // with the container's secrets
	if err != nil {
		return nil, err
	}
	env = append(env, awsEnv(rec.Spec.TaskARN, r.t.a.cfg.Metadata, environment)...)
	keys := make([]string, 0, len(environment))
	for k := range environment {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+environment[k])
	}

	dir := r.t.a.taskDir(r.t.id)
	mounts := []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(dir, "hosts"), Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(dir, "resolv.conf"), Options: []string{"rbind", "rprivate", "rw"}},
	}
	// As Docker does: a mount of the container's own wins over one at the
	// same path from volumesFrom, which come after it.
	at := map[string]bool{}
	efs := map[string]efsVolume{} // sources set by withEFS
	for _, m := range s.Mounts {
		dest := filepath.Clean(m.ContainerPath)
		if at[dest] {
			continue
		}
		at[dest] = true
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		src := r.t.a.volumeDir(r.t.id, m.Volume)
		if m.EFS != nil {
			efs[dest] = efsVolume{name: m.Volume, m: m.EFS}
		}
		mounts = append(mounts, specs.Mount{Destination: dest, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", mode}})
	}
	if s.InitProcess {
		if _, err := os.Stat(r.t.a.cfg.InitBinary); err != nil {
			return nil, fmt.Errorf("initProcessEnabled needs %s (apt package tini): %w", r.t.a.cfg.InitBinary, err)
		}
		// /dev is a tmpfs in the container: the mount point is made there,
		// not in the image's filesystem.
		mounts = append(mounts, specs.Mount{Destination: initPath, Type: "bind", Source: r.t.a.cfg.InitBinary, Options: []string{"bind", "ro"}})
		args = append([]string{initPath, "--"}, args...)
	}

	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithProcessArgs(args...),
		oci.WithEnv(env),
		oci.WithHostname(hostname),
		oci.WithMounts(mounts),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: rec.Network.NetNSPath}),
		oci.WithCgroup(containerCgroup(cgroupName(&rec), c.id)),
		withResources(s.CPU, s.MemoryMiB, s.MemoryReservation),
		withRlimits(s.Ulimits),
		// One shim per task, not per container: 100 tasks on a small host.
		// Its group is its root container's (bootRoot), named as the cgroup.
		oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": cgroupName(&rec)}),
	}
	if s.WorkingDirectory != "" {
		opts = append(opts, oci.WithProcessCwd(s.WorkingDirectory))
	}
	if s.User != "" {
		name, _, _ := strings.Cut(s.User, ":")
		opts = append(opts, oci.WithUser(s.User), oci.WithAdditionalGIDs(name))
	}
	if s.ReadonlyRootfs {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	opts = append(opts, r.t.a.withEFS(r.t.id, rec.Spec.Isolation, efs), r.t.a.withEFSNFSNetwork(rec.Spec))
	// Before withHardening (start.go): the seccomp profile follows the capabilities.
	opts = append(opts, withCapabilities(s.CapAdd, s.CapDrop), r.t.a.withExecTTY(rec.Spec.Isolation))
	return opts, nil
}

const initPath = "/dev/init"

func defaultHostname(ip string) string {
	if ip == "" {
		return "localhost"
	}
	return "ip-" + strings.ReplaceAll(ip, ".", "-") + ".ec2.internal"
}

func withResources(cpu, memMiB, reservationMiB int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		res := s.Linux.Resources
		if cpu > 0 {
			shares := uint64(max(cpu, 2)) // the kernel's minimum
			res.CPU = &specs.LinuxCPU{Shares: &shares}
		}
		if memMiB > 0 || reservationMiB > 0 {
			res.Memory = &specs.LinuxMemory{}
			if memMiB > 0 {
				l := memMiB * mib
				res.Memory.Limit = &l
			}
			if reservationMiB > 0 {
				l := reservationMiB * mib
				res.Memory.Reservation = &l
			}
		}
		return nil
	}
}

// rlimitNames maps ECS's ulimit names to the kernel's resources.
var rlimitNames = map[string]int{
	"core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
	"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK,
	"msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE, "nofile": unix.RLIMIT_NOFILE,
	"nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS, "rtprio": unix.RLIMIT_RTPRIO,
	"rttime": unix.RLIMIT_RTTIME, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

// withRlimits sets the container's ulimits, with Fargate's default nofile
// (65535). Hard limits are capped at this process's: raising one needs
// CAP_SYS_RESOURCE, which the hosts Gantry runs on may not grant, and runc
// would then fail the start.
func withRlimits(ulimits []agent.Ulimit) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		want := map[string][2]uint64{"nofile": {65535, 65535}}
		for _, u := range ulimits {
			if _, ok := rlimitNames[u.Name]; !ok {
				return fmt.Errorf("unknown ulimit %q", u.Name)
			}
			want[u.Name] = [2]uint64{uint64(max(u.Soft, 0)), uint64(max(u.Hard, 0))}
		}
		for name, v := range want {
			var cur unix.Rlimit
			if err := unix.Getrlimit(rlimitNames[name], &cur); err != nil {
				return err
			}
			hard := min(v[1], cur.Max)
			soft := min(v[0], hard)
			typ := "RLIMIT_" + strings.ToUpper(name)
			set := false
			for i := range s.Process.Rlimits {
				if s.Process.Rlimits[i].Type == typ {
					s.Process.Rlimits[i].Soft, s.Process.Rlimits[i].Hard, set = soft, hard, true
				}
			}
			if !set {
				s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: typ, Soft: soft, Hard: hard})
			}
		}
		return nil
	}
}

// writeFiles writes the task's /etc/hosts and /etc/resolv.conf, shared by
// its containers as they share its network.
func (r *runner) writeFiles(rec record) error {
	dir := r.t.a.taskDir(r.t.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var hosts bytes.Buffer
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if ip := rec.Status.IPv4Address; ip != "" {
		names := []string{defaultHostname(ip)}
		for _, c := range rec.Spec.Containers {
			if c.Hostname != "" {
				names = append(names, c.Hostname)
			}
		}
		fmt.Fprintf(&hosts, "%s\t%s\n", ip, strings.Join(names, " "))
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), hosts.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), resolvConf(), 0o644)
}

// resolvConf is the host's, without loopback name servers: the task's
// network namespace has its own loopback, where nothing answers DNS.
func resolvConf() []byte {
	var out bytes.Buffer
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if ip := net.ParseIP(fields[1]); ip == nil || ip.IsLoopback() {
				continue
			}
		}
		out.WriteString(sc.Text() + "\n")
	}
	return out.Bytes()
}
