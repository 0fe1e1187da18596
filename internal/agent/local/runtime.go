package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/agent"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
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
	// runtime; they run after every option spec.go makes. sandbox is the
	// id of the task's root container, which the container joins, or ""
	// when the task has none (sandboxOf).
	SpecOpts(task agent.TaskSpec, sandbox string) []oci.SpecOpts
	// SandboxOpts, for a runtime that can run all of a task's containers
	// in one sandbox, adjust the spec of a root container: it holds the
	// sandbox (its kernel, network stack and place in the task's cgroup),
	// starts before the containers join it and goes last. nil: each
	// container is isolated on its own.
	SandboxOpts() []oci.SpecOpts
}

// runcRuntime is container isolation: runc on the host's kernel.
type runcRuntime struct{}

func (runcRuntime) Name() string                                   { return "runc" }
func (runcRuntime) Isolation() string                              { return agent.IsolationContainer }
func (runcRuntime) Available() error                               { return nil }
func (runcRuntime) Containerd() (string, any)                      { return runtimeName, nil }
func (runcRuntime) SpecOpts(agent.TaskSpec, string) []oci.SpecOpts { return nil }
func (runcRuntime) SandboxOpts() []oci.SpecOpts                    { return nil }

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

// RunscFlags are the global flags every sandbox's runsc gets: the
// benchmark's runsc floor runs with the same.
func RunscFlags() []string { return append([]string(nil), runscFlags...) }

// gvisorRuntime is sandbox isolation: gVisor's runsc as the runtime binary
// of containerd's runc v2 shim (as Docker runs gVisor). gVisor's own shim
// (containerd-shim-runsc-v1) needs containerd 1.7+; the runc shim drives
// runsc through the same command line as runc (create, start, kill, wait,
// delete, exec, events), so exit codes, cgroups and the task's network
// namespace work as with runc. The shim has no way to pass extra flags to
// its binary, so it runs a wrapper script that adds runscFlags, and that
// also makes containers joining a task's sandbox look to the shim like
// containers of their own (wrapperScript).
type gvisorRuntime struct {
	runsc   string // the runsc binary
	wrapper string // the script the shim runs: runsc with runscFlags
	waits   string // the wrapper's start signals to joined containers' waiters
	pause   string // the static binary the sandbox's root container runs

	once sync.Once
	err  error
}

// DefaultPauseBinary is what a sandbox's root container runs (as "sleep
// infinity"): Debian's busybox-static, which the agent's hosts have for the
// same reason as tini (scripts/lib.sh), statically linked so it needs
// nothing from the empty root it runs in.
const DefaultPauseBinary = "/bin/busybox"

func newGvisorRuntime(runsc, dataDir string) *gvisorRuntime {
	return &gvisorRuntime{
		runsc:   runsc,
		wrapper: filepath.Join(dataDir, "agent", "runsc"),
		waits:   filepath.Join(dataDir, "agent", "runsc-waits"),
		pause:   DefaultPauseBinary,
	}
}

func (*gvisorRuntime) Name() string      { return "runsc" }
func (*gvisorRuntime) Isolation() string { return agent.IsolationSandbox }

func (g *gvisorRuntime) Containerd() (string, any) {
	return runtimeName, &runcoptions.Options{BinaryName: g.wrapper}
}

// runsc's annotations (CRI's) that put containers into one sandbox: the
// root container's type is "sandbox", every other container's "container",
// naming the root's id.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// SpecOpts join the container to the task's sandbox: the task is one
// gVisor kernel (one sentry and network stack) whatever its number of
// containers, as a Fargate task is one VM. Each container keeps its own
// mount, PID and UTS namespaces inside it, and its own root and mounts
// served by its own gofer.
func (*gvisorRuntime) SpecOpts(_ agent.TaskSpec, sandbox string) []oci.SpecOpts {
	if sandbox == "" {
		return nil
	}
	return []oci.SpecOpts{
		oci.WithAnnotations(map[string]string{
			annotationContainerType:   "container",
			annotationSandboxID:       sandbox,
			annotationInSandboxCgroup: "v2", // the sandbox's, which runsc also reads from each container's
		}),
		// A cgroup file system (read-only, as Docker mounts it) is what
		// makes the sentry give the container a cgroup of its own
		// (annotationInSandboxCgroup), and so its own memory accounting.
		oci.WithMounts([]specs.Mount{{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}}}),
	}
}

// SandboxOpts make the root container: gVisor's own network stack
// (netstack, runsc's default --network=sandbox) takes the task's eth0 and
// address over from the host's kernel, and every container of the task
// shares it, localhost included. The root's process is busybox's sleep
// (the pause binary, bind-mounted read-only into an empty read-only root):
// it only keeps the sandbox up, and SIGKILL ends it.
func (g *gvisorRuntime) SandboxOpts() []oci.SpecOpts {
	return []oci.SpecOpts{
		oci.WithAnnotations(map[string]string{annotationContainerType: "sandbox", annotationInSandboxCgroup: "v2"}),
		oci.WithMounts([]specs.Mount{{Destination: pausePath, Type: "bind", Source: g.pause, Options: []string{"bind", "ro"}}}),
		oci.WithProcessArgs(pausePath, "infinity"),
		oci.WithRootFSReadonly(),
	}
}

// annotationInSandboxCgroup sets the sandbox's runsc flag
// --in-sandbox-cgroup: with v2 the sentry gives every container whose spec
// mounts a cgroup file system a cgroup of its own and accounts its pages
// there, so runsc events reports each container's own memory (memoryUsage)
// rather than the sandbox's split evenly between its containers. The hard
// limits of a sandbox's containers are enforced with it (watchMemory).
const annotationInSandboxCgroup = "dev.gvisor.flag.in-sandbox-cgroup"

// memoryUsage is the memory a container of a sandbox uses, as the sentry
// accounts it (runsc events --stats). The sentry keeps, but does not
// enforce, a limit per container, and the host's cgroup holds the whole
// sandbox.
func (g *gvisorRuntime) memoryUsage(ctx context.Context, id string) (uint64, error) {
	out, err := exec.CommandContext(ctx, g.runsc, "--root", runscRoot, "events", "--stats", id).Output()
	if err != nil {
		return 0, fmt.Errorf("runsc events --stats %s: %w", id, err)
	}
	var ev struct {
		Data struct {
			Memory struct {
				Usage struct {
					Usage uint64 `json:"usage"`
				} `json:"usage"`
			} `json:"memory"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &ev); err != nil {
		return 0, fmt.Errorf("runsc events --stats %s: %w", id, err)
	}
	return ev.Data.Memory.Usage.Usage, nil
}

// showMemoryLimit writes a container's hard limit into its memory.max in
// the sandbox's cgroup file system, where the container (and a runtime
// sizing its heap by it, as JVMs do) reads it, as it would under runc. The
// sentry keeps the value but does not act on it (watchMemory does).
func (g *gvisorRuntime) showMemoryLimit(ctx context.Context, id string, limit uint64) error {
	out, err := exec.CommandContext(ctx, g.runsc, "--root", runscRoot, "write-control", id, "memory", "/"+id, "memory.max", fmt.Sprint(limit)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "ERROR") {
		return fmt.Errorf("runsc write-control %s memory.max: %v: %s", id, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runscRoot is where the runc shim keeps its runtime's state (--root of
// every call it makes): its default root and containerd's namespace.
var runscRoot = filepath.Join("/run/containerd/runc", gcontainerd.Namespace)

// pausePath is where the pause binary is in the root container; busybox
// runs the applet its name says.
const pausePath = "/sleep"

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
	if _, err := os.Stat(g.pause); err != nil {
		return fmt.Errorf("a sandbox's root container runs %s (Debian's busybox-static), which is missing: %w", g.pause, err)
	}
	script := fmt.Sprintf(wrapperScript, g.runsc+" "+strings.Join(runscFlags, " "), g.waits)
	if err := os.MkdirAll(filepath.Dir(g.wrapper), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(g.waits, 0o700); err != nil {
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
// runsc and its flags; %[2]s: a directory for the waiters' start signals).
//
// It translates one answer: killing a sandbox that has exited, runsc says
// "sandbox is not running" where runc says "container not running", which
// is what the shim turns into NotFound (process already finished); anything
// else would fail every clean-up of an exited container. A container that
// joined a sandbox which has died (the host's OOM killer took the sentry)
// fails with whatever the dead sandbox's socket says; runsc state then
// says it is not running, and the answer is the same.
//
// And it makes a container that joins a sandbox followable. The shim learns
// a container's process from the --pid-file of create, reaps it as its
// child (it is a child subreaper) and reports the container's exit, with
// that process's status, when it ends. runsc writes the sandbox's pid there
// for a joining container, so the shim would see no exit until the whole
// sandbox ended. So create starts a waiter, `runsc wait <id>` in a shell
// that exits with the container's code (runsc prints it: 128+signal when
// killed), and puts the waiter's pid in the pid file instead. runsc wait
// refuses a container not started yet, so the waiter first blocks on a FIFO
// that start (or delete, for a container that never started) writes to.
// The waiter holds the FIFO open from before create returns, so the signal
// cannot be lost, and a writer opening it read-write never blocks, even
// when no waiter is left.
//
// runsc also gives a joining container the standard streams of `runsc
// start`, not of create as runc does, and the shim runs start with a pipe
// for its output that it reads to the end: the container would write its
// logs there and start would never return. So the waiter keeps the streams
// create got (the container's, from the shim) until start, which runs runsc
// with them (through /proc/<waiter>/fd; the waiter has them from its fork,
// before create returns), and drops them once started, so
// the shim sees the end of the output when the container's is done. A
// sandbox that dies under its containers (the host's OOM killer takes the
// sentry) leaves runsc wait nothing to report: the waiter then exits 137,
// as the container was killed.
//
// Everything else is runsc's own, exec'd with no shell left waiting: the
// start of a container that is its sandbox (the root, or a task's only
// container; it has no waiter) is on every sandboxed task's start path.
const wrapperScript = `#!/bin/sh
# Written by gantry: containerd's runc v2 shim runs this as its runtime binary.
waits='%[2]s'
for id do :; done
root= bundle= pidfile= prev= before=
for a do
	case $prev in
	--root) root=$a ;;
	--bundle) bundle=$a ;;
	--pid-file) pidfile=$a ;;
	esac
	before=$prev prev=$a
done
signal() {
	[ -p "$waits/$id" ] || return 0
	exec 4<>"$waits/$id" && echo go >&4
	exec 4>&-
}
waiter() {
	read -r x <&3
	exec 3<&- 5<&- 6>&- 7>&-
	rm -f "$waits/$id" "$waits/$id.pid"
	out=$(%[1]s --root "$root" wait "$id" 2>/dev/null)
	case $out in
	*'"exitStatus":'*) code=${out##*'"exitStatus":'}; exit "${code%%%%[!0-9]*}" ;;
	esac
	exit 137
}
case " $* " in
*" kill "*)
	out=$(%[1]s "$@" 2>&1)
	rc=$?
	if [ $rc -ne 0 ]; then
		case $out in
		*"not running"*) echo "container not running" >&2 ;;
		*)
			case $(%[1]s --root "$root" state "$before" 2>/dev/null) in
			*'"status": "running"'* | *'"status": "created"'*) printf '%%s\n' "$out" >&2 ;;
			*) echo "container not running" >&2 ;;
			esac
			;;
		esac
	fi
	exit $rc
	;;
*" create "*)
	grep -q '"io.kubernetes.cri.container-type":"container"' "$bundle/config.json" 2>/dev/null || exec %[1]s "$@"
	rm -f "$waits/$id"
	mkfifo -m 600 "$waits/$id" || exit 1
	exec 3<>"$waits/$id"
	%[1]s "$@" 3<&-
	rc=$?
	if [ $rc -ne 0 ]; then
		rm -f "$waits/$id"
		exit $rc
	fi
	exec 5<&0 6>&1 7>&2
	(waiter) </dev/null >/dev/null 2>&1 &
	printf '%%s' $! > "$waits/$id.pid"
	printf '%%s' $! > "$pidfile.waiter" && mv "$pidfile.waiter" "$pidfile"
	exit
	;;
*" start "*)
	if [ -p "$waits/$id" ]; then
		w=/proc/$(cat "$waits/$id.pid")/fd
		%[1]s "$@" <"$w/5" >"$w/6" 2>"$w/7" || exit
		signal
		exit 0
	fi
	exec %[1]s "$@"
	;;
*" delete "*)
	%[1]s "$@"
	rc=$?
	signal
	exit $rc
	;;
esac
exec %[1]s "$@"
`

// sharedSandbox says whether a task's containers join a root container's
// sandbox. A task of one container needs no root: its container is the
// sandbox, with gVisor's network stack, and it ending ends the task anyway.
// That keeps the root's start (a second sandbox boot's worth of runsc
// calls) off the path of most tasks. A task that took a sandbox over from
// the pool (sbpool.go) has a root whatever its containers.
func sharedSandbox(task agent.TaskSpec) bool {
	return task.Isolation == agent.IsolationSandbox && len(task.Containers) > 1
}

// sandboxID is the containerd id of a task's root container in sandbox
// isolation (or of a pooled sandbox's, by the pool's id for it);
// runtimeID's are <task id>-<number>, so it is never one. The root's
// cgroup is containerCgroup(name, sandboxID(name)), name being the
// task's cgroupName.
func sandboxID(taskID string) string { return taskID + "-sandbox" }

// sandboxOf is the id of the task's root container, which all of its
// containers join, or "" when it has none.
func sandboxOf(rec *record) string {
	if rec.Sandbox != "" {
		return rec.Sandbox
	}
	if sharedSandbox(rec.Spec) {
		return sandboxID(rec.Spec.TaskID)
	}
	return ""
}

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

// sandboxRuntime is gVisor's runtime when a task's containers share one
// sandbox (sandboxOf), where it has work of its own per container.
func (a *Agent) sandboxRuntime(rec *record) (*gvisorRuntime, bool) {
	if sandboxOf(rec) == "" || a.sandbox == nil {
		return nil, false
	}
	return a.sandbox, true
}
