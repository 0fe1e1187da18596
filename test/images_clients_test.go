package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testimage"
)

// client runs a registry client with its own HOME (so logins land in a
// temporary config) and the password on stdin when given.
func client(t *testing.T, home, stdin, bin string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "REGISTRY_AUTH_FILE="+filepath.Join(home, "auth.json"), "DOCKER_CONFIG="+filepath.Join(home, ".docker"))
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed (scripts/test.sh installs it): %v", name, err)
	}
	return p
}

// TestRegistryClients drives Gantry's registry with crane and podman, as
// their users would, on one server.
func TestRegistryClients(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "apps")
	s.createRepo(t, "mirror")
	s.createRepo(t, "pods")
	t.Run("crane", func(t *testing.T) { testCrane(t, s) })
	t.Run("podman", func(t *testing.T) { testPodman(t, s) })
}

// testCrane logs in with the ECR password on stdin, pushes, copies across
// repositories, lists tags and pulls with crane.
func testCrane(t *testing.T, s *registryServer) {
	crane := needTool(t, "crane")
	pw := s.password(t)
	home := t.TempDir()
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, ok := client(t, home, stdin, crane, args...)
		if !ok {
			t.Fatalf("crane %v: %s", args, out)
		}
		return strings.TrimSpace(out)
	}
	if out, ok := client(t, home, "", crane, "push", testimage.Busybox(t), s.Host+"/apps:crane", "--insecure"); ok {
		t.Fatalf("crane push without a login succeeded: %s", out)
	}
	run(pw, "auth", "login", s.Host, "-u", "AWS", "--password-stdin")
	run("", "push", testimage.Busybox(t), s.Host+"/apps:crane", "--insecure")
	digest := run("", "digest", s.Host+"/apps:crane", "--insecure")
	before := blobFiles(t, s)
	run("", "copy", s.Host+"/apps:crane", s.Host+"/mirror:copied", "--insecure")
	if n := blobFiles(t, s); n != before {
		t.Errorf("crane copy across repositories stored %d new blobs, want none (mounted)", n-before)
	}
	if got := run("", "digest", s.Host+"/mirror:copied", "--insecure"); got != digest {
		t.Errorf("copied digest %s, want %s", got, digest)
	}
	if tags := run("", "ls", s.Host+"/apps", "--insecure"); tags != "crane" {
		t.Errorf("crane ls: %q", tags)
	}
	out := filepath.Join(t.TempDir(), "pulled.tar")
	run("", "pull", s.Host+"/mirror:copied", out, "--insecure")
	if fi, err := os.Stat(out); err != nil || fi.Size() < 100<<10 {
		t.Fatalf("crane pull wrote %v %v", fi, err)
	}
}

// testPodman logs in as `aws ecr get-login-password | podman login
// --password-stdin` does, pushes an image podman loaded, and pulls it back
// into empty storage.
func testPodman(t *testing.T, s *registryServer) {
	podman := needTool(t, "podman")
	home := t.TempDir()
	store := t.TempDir()
	pm := func(stdin string, args ...string) (string, bool) {
		t.Helper()
		// Storage of its own (vfs: plain directories, nothing mounted), so
		// the host's podman images are neither used nor touched.
		base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"}
		return client(t, home, stdin, podman, append(base, args...)...)
	}
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, ok := pm(stdin, args...)
		if !ok {
			t.Fatalf("podman %v: %s", args, out)
		}
		return out
	}
	loaded := must("", "load", "-i", testimage.Busybox(t))
	_, name, ok := strings.Cut(loaded, "Loaded image: ")
	if !ok {
		t.Fatalf("podman load: %s", loaded)
	}
	must("", "tag", strings.TrimSpace(name), s.Host+"/pods:podman")
	if out, ok := pm("", "push", "--tls-verify=false", s.Host+"/pods:podman"); ok {
		t.Fatalf("podman push without a login succeeded: %s", out)
	}
	if out, ok := pm("not-a-token", "login", "--tls-verify=false", "-u", "AWS", "--password-stdin", s.Host); ok {
		t.Fatalf("podman login with a bad password succeeded: %s", out)
	}
	must(s.password(t), "login", "--tls-verify=false", "-u", "AWS", "--password-stdin", s.Host)
	must("", "push", "--tls-verify=false", s.Host+"/pods:podman")
	imgs := s.describeImages(t, "pods")
	if len(imgs) != 1 || len(imgs[0].ImageTags) != 1 || imgs[0].ImageTags[0] != "podman" {
		t.Fatalf("describe-images after podman push: %+v", imgs)
	}

	must("", "rmi", "-a", "-f")
	must("", "pull", "--tls-verify=false", s.Host+"/pods:podman")
	out := must("", "image", "inspect", "--format", "{{.Digest}}", s.Host+"/pods:podman")
	if strings.TrimSpace(out) != imgs[0].ImageDigest {
		t.Errorf("podman pulled %s, the registry has %s", strings.TrimSpace(out), imgs[0].ImageDigest)
	}
	must("", "rmi", "-a", "-f")
}
