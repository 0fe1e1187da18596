// Package testimage builds small container images from the host's
// busybox-static, so tests (and the README's walkthrough) can run real
// containers without reaching a registry.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is the statically linked busybox the images are built from
// (Debian's busybox-static).
var BusyboxPath = "/bin/busybox"

// Option sets a field of the image config.
type Option func(*v1.Config)

func WithCmd(cmd ...string) Option       { return func(c *v1.Config) { c.Cmd = cmd } }
func WithEntrypoint(ep ...string) Option { return func(c *v1.Config) { c.Entrypoint = ep } }
func WithEnv(kv ...string) Option        { return func(c *v1.Config) { c.Env = append(c.Env, kv...) } }
func WithWorkingDir(dir string) Option   { return func(c *v1.Config) { c.WorkingDir = dir } }
func WithUser(user string) Option        { return func(c *v1.Config) { c.User = user } }
func WithLabel(key, value string) Option { return func(c *v1.Config) { setLabel(c, key, value) } }

// WithExposedPort adds a port such as "80/tcp" (a bare number means tcp).
func WithExposedPort(port string) Option {
	return func(c *v1.Config) {
		if !strings.Contains(port, "/") {
			port += "/tcp"
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		c.ExposedPorts[port] = struct{}{}
	}
}

func setLabel(c *v1.Config, k, v string) {
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	c.Labels[k] = v
}

// WebIndex is the page the example web server image serves.
const WebIndex = `<!DOCTYPE html>
<html><head><title>Gantry</title></head>
<body><h1>Hello from Gantry's example web server</h1>
<p>This page is served by busybox httpd in a Fargate-style task run by Gantry.</p>
</body></html>
`

// Image builds the image: one layer with busybox and its applets, and a
// config made from opts.
func Image(opts ...Option) (v1.Image, error) {
	layerTar, err := rootfs()
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg := v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	for _, o := range opts {
		o(&cfg)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	// containerd picks the manifest for the host platform by these fields.
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	// A fixed date keeps digests stable across builds.
	cf.Created = v1.Time{Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	return mutate.ConfigFile(img, cf)
}

// Write writes a docker-save tarball (what `docker save` makes) of the
// image tagged name.
func Write(path, name string, opts ...Option) error {
	tag, img, err := build(name, opts)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// File is a file to add to an image, such as a static binary a test built.
type File struct {
	Name string // path in the image, without a leading slash
	Mode int64
	Data []byte
}

// WriteWithFiles is Write with files added in a layer over busybox's.
func WriteWithFiles(path, ref string, files []File, opts ...Option) error {
	tag, img, err := build(ref, opts)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: f.Mode, Size: int64(len(f.Data)),
			ModTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// WriteOCI writes an OCI image-layout tarball whose index names the image
// with the org.opencontainers.image.ref.name annotation.
func WriteOCI(path, name string, opts ...Option) error {
	_, img, err := build(name, opts)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "testimage-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": name,
	})); err != nil {
		return err
	}
	return tarDir(dir, path)
}

func build(ref string, opts []Option) (name.Tag, v1.Image, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, nil, fmt.Errorf("image name %q: %w", ref, err)
	}
	img, err := Image(opts...)
	return tag, img, err
}

var (
	cacheMu sync.Mutex
	cached  = map[string]string{}
)

// cachedImage writes an image once per test binary and returns its path.
// The files live in one fixed directory, so test runs do not pile up
// tarballs; each process rebuilds them (it is quick) and renames them into
// place, so concurrent test binaries never read a half-written one.
func cachedImage(t testing.TB, file, ref string, opts ...Option) string {
	t.Helper()
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if p, ok := cached[file]; ok {
		return p
	}
	dir := filepath.Join(os.TempDir(), "gantry-testimage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, file)
	tmp := fmt.Sprintf("%s.%d.tmp", p, os.Getpid())
	if err := Write(tmp, ref, opts...); err != nil {
		os.Remove(tmp)
		t.Fatalf("build test image %s: %v", ref, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	cached[file] = p
	return p
}

// Busybox returns a docker-save tarball of "gantry-test/busybox:latest",
// which runs sh by default.
func Busybox(t testing.TB) string {
	return cachedImage(t, "busybox.tar", "gantry-test/busybox:latest", WithCmd("sh"))
}

// Web returns a docker-save tarball of "nginx:latest": not nginx, but a tiny
// web server on port 80 that stands in for it where no registry is reachable.
func Web(t testing.TB) string {
	return cachedImage(t, "web.tar", "nginx:latest", WebOptions()...)
}

// WebOptions are the config of the example web server image.
func WebOptions() []Option {
	return []Option{
		// httpd as PID 1 would ignore SIGTERM (PID 1 gets no default
		// handlers) and every stop would wait for SIGKILL; the shell exits
		// on it, as nginx would.
		WithCmd("sh", "-c", "trap 'exit 0' TERM; httpd -f -v -p 80 -h /var/www & wait"),
		WithExposedPort("80/tcp"),
		WithLabel("org.opencontainers.image.description", "Gantry's example web server (busybox httpd)"),
	}
}

// rootfs is the layer: busybox, a link per applet in /bin, users, /tmp and
// the web root.
func rootfs() ([]byte, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", BusyboxPath, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"bin", "etc", "root", "home", "home/app", "proc", "sys", "dev", "var", "var/www", "usr", "usr/bin", "sbin"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := file("bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data string
	}{
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/group", 0o644, "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"},
		{"etc/hosts", 0o644, "127.0.0.1 localhost\n"},
		{"var/www/index.html", 0o644, WebIndex},
	}
	for _, f := range files {
		if err := file(f.name, f.mode, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the files below dir into a tarball at path.
func tarDir(dir, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
