package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type fioResult struct {
	Dir           string  `json:"dir"`
	SeqWriteMBs   float64 `json:"seqWriteMBs"`
	SeqReadMBs    float64 `json:"seqReadMBs"`
	RandWriteIOPS float64 `json:"randWriteIOPS"`
	RandReadIOPS  float64 `json:"randReadIOPS"`
}

// BenchmarkStorage measures file I/O inside a task on its three kinds of
// storage: ephemeral (the container's overlay on the task's loop-mounted
// ext4), an EFS volume without access point (a bind mount of the tree),
// and an EFS access point with a POSIX user (the FUSE mount served as that
// user); and, on a second server with --efs-mode nfs, the same two EFS
// volumes mounted over NFS from the mount target (internal/efsnfs), as on
// a host without the tree. The floor is the same static binary (bench/fioload) on host
// directories of the same disk, in the same run, alternately before and
// after the task.
// Sequential phases move 1 MiB blocks, random ones 4 KiB; writes end with
// fsync, and the host's page cache is dropped between writes and reads
// (both sides), so reads come from the disk.
//
//	go test -run '^$' -bench Storage -benchtime 1x -timeout 30m ./bench
func BenchmarkStorage(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (drops the page cache)")
	}
	work := b.TempDir()
	bin := filepath.Join(work, "fioload")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./fioload")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build fioload: %v\n%s", err, out)
	}
	code, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(work, "fioload.tar")
	if err := testimage.WriteWithFiles(img, "gantry-test/fioload:latest", []testimage.File{{Name: "fioload", Mode: 0o755, Data: code}}); err != nil {
		b.Fatal(err)
	}
	e := setup(b)
	s := e.s
	s.LoadImage(img)

	var fsys struct{ FileSystemId string }
	s.MustAWS(&fsys, "efs", "create-file-system", "--creation-token", "bench")
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fsys.FileSystemId, "--subnet-id", e.subnet)
	var ap struct{ AccessPointId string }
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fsys.FileSystemId, "--posix-user", "Uid=1001,Gid=1001",
		"--root-directory", "Path=/ap,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=755}")
	tree := filepath.Join(s.DataDir, "efs", fsys.FileSystemId)
	bind := filepath.Join(tree, "bind")
	if err := os.Mkdir(bind, 0o777); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	efs := func(name string, cfg *types.EFSVolumeConfiguration) types.Volume {
		cfg.FileSystemId = aws.String(fsys.FileSystemId)
		return types.Volume{Name: aws.String(name), EfsVolumeConfiguration: cfg}
	}
	// 2 vCPU, the whole machine: the floor has no CPU limit either.
	_, err = e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family: aws.String("fioload"), NetworkMode: types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("2048"), Memory: aws.String("4096"),
		Volumes: []types.Volume{
			efs("bind", &types.EFSVolumeConfiguration{RootDirectory: aws.String("/bind")}),
			efs("ap", &types.EFSVolumeConfiguration{TransitEncryption: types.EFSTransitEncryptionEnabled,
				AuthorizationConfig: &types.EFSAuthorizationConfig{AccessPointId: aws.String(ap.AccessPointId)}}),
		},
		ContainerDefinitions: []types.ContainerDefinition{{
			Name: aws.String("fio"), Image: aws.String("gantry-test/fioload:latest"), Essential: aws.Bool(true),
			MountPoints: []types.MountPoint{
				{SourceVolume: aws.String("bind"), ContainerPath: aws.String("/efs-bind")},
				{SourceVolume: aws.String("ap"), ContainerPath: aws.String("/efs-ap")},
			},
			Command: []string{"sh", "-c", "mkdir -p /eph && exec /fioload -dirs /eph,/efs-bind,/efs-ap -barrier /efs-bind/barrier -out /efs-bind/results.json"},
		}},
	})
	if err != nil {
		b.Fatal(err)
	}

	// The same file system layout served over NFS: a second server whose
	// agent mounts EFS volumes as an agent on another host would, from
	// the mount target's address in the task's network namespace.
	ns := testenv.Start(b, append([]string{"--efs-mode", "nfs"}, runcIsolation...)...)
	ns.LoadImage(img)
	en := &env{s: ns, ecs: ns.ECS(), subnet: ns.DefaultSubnet()}
	if _, err := en.ecs.CreateCluster(ctx, &ecs.CreateClusterInput{ClusterName: aws.String("bench")}); err != nil {
		b.Fatal(err)
	}
	var nfsFS struct{ FileSystemId string }
	ns.MustAWS(&nfsFS, "efs", "create-file-system", "--creation-token", "bench-nfs")
	ns.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", nfsFS.FileSystemId, "--subnet-id", en.subnet)
	var nfsAP struct{ AccessPointId string }
	ns.MustAWS(&nfsAP, "efs", "create-access-point", "--file-system-id", nfsFS.FileSystemId, "--posix-user", "Uid=1001,Gid=1001",
		"--root-directory", "Path=/ap,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=755}")
	nfsBind := filepath.Join(ns.DataDir, "efs", nfsFS.FileSystemId, "bind")
	if err := os.Mkdir(nfsBind, 0o777); err != nil {
		b.Fatal(err)
	}
	_, err = en.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
		Family: aws.String("fioload"), NetworkMode: types.NetworkModeAwsvpc,
		RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate},
		Cpu:                     aws.String("2048"), Memory: aws.String("4096"),
		Volumes: []types.Volume{
			{Name: aws.String("bind"), EfsVolumeConfiguration: &types.EFSVolumeConfiguration{FileSystemId: aws.String(nfsFS.FileSystemId), RootDirectory: aws.String("/bind")}},
			{Name: aws.String("ap"), EfsVolumeConfiguration: &types.EFSVolumeConfiguration{FileSystemId: aws.String(nfsFS.FileSystemId),
				TransitEncryption: types.EFSTransitEncryptionEnabled, AuthorizationConfig: &types.EFSAuthorizationConfig{AccessPointId: aws.String(nfsAP.AccessPointId)}}},
		},
		ContainerDefinitions: []types.ContainerDefinition{{
			Name: aws.String("fio"), Image: aws.String("gantry-test/fioload:latest"), Essential: aws.Bool(true),
			MountPoints: []types.MountPoint{
				{SourceVolume: aws.String("bind"), ContainerPath: aws.String("/efs-bind")},
				{SourceVolume: aws.String("ap"), ContainerPath: aws.String("/efs-ap")},
			},
			// The first directory is a throwaway on ephemeral storage, so
			// that the NFS paths run second and third, like the local EFS
			// paths they are compared with.
			Command: []string{"sh", "-c", "mkdir -p /eph && exec /fioload -dirs /eph,/efs-bind,/efs-ap -barrier /efs-bind/barrier -out /efs-bind/results.json"},
		}},
	})
	if err != nil {
		b.Fatal(err)
	}

	// dropCaches is what makes reads come from the disk: the writes are
	// synced already, so the kernel can drop every clean page.
	dropCaches := func() {
		unix.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Fatal(err)
		}
	}
	// barrier lets fioload (host or task) read once the caches are gone.
	barrier := func(prefix string, done <-chan error) {
		for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(prefix + ".written"); err == nil {
				break
			}
			select {
			case err := <-done:
				b.Fatalf("fioload ended before reading: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				b.Fatal("fioload never finished writing")
			}
		}
		dropCaches()
		if err := os.WriteFile(prefix+".go", nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	read := func(path string) []fioResult {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		var rs []fioResult
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r fioResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				b.Fatal(err)
			}
			rs = append(rs, r)
		}
		return rs
	}

	sum := map[string]*fioResult{}
	add := func(name string, r fioResult) {
		if sum[name] == nil {
			sum[name] = &fioResult{Dir: name}
		}
		a := sum[name]
		a.SeqWriteMBs += r.SeqWriteMBs / float64(b.N)
		a.SeqReadMBs += r.SeqReadMBs / float64(b.N)
		a.RandWriteIOPS += r.RandWriteIOPS / float64(b.N)
		a.RandReadIOPS += r.RandReadIOPS / float64(b.N)
	}
	floorRun := func(i int) {
		// The floor: a host directory on the disk the data directory is on.
		// Three directories, written and read in the same order as the
		// task's three: a disk's write cache fills as the run goes, so
		// each task directory is compared with the host one in its place.
		host := filepath.Join(work, fmt.Sprintf("host-%d", i))
		var hostDirs []string
		for _, d := range []string{"1", "2", "3"} {
			hostDirs = append(hostDirs, filepath.Join(host, d))
			if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		cmd := exec.Command(bin, "-dirs", strings.Join(hostDirs, ","), "-barrier", filepath.Join(host, "barrier"), "-out", filepath.Join(host, "results.json"))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		barrier(filepath.Join(host, "barrier"), done)
		if err := <-done; err != nil {
			b.Fatalf("fioload on the host: %v", err)
		}
		for j, r := range read(filepath.Join(host, "results.json")) {
			add(fmt.Sprintf("floor %d", j), r)
		}
	}
	taskRun := func(e *env, bind string, names ...string) {
		for _, f := range []string{"results.json", "barrier.written", "barrier.go"} {
			os.Remove(filepath.Join(bind, f))
		}
		arns, err := e.runFamily(ctx, "fioload")
		if err != nil {
			b.Fatal(err)
		}
		stopped := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
			defer cancel()
			stopped <- e.waitStatus(wctx, arns, "STOPPED", 500*time.Millisecond)
		}()
		barrier(filepath.Join(bind, "barrier"), stopped)
		if err := <-stopped; err != nil {
			b.Fatal(err)
		}
		rs := read(filepath.Join(bind, "results.json"))
		if len(rs) != 3 {
			b.Fatalf("task results: %+v (task %s)", rs, arns[0])
		}
		for j, name := range names {
			if name != "" {
				add(name, rs[j])
			}
		}
	}
	local := func() {
		taskRun(e, bind, "task: ephemeral storage", "task: EFS, bind mount", "task: EFS access point (FUSE, uid 1001)")
	}
	overNFS := func() {
		taskRun(en, nfsBind, "", "task: EFS over NFS, no access point", "task: EFS access point over NFS (uid 1001)")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Which runs first alternates: whatever the first leaves behind
		// in the disk (its write cache filling) must not always fall on
		// the same side.
		if i%2 == 0 {
			floorRun(i)
			local()
			overNFS()
		} else {
			overNFS()
			local()
			floorRun(i)
		}
	}
	b.StopTimer()

	// The table for docs/benchmarks.md: each task path next to the host
	// directory written in the same place of the run.
	paths := []struct {
		key, name string
		floor     int
	}{
		{"eph", "task: ephemeral storage", 0},
		{"bind", "task: EFS, bind mount", 1},
		{"ap", "task: EFS access point (FUSE, uid 1001)", 2},
		{"nfs", "task: EFS over NFS, no access point", 1},
		{"nfs-ap", "task: EFS access point over NFS (uid 1001)", 2},
	}
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "mean of %d runs; Gantry / floor (host directory, same place in the run)\n", b.N)
	fmt.Fprintf(&tbl, "| path | seq write MB/s | seq read MB/s | rand write 4K IOPS | rand read 4K IOPS |\n|---|---|---|---|---|\n")
	for _, p := range paths {
		r, f := sum[p.name], sum[fmt.Sprintf("floor %d", p.floor)]
		fmt.Fprintf(&tbl, "| %s | %.0f / %.0f = %.2f | %.0f / %.0f = %.2f | %.0f / %.0f = %.2f | %.0f / %.0f = %.2f |\n", p.name,
			r.SeqWriteMBs, f.SeqWriteMBs, r.SeqWriteMBs/f.SeqWriteMBs, r.SeqReadMBs, f.SeqReadMBs, r.SeqReadMBs/f.SeqReadMBs,
			r.RandWriteIOPS, f.RandWriteIOPS, r.RandWriteIOPS/f.RandWriteIOPS, r.RandReadIOPS, f.RandReadIOPS, r.RandReadIOPS/f.RandReadIOPS)
		b.ReportMetric(r.SeqWriteMBs/f.SeqWriteMBs, p.key+"-seqwrite-x")
		b.ReportMetric(r.SeqReadMBs/f.SeqReadMBs, p.key+"-seqread-x")
		b.ReportMetric(r.RandWriteIOPS/f.RandWriteIOPS, p.key+"-randwrite-x")
		b.ReportMetric(r.RandReadIOPS/f.RandReadIOPS, p.key+"-randread-x")
	}
	// Printed, not logged: the benchmark log keeps only a few lines.
	fmt.Print(tbl.String())
	b.ReportMetric(0, "ns/op")
}

// runFamily runs one task of a family in the bench cluster.
func (e *env) runFamily(ctx context.Context, family string) ([]string, error) {
	out, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
		Cluster: aws.String("bench"), TaskDefinition: aws.String(family), LaunchType: types.LaunchTypeFargate,
		NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
	})
	if err != nil {
		return nil, err
	}
	if len(out.Failures) > 0 || len(out.Tasks) != 1 {
		return nil, fmt.Errorf("run-task: %+v", out.Failures)
	}
	return []string{aws.ToString(out.Tasks[0].TaskArn)}, nil
}
