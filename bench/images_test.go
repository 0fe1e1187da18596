package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	ctrd "github.com/containerd/containerd"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	gtypes "github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// floorNamespace is where the floors keep what they make on the server's
// containerd (the ctr floor's image, the runsc floor's sandboxes through
// containerd): the same daemon, disk and registry as the tasks.
const floorNamespace = "gantry-bench-floor"

type imageEnv struct {
	*env
	ref    string // HOST/big:v1 in Gantry's registry
	pw     string
	client *ctrd.Client
}

// setupImages starts a server, pushes a 200 MB image of 10 layers of
// random (incompressible) bytes to its registry, and registers a task
// definition running it.
func setupImages(b *testing.B) *imageEnv {
	b.Helper()
	s := testenv.Start(b, runcIsolation...)
	e := &imageEnv{env: &env{s: s, ecs: s.ECS(), subnet: s.DefaultSubnet()}}
	s.MustAWS(nil, "ecr", "create-repository", "--repository-name", "big")
	out, _, code := s.AWS("ecr", "get-login-password")
	if code != 0 {
		b.Fatal("get-login-password failed")
	}
	if err := json.Unmarshal([]byte(out), &e.pw); err != nil {
		e.pw = strings.TrimSpace(out)
	}
	img, err := testimage.Image(testimage.WithCmd(idle...))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		l, err := random.Layer(20<<20, gtypes.OCILayer)
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	e.ref = s.RegistryListen + "/big:v1"
	ref, err := name.ParseReference(e.ref, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "AWS", Password: e.pw})); err != nil {
		b.Fatal(err)
	}
	size := imageBytes(b, img)
	b.Logf("pushed %s: %d MB in 11 layers in %s (go-containerregistry, compressing as it goes)", e.ref, size/1e6, time.Since(t0).Round(time.Millisecond))
	ctx := context.Background()
	if _, err := e.ecs.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String("bench")}); err != nil {
		b.Fatal(err)
	}
	if _, err := e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family: aws.String("idle"), NetworkMode: types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("256"), Memory: aws.String("512"),
		ContainerDefinitions: []types.ContainerDefinition{{
			Name: aws.String("idle"), Image: aws.String(e.ref), StopTimeout: aws.Int32(2),
		}},
	}); err != nil {
		b.Fatal(err)
	}
	e.client, err = ctrd.New(s.ContainerdAddress(), ctrd.WithDefaultNamespace(containerd.Namespace))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		e.ctr("images", "rm", "--sync", e.ref)
		e.client.Close()
	})
	return e
}

func imageBytes(b *testing.B, img v1.Image) int64 {
	ls, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, l := range ls {
		s, _ := l.Size()
		n += s
	}
	return n
}

func (e *imageEnv) ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"-a", e.s.ContainerdAddress(), "-n", floorNamespace}, args...)...).CombinedOutput()
	return string(out), err
}

// uncache removes the image from Gantry's cache and the floor's namespace,
// and checks containerd's content store no longer has its layers (content
// is shared between namespaces, so one side's copy would make the other's
// pull a no-op).
func (e *imageEnv) uncache(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	if err := images.Remove(ctx, e.client, e.ref); err != nil && !errors.Is(err, images.ErrNotCached) {
		b.Fatal(err)
	}
	e.ctr("images", "rm", "--sync", e.ref)
	if n, err := images.DiskUsage(ctx, e.client); err != nil || n > 20<<20 {
		b.Fatalf("the cache still holds %d bytes after removing the image (%v)", n, err)
	}
}

// gantryStart runs one task and returns RunTask -> startedAt.
func (e *imageEnv) gantryStart(b *testing.B) time.Duration {
	b.Helper()
	ctx := context.Background()
	t0 := time.Now()
	arns, err := e.run(ctx, 1)
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err = e.waitStatus(wctx, arns, "RUNNING", 20*time.Millisecond)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	at, err := e.startedAt(ctx, arns)
	if err != nil {
		b.Fatal(err)
	}
	e.stopAll(b, arns)
	return at.Sub(t0)
}

// floorStart is `ctr images pull` (when pull) and `ctr run -d` of the same
// image from the same registry on the same containerd.
func (e *imageEnv) floorStart(b *testing.B, id string, pull bool) time.Duration {
	b.Helper()
	t0 := time.Now()
	if pull {
		if out, err := e.ctr("images", "pull", "--plain-http", "--user", "AWS:"+e.pw, e.ref); err != nil {
			b.Fatalf("ctr pull: %v\n%s", err, out)
		}
	}
	if out, err := e.ctr(append([]string{"run", "-d", e.ref, id}, idle...)...); err != nil {
		b.Fatalf("ctr run: %v\n%s", err, out)
	}
	d := time.Since(t0)
	e.ctr("task", "kill", "-s", "KILL", id)
	for j := 0; j < 100; j++ {
		if _, err := e.ctr("task", "rm", id); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.ctr("container", "rm", id)
	return d
}

// BenchmarkImageStart compares RunTask -> RUNNING of a task whose 200 MB,
// 11-layer image is in Gantry's registry with the floor measured in the
// same run, alternating the two so both see the same host:
//
//   - cold: nothing cached; floor `ctr images pull --plain-http --user` +
//     `ctr run -d`;
//   - warm: the image cached; floor `ctr run -d`.
//
// Reported: each side's p50 and the ratio of the medians (x-floor).
func BenchmarkImageStart(b *testing.B) {
	e := setupImages(b)
	b.Run("cold", func(b *testing.B) {
		var g, f []time.Duration
		for i := 0; i < b.N; i++ {
			e.uncache(b)
			g = append(g, e.gantryStart(b))
			e.uncache(b)
			f = append(f, e.floorStart(b, "cold"+strconv.Itoa(i), true))
		}
		reportRatio(b, g, f)
		reportSteps(b, e.s.LogPath(), "")
	})
	b.Run("warm", func(b *testing.B) {
		// Both sides have the image: one start each, uncounted, makes sure.
		e.gantryStart(b)
		e.floorStart(b, "warmup", true)
		logStart := fileSize(e.s.LogPath())
		var g, f []time.Duration
		for i := 0; i < b.N; i++ {
			g = append(g, e.gantryStart(b))
			f = append(f, e.floorStart(b, "warm"+strconv.Itoa(i), false))
		}
		reportRatio(b, g, f)
		// The start steps of these warm starts only.
		if raw, err := os.ReadFile(e.s.LogPath()); err == nil && int64(len(raw)) > logStart {
			tail := filepath.Join(b.TempDir(), "warm.log")
			if os.WriteFile(tail, raw[logStart:], 0o600) == nil {
				reportSteps(b, tail, "")
			}
		}
	})
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func medianDur(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func reportRatio(b *testing.B, gantry, floor []time.Duration) {
	g, f := medianDur(gantry), medianDur(floor)
	b.ReportMetric(float64(g.Microseconds())/1000, "gantry-p50-ms")
	b.ReportMetric(float64(f.Microseconds())/1000, "floor-p50-ms")
	b.ReportMetric(float64(g)/float64(f), "x-floor")
	b.ReportMetric(0, "ns/op")
	b.Logf("gantry %v, floor %v (each sample: gantry %v; floor %v)", g, f, gantry, floor)
}

// BenchmarkRegistryThroughput pushes and pulls the 200 MB image to and from
// Gantry's registry with skopeo, next to skopeo copying the same OCI layout
// between two directories in the same run (the floor: the same tool's
// reading, hashing and writing, without HTTP or the registry).
func BenchmarkRegistryThroughput(b *testing.B) {
	e := setupImages(b)
	ref, err := name.ParseReference(e.ref, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "AWS", Password: e.pw}))
	if err != nil {
		b.Fatal(err)
	}
	src := b.TempDir()
	lp, err := layout.Write(src, empty.Index)
	if err != nil {
		b.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		b.Fatal(err)
	}
	mb := float64(imageBytes(b, img)) / 1e6
	skopeo := func(args ...string) time.Duration {
		b.Helper()
		cmd := exec.Command("skopeo", append([]string{"--insecure-policy"}, args...)...)
		cmd.Env = append(cmd.Environ(), "HOME="+b.TempDir())
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("skopeo %v: %v\n%s", args, err, out)
		}
		return time.Since(t0)
	}
	creds := []string{"--dest-creds", "AWS:" + e.pw, "--dest-tls-verify=false"}
	var push, pull, floor []time.Duration
	for i := 0; i < b.N; i++ {
		// A new repository each time, so every blob crosses the wire.
		repo := "tp" + strconv.Itoa(i)
		e.s.MustAWS(nil, "ecr", "create-repository", "--repository-name", repo)
		dst := e.s.RegistryListen + "/" + repo + ":v1"
		push = append(push, skopeo(append([]string{"copy", "oci:" + src}, append(creds, "docker://"+dst)...)...))
		pull = append(pull, skopeo("copy", "--src-creds", "AWS:"+e.pw, "--src-tls-verify=false", "docker://"+dst, "oci:"+b.TempDir()))
		floor = append(floor, skopeo("copy", "oci:"+src, "oci:"+b.TempDir()))
		// skopeo remembers (in root's /var/lib/containers/cache) which
		// repository has each blob and would mount it into the next one
		// instead of uploading: the repository goes, so the next push
		// uploads every byte again.
		e.s.MustAWS(nil, "ecr", "delete-repository", "--repository-name", repo, "--force")
	}
	rate := func(d []time.Duration) float64 { return mb / medianDur(d).Seconds() }
	b.ReportMetric(rate(push), "push-MB/s")
	b.ReportMetric(rate(pull), "pull-MB/s")
	b.ReportMetric(rate(floor), "floor-dir-copy-MB/s")
	b.ReportMetric(rate(push)/rate(floor), "push-x-floor")
	b.ReportMetric(rate(pull)/rate(floor), "pull-x-floor")
	b.ReportMetric(0, "ns/op")
	b.Logf("%.0f MB: push %v, pull %v, dir copy %v", mb, push, pull, floor)
}
