package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// efsNFSHelpers lists the `gantry efs-nfs-mount` processes of this server.
func efsNFSHelpers(s *testenv.Server) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "\x00efs-nfs-mount\x00") && strings.Contains(string(b), s.DataDir+"/") {
			found = append(found, filepath.Base(filepath.Dir(p))+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}

// assertNoNFSLeft checks that no NFS mount helper, FUSE mount or served
// mount target address is left once the tasks are gone.
func assertNoNFSLeft(t *testing.T, s *testenv.Server, mtIP string) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left = efsNFSHelpers(s)
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, " "+s.DataDir+"/") && strings.Contains(line, "fuse") {
				left = append(left, "mount "+line)
			}
		}
		if out, err := exec.Command("ip", "-o", "addr", "show").Output(); err == nil && strings.Contains(string(out), " "+mtIP+"/32") {
			left = append(left, "address "+mtIP+" still on a bridge")
		}
		if nftTableExists(efsTable(s)) {
			left = append(left, "nftables table "+efsTable(s))
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("NFS mounts, helpers or addresses left: %v", left)
	}
}

// The NFS tests run in a cluster of the isolation they are given: each
// key test runs under runc (container) and in gVisor sandboxes, where the
// task's sandbox runs on its namespace's kernel stack and its mounts show
// the access point's user as the container's (internal/agent/local
// withEFSNFSNetwork, efsfuse.IDView).
func efsNFSCluster(t *testing.T, s *testenv.Server, isolation string) {
	t.Helper()
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "efs", "--settings", "name=isolation,value="+isolation)
}

// With --efs-mode nfs the agent mounts EFS volumes as an agent on a host
// without the tree does: over NFS from the mount target's address, from
// the task's network namespace. A task writes through an access point
// with a POSIX user and a second task reads it; files are the access
// point user's on the server's tree whatever the container runs as,
// root's 0600 file stays closed, and nothing above the access point's
// root is reachable, by .. or symlinks. Nothing is left after. In a
// sandbox the non-root reader sees the access point's files as its own,
// as with local access point mounts (efsfuse.IDView).
func TestEFSNFSAccessPoint(t *testing.T)        { testEFSNFSAccessPoint(t, "container") }
func TestEFSNFSAccessPointSandbox(t *testing.T) { testEFSNFSAccessPoint(t, "sandbox") }

func testEFSNFSAccessPoint(t *testing.T, isolation string) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	efsNFSCluster(t, s, isolation)
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "nfs")
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", `{"Uid": 1001, "Gid": 1001, "SecondaryGids": [2000]}`,
		"--root-directory", "Path=/app/data,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=755}")

	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	data := filepath.Join(tree, "app", "data")
	plantAccessPointTree(t, tree, data, "../..")

	def := func(family, user, script string) string {
		u := ""
		if user != "" {
			u = `"user": "` + user + `", `
		}
		return `{"family": "` + family + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
			"volumes": [{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `",
				"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "` + ap.AccessPointId + `"}}}],
			"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true, ` + u + `
				"mountPoints": [{"sourceVolume": "shared", "containerPath": "/mnt/efs"}],
				"command": ["sh", "-c", "` + strings.NewReplacer("\n", " ", "\t", "").Replace(script) + `"]}]}`
	}
	// gVisor's /proc/mounts shows its own gofer mount, not the host's
	// FUSE one: there the server's --efs-mode is what says it is NFS.
	nfsCheck := "grep -q gantry-efs-nfs /proc/mounts || exit 9;"
	if isolation == "sandbox" {
		nfsCheck = ""
	}
	registerJSON(t, s, def("writer", "", `cd /mnt/efs || exit 10;
		`+nfsCheck+`
		echo hello > by-root || exit 12;
		[ $(stat -c %u:%g by-root) = 1001:1001 ] || exit 13;
		cat root-only 2>/dev/null && exit 14;
		echo x >> root-only 2>/dev/null && exit 15;
		[ $(cat group-2000) = shared ] || exit 16;
		chown 0:0 by-root 2>/dev/null;
		cat up/secret 2>/dev/null && exit 18;
		cat abs/secret 2>/dev/null && exit 19;
		ls -a .. | grep -q secret && exit 20;
		mkdir -p sub/dir && [ $(stat -c %u sub/dir) = 1001 ] || exit 21;
		i=0; while [ $i -lt 100 ]; do echo line-$i >> log; i=$((i+1)); done;
		dd if=/dev/zero of=big bs=64k count=64 2>/dev/null || exit 22;
		exit 42`))
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "writer",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Fatalf("writer: exit %v, reason %q; 9: not an NFS mount, 10: no mount, 12/13: could not write or not 1001:1001, "+
			"14/15: read or wrote root's 0600 file, 16: secondary group not applied, 18-20: saw above the root, 21: directory not 1001, 22: big write",
			c.ExitCode, task.StoppedReason)
	}
	for _, f := range []string{"by-root", "sub/dir", "log", "big"} {
		if st, err := os.Lstat(filepath.Join(data, f)); err != nil || !ownedBy(st, 1001, 1001) {
			t.Errorf("%s on the serving tree: %v %v, want owned by 1001:1001", f, st, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(data, "root-only")); string(b) != "root's" {
		t.Errorf("root's file now holds %q", b)
	}
	if st, err := os.Stat(filepath.Join(data, "big")); err != nil || st.Size() != 64*65536 {
		t.Errorf("big: %v %v, want 4 MiB", st, err)
	}

	// A second task, as another user, reads what the first wrote; the
	// metadata endpoint answers it (in a sandbox too, on the namespace's
	// kernel stack).
	owner := "1001"
	if isolation == "sandbox" {
		owner = "4321"
	}
	registerJSON(t, s, def("reader", "4321:4321", `cd /mnt/efs || exit 10;
		wget -q -O /dev/null $ECS_CONTAINER_METADATA_URI_V4/task || exit 16;
		[ $(cat by-root) = hello ] || exit 11;
		[ $(wc -l < log) = 100 ] || exit 12;
		[ $(tail -n 1 log) = line-99 ] || exit 13;
		echo more >> log || exit 14;
		[ $(stat -c %u by-root) = `+owner+` ] || exit 15;
		exit 42`))
	task = runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "reader",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Errorf("reader: exit %v, reason %q; 10: no mount, 11-13: did not see the writer's data, 14: could not append, 15: owner, 16: no metadata endpoint",
			c.ExitCode, task.StoppedReason)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "log")); strings.Count(string(b), "\n") != 101 || !strings.HasSuffix(string(b), "line-99\nmore\n") {
		t.Errorf("log after the reader's append: %d lines, ends %q", strings.Count(string(b), "\n"), string(b[max(0, len(b)-20):]))
	}
	assertNothingLeft(t, s)
	assertNoNFSLeft(t, s, mt.IpAddress)
	// The file system goes too, and the tree with it.
	s.MustAWS(nil, "efs", "delete-access-point", "--access-point-id", ap.AccessPointId)
	s.MustAWS(nil, "efs", "delete-mount-target", "--mount-target-id", mt.MountTargetId)
	s.MustAWS(nil, "efs", "delete-file-system", "--file-system-id", fs.FileSystemId)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(tree); os.IsNotExist(err) {
			break
		} else if time.Now().After(deadline) {
			t.Errorf("file system tree still there after delete-file-system: %v", err)
			break
		}
	}
	assertNoNFSLeft(t, s, mt.IpAddress)
}

// A mount target's security groups decide which tasks may mount over
// NFS: one whose group allows nothing fails the task before any container
// starts, with the ECS agent's EFS reason; once its group lets the task's
// group reach TCP 2049, the same task definition mounts and writes.
func TestEFSNFSSecurityGroups(t *testing.T)        { testEFSNFSSecurityGroups(t, "container") }
func TestEFSNFSSecurityGroupsSandbox(t *testing.T) { testEFSNFSSecurityGroups(t, "sandbox") }

func testEFSNFSSecurityGroups(t *testing.T, isolation string) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	efsNFSCluster(t, s, isolation)
	var sn struct{ Subnets []struct{ VpcId string } }
	s.MustAWS(&sn, "ec2", "describe-subnets", "--subnet-ids", s.DefaultSubnet())
	if len(sn.Subnets) != 1 {
		t.Fatalf("default subnet: %+v", sn)
	}
	vpc := sn.Subnets[0].VpcId
	var taskSG, efsSG struct{ GroupId string }
	s.MustAWS(&taskSG, "ec2", "create-security-group", "--group-name", "app", "--description", "tasks", "--vpc-id", vpc)
	s.MustAWS(&efsSG, "ec2", "create-security-group", "--group-name", "efs", "--description", "mount target", "--vpc-id", vpc)
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "sg")
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet(),
		"--security-groups", efsSG.GroupId)
	registerJSON(t, s, `{"family": "sg", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "`+fs.FileSystemId+`"}}],
		"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true,
			"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
			"command": ["sh", "-c", "echo in > /v/file && exit 42"]}]}`)
	netcfg := "awsvpcConfiguration={subnets=[" + s.DefaultSubnet() + "],securityGroups=[" + taskSG.GroupId + "],assignPublicIp=DISABLED}"

	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "sg", "--network-configuration", netcfg)
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if !strings.HasPrefix(task.StoppedReason, "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes") {
		t.Errorf("task behind a closed mount target group stopped with %q, want the EFS utils ResourceInitializationError", task.StoppedReason)
	}
	t.Logf("closed mount target: %s", task.StoppedReason)
	if c := task.Containers[0]; c.ExitCode != nil {
		t.Errorf("its container ran (exit %d)", *c.ExitCode)
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "efs", fs.FileSystemId, "file")); err == nil {
		t.Error("the file was written through a closed mount target")
	}

	// Other ports than 2049 from the task's group open nothing.
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", efsSG.GroupId,
		"--protocol", "tcp", "--port", "80", "--source-group", taskSG.GroupId)
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", efsSG.GroupId,
		"--protocol", "tcp", "--port", "2049", "--source-group", taskSG.GroupId)
	task = runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "sg", "--network-configuration", netcfg)
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Errorf("task allowed by the mount target's group: exit %v, reason %q", c.ExitCode, task.StoppedReason)
	}
	if b, err := os.ReadFile(filepath.Join(s.DataDir, "efs", fs.FileSystemId, "file")); err != nil || string(b) != "in\n" {
		t.Errorf("file on the tree: %q %v", b, err)
	}
	assertNothingLeft(t, s)
	assertNoNFSLeft(t, s, mt.IpAddress)
}

// efsTable is the nftables table of the server's served mount targets
// (internal/agent/local: its firewall table's name plus "-efs").
func efsTable(s *testenv.Server) string {
	abs, _ := filepath.Abs(s.DataDir)
	h := sha256.Sum256([]byte(abs))
	return "gantry-" + hex.EncodeToString(h[:5]) + "-efs"
}

func nftTableExists(name string) bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	t, _ := c.ListTableOfFamily(name, nftables.TableFamilyIPv4)
	return t != nil
}

// A server restart loses nothing over NFS either: the NFS server runs in
// the server's process and goes with it, but the task's mount helper
// (a process of its own, in the task's namespace) waits and reconnects,
// the restarted server serves the mount target again, and the handles it
// holds name the same files. A task appending a counter and reading the
// file back keeps doing so across the restart with no failed, lost or
// repeated write; stopping it afterwards removes its mount, helper,
// served address and rules; and a task started after reads everything.
func TestEFSNFSRestart(t *testing.T)        { testEFSNFSRestart(t, "container") }
func TestEFSNFSRestartSandbox(t *testing.T) { testEFSNFSRestart(t, "sandbox") }

func testEFSNFSRestart(t *testing.T, isolation string) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	efsNFSCluster(t, s, isolation)
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "restart")
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	def := func(family, script string) string {
		return `{"family": "` + family + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
			"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `", "rootDirectory": "/logs"}}],
			"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true, "stopTimeout": 2,
				"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
				"command": ["sh", "-c", "` + strings.NewReplacer("\n", " ", "\t", "").Replace(script) + `"]}]}`
	}
	// Each round appends its number and checks the file holds one line
	// per round so far; the first failure is kept in /v/failed (when the
	// volume still takes it) and ends the task.
	registerJSON(t, s, def("ticker", `i=0; while true; do
		echo $i >> /v/ticks || { echo write $i > /v/failed; exit 3; };
		n=$(wc -l < /v/ticks) || { echo read $i > /v/failed; exit 4; };
		[ $n -eq $((i+1)) ] || { echo count $i $n > /v/failed; exit 5; };
		i=$((i+1)); sleep 0.05; done`))
	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	if err := os.MkdirAll(filepath.Join(tree, "logs"), 0o777); err != nil {
		t.Fatal(err)
	}
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "ticker",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	waitStatus(t, s, "efs", task.TaskArn, "RUNNING", 2*time.Minute)
	ticks := filepath.Join(tree, "logs", "ticks")
	lines := func() int {
		b, _ := os.ReadFile(ticks)
		return strings.Count(string(b), "\n")
	}
	waitLines := func(n int, what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); lines() < n; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(tree, "logs", "failed"))
				t.Fatalf("%s: %d lines, want %d; failed: %q; helper log: %s", what, lines(), n, b, helperLog(s))
			}
		}
	}
	waitLines(5, "before the restart")
	helpers := efsNFSHelpers(s)
	if len(helpers) != 1 {
		t.Fatalf("NFS helpers: %v, want 1", helpers)
	}
	s.Restart()
	// Lines written since the server came back, by the same helper.
	waitLines(lines()+20, "after the restart")
	if got := efsNFSHelpers(s); len(got) != 1 || got[0] != helpers[0] {
		t.Errorf("NFS helpers after the restart: %v, want the same %v", got, helpers)
	}
	if task := describeTask(t, s, "efs", task.TaskArn); task.LastStatus != "RUNNING" {
		t.Fatalf("ticker %s after the restart: %s", task.LastStatus, task.StoppedReason)
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "efs", "--task", task.TaskArn)
	waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	assertNoNFSLeft(t, s, mt.IpAddress)
	if b, err := os.ReadFile(filepath.Join(tree, "logs", "failed")); err == nil {
		t.Errorf("the ticker failed: %q", b)
	}
	b, _ := os.ReadFile(ticks)
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i, l := range got {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d of %d is %q: a write was lost or repeated", i, len(got), l)
		}
	}
	n := len(got)
	t.Logf("%d rounds written and read back across the restart", n)

	registerJSON(t, s, def("reader", "[ $(wc -l < /v/ticks) -eq "+strconv.Itoa(n)+" ] && [ $(tail -n 1 /v/ticks) -eq "+strconv.Itoa(n-1)+" ] && exit 42; exit 1"))
	task = runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "reader",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Errorf("reader after the restart: exit %v, reason %q (want all %d lines)", c.ExitCode, task.StoppedReason, n)
	}
	assertNothingLeft(t, s)
	assertNoNFSLeft(t, s, mt.IpAddress)
}

// helperLog is what the server's NFS mount helpers logged.
func helperLog(s *testenv.Server) string {
	logs, _ := filepath.Glob(filepath.Join(s.DataDir, "agent", "efs", "*", "nfs-*.log"))
	var out []string
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		out = append(out, l+": "+string(b))
	}
	return strings.Join(out, "; ")
}

// Two tasks appending to one file at once over NFS lose no line and tear
// none, as on the local tree: NFSv3 has no append, and Gantry's mount
// helper sends appends at an offset its server takes as "the end"
// (efsnfs: appendOffset) instead of asking for the size and writing
// there, each write(2) as one WRITE (direct I/O: through the page cache
// a line crossing a 4 KiB page went as two appends, and the other task's
// line could land between the halves). The volume has no access point,
// so the tasks act as their own user (1234:1234), as EFS applies an NFS
// client's uid and gid: the file they make is theirs on the tree, and
// root's 0600 file is closed to them. A third task maps a file it opened
// O_APPEND shared and writes through the map: the byte lands in place.
func TestEFSNFSConcurrentAppends(t *testing.T)        { testEFSNFSConcurrentAppends(t, "container") }
func TestEFSNFSConcurrentAppendsSandbox(t *testing.T) { testEFSNFSConcurrentAppends(t, "sandbox") }

func testEFSNFSConcurrentAppends(t *testing.T, isolation string) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	s.LoadImage(testimage.Python(t))
	efsNFSCluster(t, s, isolation)
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "appends")
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	// 2000 lines of about 9 bytes cross a page of the file four times.
	const lines = 1000
	def := func(family, image, command string) string {
		return `{"family": "` + family + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `"}}],
		"containerDefinitions": [{"name": "c", "image": "` + image + `", "essential": true, "user": "1234:1234",
			"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
			"command": ` + command + `}]}`
	}
	registerJSON(t, s, def("appender", "gantry-test/busybox:latest",
		`["sh", "-c", "cat /v/secret && exit 2; i=0; while [ $i -lt `+fmt.Sprint(lines)+` ]; do echo line-$i >> /v/shared/log || exit 1; i=$((i+1)); done; exit 42"]`))
	registerJSON(t, s, def("mapper", testimage.PythonRef, `["python3", "-c",
		"import mmap, traceback\ntry:\n f = open('/v/shared/mapped', 'a+b')\n f.write(b'hello world\\n')\n f.flush()\n m = mmap.mmap(f.fileno(), 12)\n assert m[:] == b'hello world\\n', m[:]\n m[0:1] = b'H'\n m.flush()\n m.close()\n f.write(b'more\\n')\n f.close()\nexcept Exception:\n open('/v/shared/mapper-error', 'w').write(traceback.format_exc())\n raise SystemExit(1)\nraise SystemExit(42)"]`))
	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	if err := os.Mkdir(filepath.Join(tree, "shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(tree, "shared"), 0o777)
	if err := os.WriteFile(filepath.Join(tree, "secret"), []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	runTwoAt42(t, s, "appender", " (1: an append failed, 2: read root's 0600 file)")
	if st, err := os.Stat(filepath.Join(tree, "shared", "log")); err != nil || !ownedBy(st, 1234, 1234) {
		t.Errorf("log made by the tasks: %v %v, want owned by 1234:1234", st, err)
	}
	assertAppends(t, "over NFS", filepath.Join(tree, "shared", "log"), 2, lines)

	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "mapper",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		msg, _ := os.ReadFile(filepath.Join(tree, "shared", "mapper-error"))
		t.Errorf("mapping a file opened O_APPEND: exit %v, reason %q: %s", exitCode(c.ExitCode), task.StoppedReason, msg)
	}
	if b, err := os.ReadFile(filepath.Join(tree, "shared", "mapped")); err != nil || string(b) != "Hello world\nmore\n" {
		t.Errorf("after a write through the map and an append: %q %v, want %q", b, err, "Hello world\nmore\n")
	}
	assertNothingLeft(t, s)
	assertNoNFSLeft(t, s, mt.IpAddress)
}
