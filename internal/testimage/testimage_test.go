package testimage

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestDockerSave(t *testing.T) {
	tag, _ := name.NewTag("nginx:latest")
	img, err := tarball.ImageFromPath(Web(t), &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(cf.Config.Cmd, " "), "httpd -f") || cf.OS != "linux" || cf.Architecture == "" {
		t.Fatalf("config: %+v", cf)
	}
	if _, ok := cf.Config.ExposedPorts["80/tcp"]; !ok {
		t.Fatalf("exposed ports: %v", cf.Config.ExposedPorts)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	for _, f := range []string{"bin/busybox", "bin/sh", "bin/httpd", "bin/sleep", "bin/nc", "etc/passwd", "etc/group", "tmp/", "var/www/index.html"} {
		if files[f] == nil {
			t.Errorf("layer lacks %s", f)
		}
	}
	if h := files["bin/sh"]; h != nil && (h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox") {
		t.Errorf("bin/sh: %+v", h)
	}
}

func TestOCILayout(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img.tar")
	if err := WriteOCI(p, "example.com/team/app:v1", WithEntrypoint("/bin/sh", "-c"), WithCmd("echo hi"), WithUser("1000"), WithWorkingDir("/tmp"), WithEnv("A=b")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "layout")
	if err := untar(p, out); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "example.com/team/app:v1" {
		t.Fatalf("index: %+v", im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "1000" || c.WorkingDir != "/tmp" || !slices.Equal(c.Entrypoint, []string{"/bin/sh", "-c"}) || !slices.Contains(c.Env, "A=b") {
		t.Fatalf("config: %+v", c)
	}
}

func untar(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dst, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
}

// TestPythonImage: the image holds the interpreter, boto3 and the CLI,
// the libraries they load, and stays a reasonable size.
func TestPythonImage(t *testing.T) {
	p := Python(t)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 250<<20 {
		t.Errorf("python image is %d MiB", fi.Size()>>20)
	}
	tag, _ := name.NewTag(PythonRef)
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers: %d %v", len(layers), err)
	}
	rc, err := layers[1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	all := "\n" + strings.Join(names, "\n") + "\n"
	for _, want := range []string{"\nusr/local/bin/aws\n", "\nusr/local/bin/python3\n", "/boto3/__init__.py\n", "/botocore/data/ecs/", "/awscli/clidriver.py\n", "/os.py\n", "libc.so.6\n", "ld-linux"} {
		if !strings.Contains(all, want) {
			t.Errorf("python image lacks %q", strings.TrimSpace(want))
		}
	}
}
