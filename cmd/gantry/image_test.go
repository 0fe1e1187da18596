package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestImageLoad loads images before any server ran: the command must start
// Gantry's containerd itself, and ls must then show them.
func TestImageLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	bin := testenv.Binary(t)
	dataDir := t.TempDir()
	t.Cleanup(func() { containerd.Stop(dataDir) })
	oci := filepath.Join(t.TempDir(), "app.tar")
	if err := testimage.WriteOCI(oci, "registry.example.com/team/app:v1"); err != nil {
		t.Fatal(err)
	}
	run := func(stdin, sub string, files ...string) string {
		t.Helper()
		args := append([]string{"image", sub, "--data-dir", dataDir, "--containerd", "/nonexistent.sock"}, files...)
		cmd := exec.Command(bin, args...)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gantry %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("", "load", testimage.Web(t), oci)
	if !strings.Contains(out, "Loaded image: docker.io/library/nginx:latest sha256:") || !strings.Contains(out, "Loaded image: registry.example.com/team/app:v1 sha256:") {
		t.Fatalf("load output:\n%s", out)
	}
	out = run(testimage.Busybox(t), "load", "-")
	if !strings.Contains(out, "docker.io/gantry-test/busybox:latest") {
		t.Fatalf("load from stdin:\n%s", out)
	}
	out = run("", "ls")
	for _, want := range []string{"docker.io/library/nginx:latest", "registry.example.com/team/app:v1", "docker.io/gantry-test/busybox:latest"} {
		if !strings.Contains(out, want+" ") {
			t.Errorf("ls lacks %s:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n")[1:] {
		// NAME DIGEST SIZE UNPACKED ...: a loaded image is unpacked at once.
		if f := strings.Fields(line); len(f) > 5 && f[4] == "no" {
			t.Errorf("an image is not unpacked:\n%s", out)
		}
	}

	cmd := exec.Command(bin, "image", "load", "--data-dir", dataDir, "--containerd", "/nonexistent.sock", "/nonexistent.tar")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("loading a missing file succeeded:\n%s", out)
	}
}
