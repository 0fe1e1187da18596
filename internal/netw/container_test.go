package netw

import (
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/containerd/containerdtest"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestWebImageInTaskNetwork runs the example web image in a task network,
// as the agent does, and fetches its page from the host by the task's
// address.
func TestWebImageInTaskNetwork(t *testing.T) {
	m, spec := newManager(t, 14)
	client, _ := containerdtest.Start(t)
	ctx := containerdtest.Context(t)
	f, err := os.Open(testimage.Web(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = images.Load(ctx, client, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.Ensure(ctx, client, "nginx", nil)
	if err != nil {
		t.Fatal(err)
	}

	att, err := m.Setup(ctx, "taskweb", spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Teardown(ctx, "taskweb", spec); err != nil {
			t.Error(err)
		}
	}()

	c, err := client.NewContainer(ctx, "taskweb-web",
		containerd.WithImage(img),
		containerd.WithSnapshotter(images.Snapshotter),
		containerd.WithNewSnapshot("taskweb-web", img),
		containerd.WithNewSpec(oci.WithImageConfig(img),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: att.NetNSPath})),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Delete(ctx, containerd.WithSnapshotCleanup)
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	defer task.Delete(ctx, containerd.WithProcessKill)
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}

	url := "http://" + net.JoinHostPort(att.IPv4, "80") + "/"
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: time.Second}).Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "Gantry's example web server") {
		t.Errorf("page: %q", body)
	}

	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exited:
		if st.ExitCode() != 0 {
			t.Errorf("exit code %d on SIGTERM, want 0", st.ExitCode())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the web server did not stop on SIGTERM")
	}
}
