package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/oci"

	"github.com/gantry-dev/gantry/internal/agent"
)

// A Runtime is how a task's containers are isolated: which containerd
// runtime (shim) runs them, with which options, and what their OCI specs
// need on top of what spec.go builds. The rest of the agent (images,
// rootfs, networking, cgroups, logs) is the same for every runtime: the
// shim gets a bundle with the task's network namespace and cgroup path and
// must honour both.
//
// runc is container isolation; gVisor (runsc through containerd's runc v2
// shim) is sandbox isolation. A microVM runtime (Kata, Firecracker or Cloud
// Hypervisor through their containerd shims) would be a third
// implementation: see docs/architecture.md.
type Runtime interface {
	// Name is the runtime's short name, e.g. "runc" or "runsc".
	Name() string
	// Isolation is the agent.Isolation* mode the runtime provides.
	Isolation() string
	// Available says why the runtime cannot run on this host, or nil.
	Available() error
	// Containerd is the containerd runtime name and its options
	// (containerd.WithRuntime's arguments).
	Containerd() (name string, options any)
	// SpecOpts adjust the OCI spec of a container of the task for the
	// runtime; they run after every option spec.go makes.
	SpecOpts(task agent.TaskSpec) []oci.SpecOpts
}

// runcRuntime is container isolation: runc on the host's kernel.
type runcRuntime struct{}

func (runcRuntime) Name() string                           { return "runc" }
func (runcRuntime) Isolation() string                      { return agent.IsolationContainer }
func (runcRuntime) Available() error                       { return nil }
func (runcRuntime) Containerd() (string, any)              { return runtimeName, nil }
func (runcRuntime) SpecOpts(agent.TaskSpec) []oci.SpecOpts { return nil }

// DefaultRunsc is where scripts/build-runsc.sh installs gVisor's runsc.
const DefaultRunsc = "/usr/local/bin/runsc"

// runscFlags are runsc's global flags for every sandbox. systrap is the
// only platform that works without hardware virtualization (ptrace is
// slower; KVM needs /dev/kvm that works).
// --allow-flag-override lets a container's spec set flags of its own
// (annotations dev.gvisor.flag.<name>): see SpecOpts; specs are Gantry's,
// never a user's.
// --overlay2=none: the container's root is already an overlay whose upper
// layer is on the task's ephemeral storage (storage.go), and that file
// system is what must fill up and what df must show; gVisor's own overlay
// (root:self by default) would keep writes in a file store it sizes itself.
var runscFlags = []string{"--platform=systrap", "--allow-flag-override", "--overlay2=none"}

// gvisorRuntime is sandbox isolation: gVisor's runsc as the runtime binary
// of containerd's runc v2 shim (as Docker runs gVisor). gVisor's own shim
// (containerd-shim-runsc-v1) needs containerd 1.7+; the runc shim drives
// runsc through the same command line as runc (create, start, kill, wait,
// delete, exec, events), so exit codes, cgroups and the task's network
// namespace work as with runc. The shim has no way to pass extra flags to
// its binary, so it runs a wrapper script that adds runscFlags.
type gvisorRuntime struct {
	runsc   string // the runsc binary
	wrapper string // the script the shim runs: runsc with runscFlags

	once sync.Once
	err  error
}

func newGvisorRuntime(runsc, dataDir string) *gvisorRuntime {
	return &gvisorRuntime{runsc: runsc, wrapper: filepath.Join(dataDir, "agent", "runsc")}
}

func (*gvisorRuntime) Name() string      { return "runsc" }
func (*gvisorRuntime) Isolation() string { return agent.IsolationSandbox }

func (g *gvisorRuntime) Containerd() (string, any) {
	return runtimeName, &runcoptions.Options{BinaryName: g.wrapper}
}

// SpecOpts: a task of one container gets gVisor's own network stack
// (netstack, --network=sandbox), which takes the task's eth0 and address
// over from the host's kernel. Several containers are several sandboxes
// (runsc can join containers into one sandbox, but the runc shim cannot
// follow a joined container's exit: docs/architecture.md), and several
// netstacks cannot share one interface or one loopback, so their sandboxes
// use the task network namespace's kernel stack instead (--network=host,
// which is still only the task's namespace): localhost between containers
// works as with runc.
func (*gvisorRuntime) SpecOpts(task agent.TaskSpec) []oci.SpecOpts {
	if len(task.Containers) <= 1 {
		return nil
	}
	return []oci.SpecOpts{oci.WithAnnotations(map[string]string{"dev.gvisor.flag.network": "host"})}
}

// Available writes the wrapper and starts one throwaway sandbox (runsc do,
// no network) to prove sandboxes run here: runsc that exists but cannot
// start (no systrap support, seccomp refused, ...) must not look usable.
// The answer is kept: the check runs once per agent.
func (g *gvisorRuntime) Available() error {
	g.once.Do(func() { g.err = g.check() })
	return g.err
}

func (g *gvisorRuntime) check() error {
	if _, err := os.Stat(g.runsc); err != nil {
		return fmt.Errorf("gVisor's runsc is not installed at %s (build it with scripts/build-runsc.sh): %w", g.runsc, err)
	}
	script := fmt.Sprintf(wrapperScript, g.runsc+" "+strings.Join(runscFlags, " "))
	if err := os.MkdirAll(filepath.Dir(g.wrapper), 0o700); err != nil {
		return err
	}
	tmp := g.wrapper + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, g.wrapper); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, err := os.MkdirTemp("", "gantry-runsc-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	out, err := exec.CommandContext(ctx, g.wrapper, "--root", root, "--network=none", "do", "/bin/true").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 500 {
			msg = msg[len(msg)-500:]
		}
		return fmt.Errorf("gVisor's runsc (%s) cannot start a sandbox on this host: %v: %s", g.runsc, err, msg)
	}
	return nil
}

// wrapperScript is the runtime binary the shim runs for sandboxes (%[1]s:
// runsc and its flags). It translates one answer: killing a sandbox that
// has exited, runsc says "sandbox is not running" where runc says
// "container not running", which is what the shim turns into NotFound
// (process already finished); anything else would fail every clean-up of
// an exited container.
const wrapperScript = `#!/bin/sh
# Written by gantry: containerd's runc v2 shim runs this as its runtime binary.
case " $* " in
*" kill "*)
	out=$(%[1]s "$@" 2>&1)
	rc=$?
	if [ $rc -ne 0 ]; then
		case $out in
		*"not running"*) echo "container not running" >&2 ;;
		*) printf '%%s\n' "$out" >&2 ;;
		esac
	fi
	exit $rc
	;;
esac
exec %[1]s "$@"
`

// runtimeFor is the runtime of a task's isolation.
func (a *Agent) runtimeFor(isolation string) (Runtime, error) {
	switch isolation {
	case "", agent.IsolationContainer:
		return runcRuntime{}, nil
	case agent.IsolationSandbox:
		if err := a.sandbox.Available(); err != nil {
			return nil, fmt.Errorf("sandbox isolation is not available on this host: %w", err)
		}
		return a.sandbox, nil
	}
	return nil, fmt.Errorf("unknown isolation %q (want %q or %q)", isolation, agent.IsolationContainer, agent.IsolationSandbox)
}
