package images

import (
	"context"
	"fmt"
	"github.com/containerd/containerd"
	"github.com/opencontainers/go-digest"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	"github.com/google/go-containerregistry/pkg/registry"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/containerd/containerdtest"
	"github.com/gantry-dev/gantry/internal/testimage"
)

func TestNormalize(t *testing.T) {
	const dgst = "sha256:0123456789012345678901234567890123456789012345678901234567890123"
	for in, want := range map[string]string{
		"nginx":                          "docker.io/library/nginx:latest",
		"nginx:1.27":                     "docker.io/library/nginx:1.27",
		"bitnami/redis":                  "docker.io/bitnami/redis:latest",
		"public.ecr.aws/nginx/nginx:1":   "public.ecr.aws/nginx/nginx:1",
		"localhost:5000/app":             "localhost:5000/app:latest",
		"nginx@" + dgst:                  "docker.io/library/nginx@" + dgst,
		"nginx:1.27@" + dgst:             "docker.io/library/nginx@" + dgst,
		"docker.io/library/nginx:latest": "docker.io/library/nginx:latest",
	} {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "library/UPPER", "nginx:", "a b"} {
		if got, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) = %q, want an error", bad, got)
		}
	}
}

func TestLoadAndEnsure(t *testing.T) {
	client, _ := containerdtest.Start(t)
	ctx := containerdtest.Context(t)

	// docker save format, short name in RepoTags.
	f, err := os.Open(testimage.Web(t))
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(ctx, client, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 || loaded[0].Name != "docker.io/library/nginx:latest" || !strings.HasPrefix(loaded[0].Digest, "sha256:") {
		t.Fatalf("loaded %+v", loaded)
	}

	// OCI layout with a short ref.name annotation.
	oci := filepath.Join(t.TempDir(), "oci.tar")
	if err := testimage.WriteOCI(oci, "team/app:v2", testimage.WithCmd("sleep", "1")); err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(oci)
	if err != nil {
		t.Fatal(err)
	}
	loadedOCI, err := Load(ctx, client, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(loadedOCI) != 1 || loadedOCI[0].Name != "docker.io/team/app:v2" {
		t.Fatalf("loaded %+v", loadedOCI)
	}

	var msgs []string
	progress := func(m string) { msgs = append(msgs, m) }
	for ref, want := range map[string]string{
		"nginx":                           loaded[0].Digest,
		"nginx:latest":                    loaded[0].Digest,
		"docker.io/team/app:v2":           loadedOCI[0].Digest,
		"team/app@" + loadedOCI[0].Digest: loadedOCI[0].Digest,
	} {
		img, err := Ensure(ctx, client, ref, progress)
		if err != nil {
			t.Fatalf("Ensure(%q): %v", ref, err)
		}
		if Digest(img) != want {
			t.Errorf("Ensure(%q) digest %s, want %s", ref, Digest(img), want)
		}
		ok, err := img.IsUnpacked(ctx, Snapshotter)
		if err != nil || !ok {
			t.Errorf("Ensure(%q): unpacked %v, %v", ref, ok, err)
		}
		cfg, err := img.Spec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ref == "nginx" && !strings.Contains(strings.Join(cfg.Config.Cmd, " "), "httpd") {
			t.Errorf("nginx config %+v", cfg.Config)
		}
	}
	if len(msgs) != 0 {
		t.Errorf("local images should not report pull progress: %q", msgs)
	}
}

func TestEnsureMissingFailsFast(t *testing.T) {
	client, _ := containerdtest.Start(t)
	ctx := containerdtest.Context(t)
	// A port nothing listens on: the pull must fail at once, never reach
	// beyond this host, and say what to do.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	start := time.Now()
	_, err = Ensure(ctx, client, addr+"/nothing/here:1", nil)
	if err == nil {
		t.Fatal("Ensure of a missing image succeeded")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "CannotPullContainerError: ") || !strings.Contains(msg, addr+"/nothing/here:1") || !strings.Contains(msg, "gantry image load") {
		t.Errorf("error %q", msg)
	}
	if !IsPullError(err) {
		t.Errorf("not a PullError: %T", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to fail", d)
	}
	t.Log(msg)

	// A registry that accepts connections and never answers is bounded by
	// the resolve timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start = time.Now()
	_, err = Ensure(ctx, client, silent.Addr().String()+"/slow:1", nil, PullOptions{ResolveTimeout: 2 * time.Second})
	if err == nil || !strings.HasPrefix(err.Error(), "CannotPullContainerError: ") {
		t.Fatalf("silent registry: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("silent registry took %s to fail", d)
	}
}

// TestEnsurePulls pulls from a real registry implementation
// (go-containerregistry's) served on loopback.
func TestEnsurePulls(t *testing.T) {
	client, _ := containerdtest.Start(t)
	ctx := containerdtest.Context(t)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	// Put the image in the registry with containerd's own push, then drop
	// it (and, by the synchronous GC, its content) locally.
	ref := host + "/team/web:v1"
	tarball := filepath.Join(t.TempDir(), "web.tar")
	if err := testimage.Write(tarball, ref, testimage.WebOptions()...); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(ctx, client, f)
	f.Close()
	if err != nil || len(loaded) != 1 {
		t.Fatalf("load: %v %v", loaded, err)
	}
	want := loaded[0].Digest
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, config.HostOptions{DefaultScheme: "http"})})
	if err := client.Push(ctx, ref, mustGet(t, client, ctx, ref).Target(), containerd.WithResolver(resolver)); err != nil {
		t.Fatal(err)
	}
	if err := client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ContentStore().Info(ctx, mustDigest(t, want)); err == nil {
		t.Fatal("content still present after delete; the pull below would not download")
	}

	var msgs []string
	got, err := Ensure(ctx, client, ref, func(m string) { msgs = append(msgs, m) })
	if err != nil {
		t.Fatal(err)
	}
	if Digest(got) != want {
		t.Errorf("digest %s, want %s", Digest(got), want)
	}
	if ok, err := got.IsUnpacked(ctx, Snapshotter); err != nil || !ok {
		t.Errorf("unpacked %v %v", ok, err)
	}
	if len(msgs) == 0 || !strings.HasPrefix(msgs[len(msgs)-1], "pulled "+ref) {
		t.Errorf("progress %q", msgs)
	}

	// Second time it is local: the registry is not needed.
	reg.Close()
	if _, err := Ensure(ctx, client, ref, nil); err != nil {
		t.Fatalf("local after pull: %v", err)
	}
}

func mustGet(t *testing.T, client *containerd.Client, ctx context.Context, ref string) containerd.Image {
	t.Helper()
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDigest(t *testing.T, s string) digest.Digest {
	t.Helper()
	d, err := digest.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestEnsureSingleFlight starts ten Ensures of one image at once, under two
// names: one pull, each blob fetched once, every caller gets the image.
func TestEnsureSingleFlight(t *testing.T) {
	client, _ := containerdtest.Start(t)
	ctx := containerdtest.Context(t)
	var mu sync.Mutex
	gets := map[string]int{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			mu.Lock()
			gets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
			mu.Unlock()
			time.Sleep(300 * time.Millisecond) // a slow registry, so the calls overlap
		}
		inner.ServeHTTP(w, r)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/team/web:v1"
	tarball := filepath.Join(t.TempDir(), "web.tar")
	if err := testimage.Write(tarball, ref, testimage.WebOptions()...); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(ctx, client, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, config.HostOptions{DefaultScheme: "http"})})
	if err := client.Push(ctx, ref, mustGet(t, client, ctx, ref).Target(), containerd.WithResolver(resolver)); err != nil {
		t.Fatal(err)
	}
	if err := client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	other := host + "/team/web@" + loaded[0].Digest // same image, another name
	mu.Lock()
	gets = map[string]int{}
	mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	waited := make(chan bool, 10)
	for i := 0; i < 10; i++ {
		name := ref
		if i%2 == 1 {
			name = other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := false
			img, err := Ensure(ctx, client, name, nil, PullOptions{OnProgress: func(p Progress) { w = w || p.Waiting }})
			if err == nil && Digest(img) != loaded[0].Digest {
				err = fmt.Errorf("%s: digest %s", name, Digest(img))
			}
			errs <- err
			waited <- w
		}()
	}
	wg.Wait()
	close(errs)
	close(waited)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	followers := 0
	for w := range waited {
		if w {
			followers++
		}
	}
	if followers == 0 {
		t.Error("no Ensure waited for another's pull")
	}
	for blob, n := range gets {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", blob, n)
		}
	}
	if len(gets) < 2 {
		t.Errorf("blobs fetched: %v", gets)
	}
	for _, name := range []string{ref, other} {
		if _, err := client.GetImage(ctx, name); err != nil {
			t.Errorf("%s not recorded: %v", name, err)
		}
	}
}
