package local_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/snapshots"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// withEphemeralMiB restarts the agent with every task's ephemeral storage
// this small, so a test can fill it in a moment.
func (e *env) withEphemeralMiB(n int64) {
	e.t.Helper()
	if err := e.agent.Close(); err != nil {
		e.t.Fatal(err)
	}
	a, err := local.New(e.ctx, local.Config{
		DataDir: e.dataDir, ContainerdAddress: gcontainerd.OwnSocket(e.dataDir), Reporter: e.rep, EphemeralMiB: n,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.agent = a
}

// storageGone fails the test if anything of the task's ephemeral storage
// is left: its mount, loop device, file or image views.
func (e *env) storageGone(id string) {
	t := e.t
	t.Helper()
	base := filepath.Join(e.dataDir, "agent", "storage", id)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), base) {
		t.Errorf("mount left under %s", base)
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		if b, _ := os.ReadFile(l); strings.Contains(string(b), id) {
			t.Errorf("loop device left: %s -> %s", l, strings.TrimSpace(string(b)))
		}
	}
	for _, p := range []string{base, base + ".ext4"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("left on disk: %s", p)
		}
	}
	err = e.client.SnapshotService(images.Snapshotter).Walk(e.ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels["gantry.task"] == id {
			t.Errorf("image view left: %s", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A task that writes past its ephemeral storage gets ENOSPC, where its
// volumes and its containers' writable layers count together; its sibling
// container keeps running, another task can still write, and the host
// holds no more than the cap. Nothing is left once it stops.
func TestEphemeralStorageCap(t *testing.T) {
	e := newEnv(t)
	const capMiB = 64
	e.withEphemeralMiB(capMiB)

	fill := e.task(
		agent.ContainerSpec{Name: "filler", Essential: true, Mounts: []agent.Mount{{Volume: "data", ContainerPath: "/data"}},
			Command: sh(`trap 'exit 9' TERM
				dd if=/dev/zero of=/data/v bs=1M count=20 2>/dev/null || exit 2
				out=$(dd if=/dev/zero of=/big bs=1M 2>&1) && exit 3
				case "$out" in *"No space left on device"*) ;; *) exit 4;; esac
				n=$(( ($(wc -c < /big) + $(wc -c < /data/v)) >> 20 ))
				[ $n -ge 64 ] && [ $n -le 82 ] || exit 5
				trap 'exit 0' TERM
				mv /data/v /data/full # a rename needs no free block
				while :; do sleep 0.1; done`)},
		agent.ContainerSpec{Name: "sibling", Command: sh("trap 'exit 7' TERM; while :; do sleep 0.1; done")},
	)
	id := e.start(fill)
	e.waitPhase(id, agent.PhaseRunning, time.Minute)

	full := filepath.Join(e.dataDir, "agent", "storage", id, "volumes", "data", "full")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(full); err == nil {
			break
		}
		if st, _ := e.rep.last(id); st.Phase != agent.PhaseRunning || time.Now().After(deadline) {
			t.Fatalf("the filler did not fill its storage: %+v", st)
		}
	}
	// Full: what the agent reports, and what the host's disk holds.
	used, reserved, err := e.agent.EphemeralStorage(id)
	if err != nil {
		t.Fatal(err)
	}
	if reserved != capMiB || used < capMiB {
		t.Errorf("EphemeralStorage: %d MiB used of %d, want full, of %d", used, reserved, capMiB)
	}
	var fi syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.dataDir, "agent", "storage", id+".ext4"), &fi); err != nil {
		t.Fatal(err)
	}
	if onDisk := fi.Blocks * 512 >> 20; onDisk > capMiB+capMiB/50+16 {
		t.Errorf("the task's file takes %d MiB of the host's disk", onDisk)
	}

	// Another task has its own cap, untouched by the full one.
	other := e.start(e.task(agent.ContainerSpec{Name: "writer", Essential: true,
		Command: sh("dd if=/dev/zero of=/f bs=1M count=40 2>/dev/null && [ $(wc -c < /f) = 41943040 ]")}))
	if st := e.waitPhase(other, agent.PhaseStopped, time.Minute); exitCode(t, st, "writer") != 0 {
		t.Errorf("the other task could not write 40 MiB: exit %d", exitCode(t, st, "writer"))
	}

	st, _ := e.rep.last(id)
	if c := ctrStatus(t, st, "sibling"); c.Status != "RUNNING" || ctrStatus(t, st, "filler").Status != "RUNNING" {
		t.Fatalf("containers did not outlive the full disk: %+v", st.Containers)
	}
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	st = e.waitPhase(id, agent.PhaseStopped, 30*time.Second)
	if got := exitCode(t, st, "filler"); got != 0 {
		t.Errorf("filler exited %d, want 0 (it got ENOSPC at the cap)", got)
	}
	if got := exitCode(t, st, "sibling"); got != 7 {
		t.Errorf("sibling exited %d, want 7 (alive until the stop)", got)
	}
	e.storageGone(id)
	e.storageGone(other)
}

// Containers share a task's volumes: what one writes the other reads, a
// read-only mount refuses writes, a read-only root still takes writes to
// a volume, and a container's root of several image layers is writable.
func TestTaskVolumes(t *testing.T) {
	e := newEnv(t)
	layered := loadLayered(t, e)
	id := e.start(e.task(
		agent.ContainerSpec{Name: "writer", Image: layered, Mounts: []agent.Mount{{Volume: "shared", ContainerPath: "/shared"}},
			Command: sh(`[ "$(cat /etc/layer2)" = two ] || exit 2
				echo changed > /etc/layer2 && [ "$(cat /etc/layer2)" = changed ] || exit 3
				echo hello > /shared/f`)},
		agent.ContainerSpec{Name: "reader", Essential: true, ReadonlyRootfs: true,
			DependsOn: []agent.Dependency{{Container: "writer", Condition: "SUCCESS"}},
			Mounts: []agent.Mount{
				{Volume: "shared", ContainerPath: "/in", ReadOnly: true},
				{Volume: "own", ContainerPath: "/out"},
			},
			Command: sh(`[ "$(cat /in/f)" = hello ] || exit 1
				echo x > /in/g 2>/dev/null && exit 2
				touch /rootfs-write 2>/dev/null && exit 3
				echo y > /out/y || exit 4
				exit 42`)},
	))
	st := e.waitPhase(id, agent.PhaseStopped, time.Minute)
	if got := exitCode(t, st, "writer"); got != 0 {
		t.Errorf("writer exited %d, want 0", got)
	}
	if got := exitCode(t, st, "reader"); got != 42 {
		t.Errorf("reader exited %d, want 42", got)
	}
	e.storageGone(id)
}

// loadLayered loads an image of two layers (busybox, then /etc/layer2),
// whose lower layers the container's overlay stacks.
func loadLayered(t *testing.T, e *env) string {
	const ref = "gantry-test/layered:latest"
	base, err := testimage.Image(testimage.WithCmd("sh"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/layer2", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("two\n"))
	tw.Close()
	layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "layered.tar")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := images.Load(e.ctx, e.client, f); err != nil {
		t.Fatal(err)
	}
	return ref
}

// A restarted agent finds a running task's storage as it was, and clears
// it when the task stops.
func TestEphemeralStorageAcrossAgentRestart(t *testing.T) {
	e := newEnv(t)
	id := e.start(e.task(agent.ContainerSpec{Name: "app", Essential: true, Mounts: []agent.Mount{{Volume: "v", ContainerPath: "/v"}},
		Command: sh(`echo layer > /root-file; echo vol > /v/f
			while [ ! -e /v/go ]; do sleep 0.1; done
			[ "$(cat /root-file)" = layer ] && [ "$(cat /v/f)" = vol ] || exit 1
			trap 'exit 0' TERM; while :; do sleep 0.1; done`)}))
	e.waitPhase(id, agent.PhaseRunning, time.Minute)
	vol := filepath.Join(e.dataDir, "agent", "storage", id, "volumes", "v")
	deadline := time.Now().Add(10 * time.Second)
	for readFileOK(filepath.Join(vol, "f")) != "vol" {
		if time.Now().After(deadline) {
			t.Fatalf("the volume is not on the task's file system at %s", vol)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.restartAgent()
	if err := os.WriteFile(filepath.Join(vol, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the container check its files
	if st, _ := e.rep.last(id); ctrStatus(t, st, "app").ExitCode != nil {
		t.Fatalf("the container lost its files across the restart: %+v", st)
	}
	if err := e.agent.StopTask(e.ctx, agent.StopRequest{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	st := e.waitPhase(id, agent.PhaseStopped, 30*time.Second)
	if got := exitCode(t, st, "app"); got != 0 {
		t.Errorf("app exited %d, want 0", got)
	}
	e.storageGone(id)
}

func readFileOK(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// clearStorage unmounts what a failed test left of a task's storage, so
// that no loop device outlives the test.
func (e *env) clearStorage(id string) {
	dir := filepath.Join(e.dataDir, "agent", "storage", id)
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+dir+" ") {
		e.t.Errorf("ephemeral storage left mounted: %s", dir)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
}
