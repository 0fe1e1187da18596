package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type efsFS struct {
	FileSystemId         string
	FileSystemArn        string
	CreationToken        string
	LifeCycleState       string
	NumberOfMountTargets int
	Encrypted            bool
	PerformanceMode      string
	ThroughputMode       string
	Name                 string
	Tags                 []struct{ Key, Value string }
}

type efsMT struct {
	MountTargetId, FileSystemId, SubnetId, IpAddress, VpcId, LifeCycleState, AvailabilityZoneName string
}

type efsAP struct {
	AccessPointId, FileSystemId, LifeCycleState string
	PosixUser                                   struct{ Uid, Gid int64 }
	RootDirectory                               struct {
		Path         string
		CreationInfo struct {
			OwnerUid, OwnerGid int64
			Permissions        string
		}
	}
}

// The EFS API through the real CLI: creation-token idempotency, describes
// by id and token with paging, mount targets per AZ, access points, tags,
// and DeleteFileSystem refused while a mount target exists.
func TestEFSAPI(t *testing.T) {
	s := testenv.Start(t)
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "tok-1", "--encrypted",
		"--performance-mode", "maxIO", "--throughput-mode", "bursting", "--tags", "Key=Name,Value=shared")
	if !strings.HasPrefix(fs.FileSystemId, "fs-") || fs.LifeCycleState != "creating" || !fs.Encrypted || fs.PerformanceMode != "maxIO" || fs.Name != "shared" {
		t.Fatalf("create-file-system: %+v", fs)
	}
	if code, msg := s.AWSError("efs", "create-file-system", "--creation-token", "tok-1"); code != "FileSystemAlreadyExists" || !strings.Contains(msg, fs.FileSystemId) {
		t.Errorf("same creation token: %s %q, want FileSystemAlreadyExists naming %s", code, msg, fs.FileSystemId)
	}
	var fs2 efsFS
	s.MustAWS(&fs2, "efs", "create-file-system", "--creation-token", "tok-2")
	if code, _ := s.AWSError("efs", "create-file-system", "--creation-token", "tok-3", "--throughput-mode", "provisioned"); code != "BadRequest" {
		t.Errorf("provisioned without throughput: %s, want BadRequest", code)
	}

	var list struct{ FileSystems []efsFS }
	s.MustAWS(&list, "efs", "describe-file-systems", "--page-size", "1") // the CLI follows NextMarker
	if len(list.FileSystems) != 2 || list.FileSystems[0].FileSystemId == list.FileSystems[1].FileSystemId {
		t.Errorf("describe-file-systems with pages of 1: %+v", list.FileSystems)
	}
	s.MustAWS(&list, "efs", "describe-file-systems", "--creation-token", "tok-2")
	if len(list.FileSystems) != 1 || list.FileSystems[0].FileSystemId != fs2.FileSystemId || list.FileSystems[0].LifeCycleState != "available" {
		t.Errorf("by creation token: %+v", list.FileSystems)
	}
	if code, _ := s.AWSError("efs", "describe-file-systems", "--file-system-id", "fs-0123456789abcdef0"); code != "FileSystemNotFound" {
		t.Errorf("unknown id: %s, want FileSystemNotFound", code)
	}

	subnet := s.DefaultSubnet()
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", subnet)
	if !strings.HasPrefix(mt.MountTargetId, "fsmt-") || mt.IpAddress == "" || mt.SubnetId != subnet || mt.VpcId == "" {
		t.Fatalf("create-mount-target: %+v", mt)
	}
	var sn struct{ Subnets []struct{ CidrBlock string } }
	s.MustAWS(&sn, "ec2", "describe-subnets", "--subnet-ids", subnet)
	if len(sn.Subnets) != 1 || !inCIDR(mt.IpAddress, sn.Subnets[0].CidrBlock) {
		t.Errorf("mount target address %s not in subnet %+v", mt.IpAddress, sn.Subnets)
	}
	if code, _ := s.AWSError("efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", subnet); code != "MountTargetConflict" {
		t.Errorf("second mount target in one AZ: %s, want MountTargetConflict", code)
	}
	if code, _ := s.AWSError("efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", "subnet-0123456789abcdef0"); code != "SubnetNotFound" {
		t.Errorf("unknown subnet: %s, want SubnetNotFound", code)
	}
	var mts struct{ MountTargets []efsMT }
	s.MustAWS(&mts, "efs", "describe-mount-targets", "--file-system-id", fs.FileSystemId)
	if len(mts.MountTargets) != 1 || mts.MountTargets[0].MountTargetId != mt.MountTargetId {
		t.Errorf("describe-mount-targets: %+v", mts)
	}
	s.MustAWS(&list, "efs", "describe-file-systems", "--file-system-id", fs.FileSystemId)
	if len(list.FileSystems) != 1 || list.FileSystems[0].NumberOfMountTargets != 1 {
		t.Errorf("NumberOfMountTargets: %+v", list.FileSystems)
	}

	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", `{"Uid": 1000, "Gid": 1000, "SecondaryGids": [2000]}`,
		"--root-directory", "Path=/app,CreationInfo={OwnerUid=1000,OwnerGid=1000,Permissions=750}")
	if !strings.HasPrefix(ap.AccessPointId, "fsap-") || ap.PosixUser.Uid != 1000 || ap.RootDirectory.Path != "/app" || ap.RootDirectory.CreationInfo.Permissions != "750" {
		t.Fatalf("create-access-point: %+v", ap)
	}
	if code, _ := s.AWSError("efs", "create-access-point", "--file-system-id", fs.FileSystemId, "--root-directory", "Path=/a/../b"); code != "BadRequest" {
		t.Errorf("root directory with '..': %s, want BadRequest", code)
	}
	var aps struct{ AccessPoints []efsAP }
	s.MustAWS(&aps, "efs", "describe-access-points", "--file-system-id", fs.FileSystemId)
	if len(aps.AccessPoints) != 1 || aps.AccessPoints[0].AccessPointId != ap.AccessPointId {
		t.Errorf("describe-access-points: %+v", aps)
	}

	s.MustAWS(nil, "efs", "tag-resource", "--resource-id", fs.FileSystemId, "--tags", "Key=team,Value=storage")
	var tags struct{ Tags []struct{ Key, Value string } }
	s.MustAWS(&tags, "efs", "list-tags-for-resource", "--resource-id", fs.FileSystemId)
	if len(tags.Tags) != 2 {
		t.Errorf("list-tags-for-resource: %+v, want Name and team", tags)
	}

	if code, _ := s.AWSError("efs", "delete-file-system", "--file-system-id", fs.FileSystemId); code != "FileSystemInUse" {
		t.Errorf("delete with a mount target: %s, want FileSystemInUse", code)
	}
	s.MustAWS(nil, "efs", "delete-mount-target", "--mount-target-id", mt.MountTargetId)
	if code, _ := s.AWSError("efs", "delete-mount-target", "--mount-target-id", mt.MountTargetId); code != "MountTargetNotFound" {
		t.Errorf("delete mount target twice: %s, want MountTargetNotFound", code)
	}
	s.MustAWS(nil, "efs", "delete-file-system", "--file-system-id", fs.FileSystemId)
	if code, _ := s.AWSError("efs", "describe-access-points", "--access-point-id", ap.AccessPointId); code != "AccessPointNotFound" {
		t.Errorf("access point of a deleted file system: %s, want AccessPointNotFound", code)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "efs", fs.FileSystemId)); !os.IsNotExist(err) {
		t.Errorf("deleted file system's tree still there: %v", err)
	}
	s.MustAWS(&list, "efs", "describe-file-systems")
	if len(list.FileSystems) != 1 || list.FileSystems[0].FileSystemId != fs2.FileSystemId {
		t.Errorf("after delete: %+v", list.FileSystems)
	}
}

func inCIDR(ip, cidr string) bool {
	// Good enough for the default /20 subnets: compare the first two octets.
	a, b := strings.Split(ip, "."), strings.Split(cidr, ".")
	return len(a) == 4 && len(b) == 4 && a[0] == b[0] && a[1] == b[1]
}

// Tasks on an EFS access point: two tasks appending to one file at once
// lose no line; the access point's root directory is created with its
// CreationInfo on first use and is all a task sees (a file in the file
// system's root stays invisible, `..` at the mount's root is the
// container's own /); after a server restart a task started later reads
// everything the earlier ones wrote. Exit codes say what each task saw.
func TestEFSTasksShareData(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "tasks")
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", "Uid=1000,Gid=1000",
		"--root-directory", "Path=/app/data,CreationInfo={OwnerUid=1000,OwnerGid=1001,Permissions=750}")
	// Above the access point's root, where no task of it may look.
	if err := os.WriteFile(filepath.Join(s.DataDir, "efs", fs.FileSystemId, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	def := func(family, script string) string {
		return `{"family": "` + family + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
			"volumes": [{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `",
				"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "` + ap.AccessPointId + `", "iam": "DISABLED"}}}],
			"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true,
				"mountPoints": [{"sourceVolume": "shared", "containerPath": "/mnt/efs"}],
				"command": ["sh", "-c", "` + script + `"]}]}`
	}
	registerJSON(t, s, def("writer", `i=0; while [ $i -lt 300 ]; do echo line-$i >> /mnt/efs/log; i=$((i+1)); done; exit 42`))
	// Without a mount target the file system is unreachable.
	if code, msg := s.AWSError("ecs", "run-task", "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "writer",
		"--network-configuration", awsvpc(s.DefaultSubnet())); code != "InvalidParameterException" || !strings.Contains(msg, "mount target") {
		t.Errorf("run-task without a mount target: %s %q", code, msg)
	}
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())

	var out cliTasks
	s.MustAWS(&out, "ecs", "run-task", "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "writer",
		"--count", "2", "--network-configuration", awsvpc(s.DefaultSubnet()))
	if len(out.Tasks) != 2 {
		t.Fatalf("run-task --count 2: %+v", out)
	}
	for _, task := range out.Tasks {
		task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
		if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
			t.Errorf("writer %s: exit %v, reason %q", task.TaskArn, c.ExitCode, task.StoppedReason)
		}
	}
	root := filepath.Join(s.DataDir, "efs", fs.FileSystemId, "app", "data")
	if st, err := os.Stat(root); err != nil {
		t.Fatalf("access point root: %v", err)
	} else if st.Mode().Perm() != 0o750 || !ownedBy(st, 1000, 1001) {
		t.Errorf("access point root made with mode %v, want 0750 owned by 1000:1001", st.Mode())
	}
	if b, err := os.ReadFile(filepath.Join(root, "log")); err != nil || strings.Count(string(b), "\n") != 600 {
		t.Errorf("shared log after two concurrent writers: %d lines (%v), want 600", strings.Count(string(b), "\n"), err)
	}

	s.Restart()
	registerJSON(t, s, def("reader", `n=$(cat /mnt/efs/log | wc -l); [ $n -eq 600 ] || exit 1; [ -e /mnt/efs/secret ] && exit 2; cd /mnt/efs && ls .. | grep -q secret && exit 3; ls -a /mnt/efs | grep -q secret && exit 4; exit 42`))
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "reader",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Errorf("reader after restart: exit %v (1: lost lines, 2-4: saw above the access point's root), reason %q", c.ExitCode, task.StoppedReason)
	}
	assertNothingLeft(t, s)
}

func ownedBy(st os.FileInfo, uid, gid uint32) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Uid == uid && sys.Gid == gid
}
