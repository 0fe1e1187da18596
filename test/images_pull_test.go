package test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	gtypes "github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// idleCmd exits promptly on SIGTERM, so stopping does not wait out the
// stop timeout.
var idleCmd = []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"}

// layeredImage is the busybox test image with extra layers of random
// (incompressible) bytes, so images differ and have several layers.
func layeredImage(t *testing.T, layerSizes ...int64) v1.Image {
	t.Helper()
	img, err := testimage.Image(testimage.WithCmd(idleCmd...))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range layerSizes {
		l, err := random.Layer(n, gtypes.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func (s *registryServer) pushImage(t *testing.T, repoTag string, img v1.Image, pw string) {
	t.Helper()
	if err := remote.Write(s.ref(t, repoTag), img, auth(pw)); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

// blobGets counts the registry's "blob sent" access log lines per digest.
func blobGets(t *testing.T, s *testenv.Server) map[string]int {
	t.Helper()
	f, err := os.Open(s.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="registry blob sent"`) {
			continue
		}
		if i := strings.Index(line, "digest=sha256:"); i >= 0 {
			n[line[i+len("digest="):i+len("digest=")+71]]++
		}
	}
	return n
}

// slowProxy serves Gantry's registry on another loopback address at about
// rate bytes per second per response, adding the registry token itself:
// a slow registry, so a pull lasts long enough to be watched.
func slowProxy(t *testing.T, s *registryServer, pw string, rate int) string {
	t.Helper()
	target, _ := url.Parse("http://" + s.Host)
	rp := httputil.NewSingleHostReverseProxy(target)
	director := rp.Director
	rp.Director = func(r *http.Request) {
		director(r)
		r.SetBasicAuth("AWS", pw)
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &throttled{r: resp.Body, rate: rate}
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type throttled struct {
	r    io.ReadCloser
	rate int
}

func (t *throttled) Read(p []byte) (int, error) {
	chunk := t.rate / 20
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := t.r.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(t.rate))
	return n, err
}

func (t *throttled) Close() error { return t.r.Close() }

// TestImagePullOncePerHost starts 10 tasks of one image together, served
// slowly: every task is PENDING with a pullStartedAt while the pull runs,
// each layer crosses the wire once, and pullStoppedAt marks the end.
func TestImagePullOncePerHost(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "fleet")
	pw := s.password(t)
	img := layeredImage(t, 1<<20, 1<<20, 1<<20)
	s.pushImage(t, "fleet:v1", img, pw)
	layers := layerDigests(t, img)
	before := blobGets(t, s.Server)
	proxy := slowProxy(t, s, pw, 1<<20) // each 1 MiB layer takes about a second

	ctx := context.Background()
	client := s.ECS()
	if _, err := client.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String("fleet")}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family: aws.String("fleet"), NetworkMode: types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("256"), Memory: aws.String("512"),
		ContainerDefinitions: []types.ContainerDefinition{{
			Name: aws.String("main"), Image: aws.String(proxy + "/fleet:v1"), StopTimeout: aws.Int32(2),
		}},
	}); err != nil {
		t.Fatal(err)
	}
	run, err := client.RunTask(ctx, &ecs.RunTaskInput{
		Cluster: aws.String("fleet"), TaskDefinition: aws.String("fleet"), Count: aws.Int32(10),
		LaunchType: types.LaunchTypeFargate,
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
			Subnets: []string{s.DefaultSubnet()},
		}},
	})
	if err != nil || len(run.Tasks) != 10 {
		t.Fatalf("run-task: %v %+v", err, run)
	}
	var arns []string
	for _, task := range run.Tasks {
		arns = append(arns, aws.ToString(task.TaskArn))
	}
	sawPulling := false
	deadline := time.Now().Add(3 * time.Minute)
	var tasks []types.Task
	for {
		out, err := client.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("fleet"), Tasks: arns})
		if err != nil {
			t.Fatal(err)
		}
		tasks = out.Tasks
		running := 0
		for _, task := range tasks {
			switch aws.ToString(task.LastStatus) {
			case "RUNNING":
				running++
			case "STOPPED":
				t.Fatalf("task stopped: %s", aws.ToString(task.StoppedReason))
			case "PENDING":
				if task.PullStartedAt != nil && task.PullStoppedAt == nil {
					sawPulling = true
				}
			}
		}
		if running == len(arns) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tasks RUNNING after 3 minutes", running, len(arns))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !sawPulling {
		t.Error("never saw a task PENDING with pullStartedAt and no pullStoppedAt while its image was pulled")
	}
	slow := 0
	for _, task := range tasks {
		start, stop := task.PullStartedAt, task.PullStoppedAt
		if start == nil || stop == nil || stop.Before(*start) || task.StartedAt == nil || task.StartedAt.Before(*stop) {
			t.Fatalf("task %s: pullStartedAt %v, pullStoppedAt %v, startedAt %v", aws.ToString(task.TaskArn), start, stop, task.StartedAt)
		}
		// 3 MiB through a 1 MiB/s-per-layer pipe: the pull took time, and
		// the timestamps say so (a task whose start the loaded host delayed
		// past the pull finds the image cached, so not every task shows it).
		if d := stop.Sub(*start); d >= 700*time.Millisecond {
			slow++
		}
	}
	if slow == 0 {
		t.Error("no task's pullStartedAt..pullStoppedAt covers the second the pull took")
	}
	after := blobGets(t, s.Server)
	for _, l := range layers {
		if n := after[l] - before[l]; n != 1 {
			t.Errorf("layer %s was sent %d times for 10 tasks, want once", l, n)
		}
	}
	cfg, _ := img.ConfigName()
	if n := after[cfg.String()] - before[cfg.String()]; n != 1 {
		t.Errorf("config blob sent %d times, want once", n)
	}
}

// gantryImage runs `gantry image ARGS` against the server's data directory.
func gantryImage(t *testing.T, s *testenv.Server, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), append([]string{"image", args[0], "--data-dir", s.DataDir, "--containerd", "/nonexistent.sock"}, args[1:]...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestImagePullCommand pulls with `gantry image pull`: per-layer progress
// as plain lines in a log and as bars on a terminal, then the cache
// listing, and errors that say what to do.
func TestImagePullCommand(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "tools")
	pw := s.password(t)
	img := layeredImage(t, 2<<20, 2<<20)
	s.pushImage(t, "tools:v1", img, pw)
	s.pushImage(t, "tools:v2", layeredImage(t, 1<<20), pw)
	layers := layerDigests(t, img)
	before := blobGets(t, s.Server)

	// Plain output (not a terminal): a line per layer state.
	out, err := gantryImage(t, s.Server, "pull", s.Host+"/tools:v1")
	if err != nil {
		t.Fatalf("gantry image pull: %v\n%s", err, out)
	}
	for _, l := range layers {
		short := strings.TrimPrefix(l, "sha256:")[:12]
		if !strings.Contains(out, short+": done ") {
			t.Errorf("no done line for layer %s:\n%s", short, out)
		}
	}
	if strings.Contains(out, "\x1b[") || !strings.Contains(out, "Pulled "+s.Host+"/tools:v1 sha256:") {
		t.Errorf("plain output:\n%q", out)
	}
	after := blobGets(t, s.Server)
	for _, l := range layers {
		if after[l]-before[l] != 1 {
			t.Errorf("layer %s sent %d times", l, after[l]-before[l])
		}
	}
	// Pulling again fetches no layer: they are cached.
	if out, err := gantryImage(t, s.Server, "pull", s.Host+"/tools:v1"); err != nil {
		t.Fatalf("second pull: %v\n%s", err, out)
	}
	again := blobGets(t, s.Server)
	for _, l := range layers {
		if again[l] != after[l] {
			t.Errorf("layer %s fetched again on a cached pull", l)
		}
	}

	// By the ECR-style name, which the command routes to the local
	// registry too.
	ecrName := s.Creds.AccountID + ".dkr.ecr." + s.Creds.Region + ".amazonaws.com/tools:v2"
	if out, err := gantryImage(t, s.Server, "pull", ecrName); err != nil || !strings.Contains(out, "Pulled "+ecrName) {
		t.Fatalf("pull by the ECR name: %v\n%s", err, out)
	}

	// On a terminal, from a slow registry: bars redrawn in place.
	s.pushImage(t, "tools:v3", layeredImage(t, 1<<20, 1<<20), pw)
	proxy := slowProxy(t, s, pw, 1<<20)
	cmd := exec.Command(testenv.Binary(t), "image", "pull", "--data-dir", s.DataDir, "--containerd", "/nonexistent.sock", proxy+"/tools:v3")
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var tty strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(&tty, f) }()
	err = cmd.Wait()
	f.Close()
	wg.Wait()
	if err != nil || !strings.Contains(tty.String(), "\x1b[") || !strings.Contains(tty.String(), "done        [==============================] 1.0 MiB/1.0 MiB") ||
		!strings.Contains(tty.String(), "downloading [") {
		t.Errorf("terminal pull: %v\n%q", err, tty.String())
	}

	out, err = gantryImage(t, s.Server, "ls")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	var v1Line string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, s.Host+"/tools:v1 ") {
			v1Line = line
		}
	}
	if !strings.Contains(v1Line, "MiB") || !strings.Contains(v1Line, " ago ") && !strings.Contains(v1Line, " now ") {
		t.Errorf("ls: want the size and last use of tools:v1:\n%s", out)
	}
	if !strings.Contains(out, ecrName+" ") || !strings.Contains(out, "on disk (budget 20 GiB)") {
		t.Errorf("ls:\n%s", out)
	}

	// An index with an arm64 image only.
	arm, err := mutate.ConfigFile(layeredImage(t), &v1.ConfigFile{OS: "linux", Architecture: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	armIndex := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, gtypes.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := remote.WriteIndex(s.ref(t, "tools:arm"), armIndex, auth(pw)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ref, want string }{
		{s.Host + "/tools:arm", "no variant for this host's platform"},
		{s.Host + "/tools:nosuch", "has no such image"},
		{"localhost:" + strings.Split(s.Host, ":")[1] + "/tools:v1", "refused the credentials (or needs some)"},
		{"127.0.0.1:1/tools:v1", "is unreachable from this host"},
		{"Bad//Name", "invalid image reference"},
	} {
		out, err := gantryImage(t, s.Server, "pull", c.ref)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("pull %s: %v, want an error saying %q:\n%s", c.ref, err, c.want, out)
		}
	}
	if out, err := gantryImage(t, s.Server, "pull", s.Host+"/tools:v1", "--creds", "nocolon"); err == nil || !strings.Contains(out, "USER:PASSWORD") {
		t.Errorf("bad --creds: %v\n%s", err, out)
	}
}

// corruptProxy serves Gantry's registry with every blob body's bytes
// flipped (same length): a layer whose digest does not match.
func corruptProxy(t *testing.T, s *registryServer, pw string) string {
	t.Helper()
	target, _ := url.Parse("http://" + s.Host)
	rp := httputil.NewSingleHostReverseProxy(target)
	director := rp.Director
	rp.Director = func(r *http.Request) {
		director(r)
		r.SetBasicAuth("AWS", pw)
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &flipper{resp.Body}
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type flipper struct{ io.ReadCloser }

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	for i := range p[:n] {
		p[i] ^= 0xff
	}
	return n, err
}

// TestImagePullCorruptLayer runs a task whose layers arrive corrupted: it
// stops with CannotPullContainerError, and the cache holds nothing of it.
func TestImagePullCorruptLayer(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "broken")
	pw := s.password(t)
	s.pushImage(t, "broken:v1", layeredImage(t, 1<<20), pw)
	proxy := corruptProxy(t, s, pw)
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "broken")
	registerJSON(t, s.Server, `{"family":"broken","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"`+proxy+`/broken:v1"}]}`)
	task := runTask(t, s.Server, "--cluster", "broken", "--task-definition", "broken", "--network-configuration", awsvpc(defaultSubnet(t, s.Server)))
	got := waitStatus(t, s.Server, "broken", task.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "TaskFailedToStart" || !strings.HasPrefix(got.StoppedReason, "CannotPullContainerError") || !strings.Contains(got.StoppedReason, "was corrupt or cut short") {
		t.Fatalf("stopCode %q, reason %q", got.StopCode, got.StoppedReason)
	}
	out, err := gantryImage(t, s.Server, "ls")
	if err != nil || !strings.Contains(out, "0 images, 0 B on disk") {
		t.Errorf("after a corrupt pull: %v\n%s", err, out)
	}
	ingests, _ := filepath.Glob(filepath.Join(s.DataDir, "containerd", "root", "io.containerd.content.v1.content", "ingest", "*"))
	if len(ingests) > 0 {
		t.Errorf("half-written downloads left in containerd: %v", ingests)
	}
}
