package test

import (
	"fmt"
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

// Tasks sharing an EFS file system, in gVisor sandboxes (the default
// isolation) and runc containers at once: three tasks appending to one
// file through an access point (a FUSE mount per task) and three to
// another without one (a bind mount of the tree) lose no line and tear
// none, two sandboxes and a container on each; the access point's root
// directory is created with its CreationInfo on first use and is all a
// task sees (a file in the file system's root stays invisible, `..` at
// the mount's root is the container's own /); after a server restart a
// task started later reads everything the earlier ones wrote and runs a
// program from the volume (exec maps the file). Exit codes say what each
// task saw.
func TestEFSTasksShareData(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs-runc", "--settings", "name=isolation,value=container")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "tasks")
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", "Uid=1000,Gid=1000",
		"--root-directory", "Path=/app/data,CreationInfo={OwnerUid=1000,OwnerGid=1001,Permissions=750}")
	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	// Above the access point's root, where no task of it may look.
	if err := os.WriteFile(filepath.Join(tree, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The volume without access point: a rootDirectory, as the container's root.
	if err := os.Mkdir(filepath.Join(tree, "plain"), 0o755); err != nil {
		t.Fatal(err)
	}
	withAP := `{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `",
		"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "` + ap.AccessPointId + `", "iam": "DISABLED"}}}`
	plain := `{"name": "plain", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `", "rootDirectory": "/plain"}}`
	def := func(family, volumes, mounts, script string) string {
		return `{"family": "` + family + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
			"volumes": [` + volumes + `],
			"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true,
				"mountPoints": [` + mounts + `],
				"command": ["sh", "-c", "` + script + `"]}]}`
	}
	// Each writer waits for "go" (made once every writer runs), so all
	// six append at the same time.
	writer := `while [ ! -e /mnt/efs/go ]; do sleep 0.1; done; i=0; while [ $i -lt 300 ]; do echo line-$i >> /mnt/efs/log; i=$((i+1)); done; exit 42`
	registerJSON(t, s, def("writer", withAP, `{"sourceVolume": "shared", "containerPath": "/mnt/efs"}`, writer))
	registerJSON(t, s, def("writer-plain", plain, `{"sourceVolume": "plain", "containerPath": "/mnt/efs"}`, writer))
	// Without a mount target the file system is unreachable.
	if code, msg := s.AWSError("ecs", "run-task", "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "writer",
		"--network-configuration", awsvpc(s.DefaultSubnet())); code != "InvalidParameterException" || !strings.Contains(msg, "mount target") {
		t.Errorf("run-task without a mount target: %s %q", code, msg)
	}
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())

	root := filepath.Join(tree, "app", "data")
	var writers []string // cluster, task ARN
	for _, family := range []string{"writer", "writer-plain"} {
		for _, run := range []struct {
			cluster string
			count   string
		}{{"efs", "2"}, {"efs-runc", "1"}} {
			var out cliTasks
			s.MustAWS(&out, "ecs", "run-task", "--cluster", run.cluster, "--launch-type", "FARGATE", "--task-definition", family,
				"--count", run.count, "--network-configuration", awsvpc(s.DefaultSubnet()))
			if len(out.Tasks) == 0 || len(out.Failures) != 0 {
				t.Fatalf("run-task %s in %s: %+v", family, run.cluster, out)
			}
			for _, task := range out.Tasks {
				writers = append(writers, run.cluster, task.TaskArn)
			}
		}
	}
	for i := 0; i < len(writers); i += 2 {
		waitRunningOrStopped(t, s, writers[i], writers[i+1], 2*time.Minute)
	}
	for _, dir := range []string{root, filepath.Join(tree, "plain")} {
		if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(writers); i += 2 {
		task := waitStatus(t, s, writers[i], writers[i+1], "STOPPED", 2*time.Minute)
		if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
			t.Errorf("writer %s in %s: exit %v, reason %q", task.TaskArn, writers[i], exitCode(c.ExitCode), task.StoppedReason)
		}
		if got, want := taskIsolation(t, s, writers[i], task.TaskArn), map[string]string{"efs": "sandbox", "efs-runc": "container"}[writers[i]]; got != want {
			t.Errorf("writer %s in %s ran with isolation %q, want %q", task.TaskArn, writers[i], got, want)
		}
	}
	if st, err := os.Stat(root); err != nil {
		t.Fatalf("access point root: %v", err)
	} else if st.Mode().Perm() != 0o750 || !ownedBy(st, 1000, 1001) {
		t.Errorf("access point root made with mode %v, want 0750 owned by 1000:1001", st.Mode())
	}
	assertAppends(t, "through the access point", filepath.Join(root, "log"), 3, 300)
	assertAppends(t, "without access point", filepath.Join(tree, "plain", "log"), 3, 300)

	s.Restart()
	registerJSON(t, s, def("reader", withAP+`, `+plain, `{"sourceVolume": "shared", "containerPath": "/mnt/efs"}, {"sourceVolume": "plain", "containerPath": "/mnt/plain"}`,
		`n=$(cat /mnt/efs/log | wc -l); [ $n -eq 900 ] || exit 1; [ -e /mnt/efs/secret ] && exit 2; cd /mnt/efs && ls .. | grep -q secret && exit 3; ls -a /mnt/efs | grep -q secret && exit 4; `+
			`n=$(cat /mnt/plain/log | wc -l); [ $n -eq 900 ] || exit 5; cp /bin/busybox /mnt/plain/busybox && /mnt/plain/busybox true || exit 6; exit 42`))
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "reader",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Errorf("reader after restart: exit %v (1, 5: lost lines, 2-4: saw above the access point's root, 6: could not run a program from EFS), reason %q", exitCode(c.ExitCode), task.StoppedReason)
	}
	assertNothingLeft(t, s)
}

// waitRunningOrStopped waits until the task has started (or already
// ended: its exit code is then checked by the caller).
func waitRunningOrStopped(t *testing.T, s *testenv.Server, cluster, arn string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(500 * time.Millisecond) {
		switch task := describeTask(t, s, cluster, arn); task.LastStatus {
		case "RUNNING", "STOPPED":
			return
		default:
			if time.Now().After(deadline) {
				t.Fatalf("task %s still %s after %v", arn, task.LastStatus, timeout)
			}
		}
	}
}

// assertAppends checks that path holds what writers tasks appending
// "line-0" to "line-<lines-1>" wrote: every line whole, each as often as
// there were writers (an append that overwrote another loses a line or
// leaves a torn one).
func assertAppends(t *testing.T, what, path string, writers, lines int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("appends %s: %v", what, err)
		return
	}
	seen := map[string]int{}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for _, l := range got {
		seen[l]++
	}
	var wrong []string
	for i := 0; i < lines; i++ {
		l := fmt.Sprintf("line-%d", i)
		if seen[l] != writers {
			wrong = append(wrong, fmt.Sprintf("%s x%d", l, seen[l]))
		}
		delete(seen, l)
	}
	for l, n := range seen {
		wrong = append(wrong, fmt.Sprintf("%q x%d", l, n))
	}
	if len(got) != writers*lines || len(wrong) > 0 {
		t.Errorf("%d tasks appending %d lines each %s: %d lines, wrong: %v", writers, lines, what, len(got), wrong)
	}
}

// runTwoAt42 runs two tasks of family at once in cluster "efs" and wants
// both to exit 42; codes says what the others mean.
func runTwoAt42(t *testing.T, s *testenv.Server, family, codes string) {
	t.Helper()
	var out cliTasks
	s.MustAWS(&out, "ecs", "run-task", "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", family,
		"--count", "2", "--network-configuration", awsvpc(s.DefaultSubnet()))
	if len(out.Tasks) != 2 {
		t.Fatalf("run-task --count 2: %+v", out)
	}
	for _, task := range out.Tasks {
		task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
		if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
			t.Errorf("%s %s: exit %v%s, reason %q", family, task.TaskArn, exitCode(c.ExitCode), codes, task.StoppedReason)
		}
	}
}

func ownedBy(st os.FileInfo, uid, gid uint32) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Uid == uid && sys.Gid == gid
}

// An access point's POSIX user is every task's identity on the file
// system, whatever the container runs as: files a root container and a
// uid-4321 container create are 1001:1001 on the host, root's 0600 file
// stays closed, a secondary group opens its file, chown neither gives a
// file away nor takes root's (EPERM), and
// symlinks out of the access point's root lead nowhere. A second access
// point's root is made on first use with its CreationInfo. Nothing of
// the mounts is left when the task stops.
func TestEFSAccessPointUser(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "posix")
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	var ap, fresh efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", `{"Uid": 1001, "Gid": 1001, "SecondaryGids": [2000]}`, "--root-directory", "Path=/data")
	s.MustAWS(&fresh, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", "Uid=1001,Gid=1001",
		"--root-directory", "Path=/fresh/one,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=700}")

	// What the tree held before: a secret above the access point's root,
	// and inside it a file of root's, one of group 2000, and symlinks
	// pointing above the root, relative and absolute (host path).
	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	data := filepath.Join(tree, "data")
	plantAccessPointTree(t, tree, data, "..")

	vol := func(name, apID string) string {
		return `{"name": "` + name + `", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `",
			"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "` + apID + `"}}}`
	}
	script := func(s string) string { return strings.NewReplacer("\n", " ", "\t", "").Replace(s) }
	registerJSON(t, s, `{"family": "posix", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [`+vol("data", ap.AccessPointId)+`, `+vol("fresh", fresh.AccessPointId)+`],
		"containerDefinitions": [
		{"name": "root", "image": "gantry-test/busybox:latest", "essential": false,
		 "mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/efs"}, {"sourceVolume": "fresh", "containerPath": "/mnt/fresh"}],
		 "command": ["sh", "-c", "`+script(`cd /mnt/efs || exit 10;
			[ $(id -u) = 0 ] || exit 11;
			echo hi > by-root || exit 12;
			[ $(stat -c %u:%g by-root) = 1001:1001 ] || exit 13;
			cat root-only 2>/dev/null && exit 14;
			echo x >> root-only 2>/dev/null && exit 15;
			[ $(cat group-2000) = shared ] || exit 16;
			for f in by-root root-only; do if chown 4321:4321 $f 2>/dev/null; then dmesg | grep -q gVisor || exit 17; fi; done;
			[ $(stat -c %u:%g by-root) = 1001:1001 ] || exit 17;
			cat up/secret 2>/dev/null && exit 18;
			cat abs/secret 2>/dev/null && exit 19;
			ls -a .. | grep -q secret && exit 20;
			mkdir -p sub/dir && [ $(stat -c %u sub/dir) = 1001 ] || exit 21;
			echo f > /mnt/fresh/file || exit 22;
			exit 0`)+`"]},
		{"name": "other", "image": "gantry-test/busybox:latest", "essential": true, "user": "4321:4321",
		 "dependsOn": [{"containerName": "root", "condition": "SUCCESS"}],
		 "mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/efs"}],
		 "command": ["sh", "-c", "`+script(`cd /mnt/efs || exit 10;
			[ $(id -u) = 4321 ] || exit 11;
			[ $(cat by-root) = hi ] || exit 12;
			echo hi > by-4321 || exit 13;
			cat root-only 2>/dev/null && exit 14;
			exit 42`)+`"]}]}`)
	// A chown the host refuses is EPERM; gVisor (shared file access, its
	// default for mounts) reports success for a remote attribute change
	// that failed, so in a sandbox only the effect is checked (the
	// file's owner on the host, below).
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "posix",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	codes := map[string]int{}
	for _, c := range task.Containers {
		if c.ExitCode != nil {
			codes[c.Name] = *c.ExitCode
		}
	}
	if codes["root"] != 0 || codes["other"] != 42 {
		t.Errorf("exit codes %v (reason %q), want root 0 and other 42; "+
			"10: no mount, 11: wrong container user, 12/13: could not write or file not 1001:1001, 14/15: read or wrote root's 0600 file, "+
			"16: secondary group not applied, 17: chown gave a file away, 18-20: saw above the root, 21: directory not 1001, 22: second access point",
			codes, task.StoppedReason)
	}
	for _, f := range []string{"by-root", "sub/dir", "by-4321"} {
		if st, err := os.Lstat(filepath.Join(data, f)); err != nil || !ownedBy(st, 1001, 1001) {
			t.Errorf("%s on the host: %v %v, want owned by 1001:1001", f, st, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(data, "root-only")); string(b) != "root's" {
		t.Errorf("root's file now holds %q", b)
	}
	if st, err := os.Lstat(filepath.Join(data, "root-only")); err != nil || !ownedBy(st, 0, 0) {
		t.Errorf("root's file: %v %v, want owned by 0:0 still", st, err)
	}
	one := filepath.Join(tree, "fresh", "one")
	if st, err := os.Stat(one); err != nil || st.Mode().Perm() != 0o700 || !ownedBy(st, 1001, 1001) {
		t.Errorf("access point root made on first use: %v %v, want 0700 owned by 1001:1001", st, err)
	} else if st, err := os.Stat(filepath.Join(one, "file")); err != nil || !ownedBy(st, 1001, 1001) {
		t.Errorf("file in it: %v %v", st, err)
	}
	assertNothingLeft(t, s)
	assertNoEFSMounts(t, s)
}

// A task on an access point keeps its file system across a server
// restart (the mount's helper is not the server's), and stopping it
// afterwards removes mount and helper.
func TestEFSAccessPointRestart(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "restart")
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId, "--posix-user", "Uid=1001,Gid=1001",
		"--root-directory", "Path=/r,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=755}")
	registerJSON(t, s, `{"family": "ticker", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "`+fs.FileSystemId+`", "transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "`+ap.AccessPointId+`"}}}],
		"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true, "stopTimeout": 2,
			"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
			"command": ["sh", "-c", "while true; do echo tick >> /v/ticks; sleep 0.2; done"]}]}`)
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "ticker",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	waitStatus(t, s, "efs", task.TaskArn, "RUNNING", 2*time.Minute)
	ticks := filepath.Join(s.DataDir, "efs", fs.FileSystemId, "r", "ticks")
	lines := func() int { b, _ := os.ReadFile(ticks); return strings.Count(string(b), "\n") }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("the first ticks", func() bool { return lines() > 0 })
	if len(efsHelpers(s)) != 1 {
		t.Fatalf("helpers running: %v, want 1", efsHelpers(s))
	}

	s.Restart()
	n := lines()
	waitFor("ticks after the restart", func() bool { return lines() > n+3 })
	if h := efsHelpers(s); len(h) != 1 {
		t.Errorf("helpers after the restart: %v, want the same 1", h)
	}
	if st, err := os.Stat(ticks); err != nil || !ownedBy(st, 1001, 1001) {
		t.Errorf("ticks: %v %v, want owned by 1001:1001", st, err)
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "efs", "--task", task.TaskArn)
	waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	assertNothingLeft(t, s)
	assertNoEFSMounts(t, s)
}

// efsHelpers lists the `gantry efs-mount` processes serving this server.
func efsHelpers(s *testenv.Server) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && args[1] == "efs-mount" && strings.Contains(string(b), s.DataDir+"/") {
			found = append(found, filepath.Base(filepath.Dir(p))+" "+strings.Join(args, " "))
		}
	}
	return found
}

// assertNoEFSMounts checks that no access point mount or helper is left.
func assertNoEFSMounts(t *testing.T, s *testenv.Server) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left = efsHelpers(s)
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, " "+s.DataDir+"/") && strings.Contains(line, "fuse") {
				left = append(left, "mount "+line)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("EFS mounts or helpers left: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.DataDir, "agent", "efs")); len(ents) > 0 {
		t.Errorf("agent/efs still holds %d entries", len(ents))
	}
}

// plantAccessPointTree fills a file system's tree for the access point
// tests: a secret above the access point's root directory data (owned by
// 1001:1001), and inside it a file of root's, one of group 2000, and
// symlinks pointing above the root, relative (up) and absolute (the host
// path of the tree).
func plantAccessPointTree(t *testing.T, tree, data, up string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(tree, "secret"), []byte("above"), 0o644))
	must(os.MkdirAll(data, 0o755))
	must(os.Chown(data, 1001, 1001))
	must(os.WriteFile(filepath.Join(data, "root-only"), []byte("root's"), 0o600))
	must(os.WriteFile(filepath.Join(data, "group-2000"), []byte("shared"), 0o640))
	must(os.Chown(filepath.Join(data, "group-2000"), 0, 2000))
	must(os.Symlink(up, filepath.Join(data, "up")))
	must(os.Symlink(tree, filepath.Join(data, "abs")))
}
