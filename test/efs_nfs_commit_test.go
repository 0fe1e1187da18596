package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// fsync(2) and close(2) in a task on an NFS-mode EFS volume reach the
// server as COMMITs, which it answers after fsyncing (counted in
// internal/efsnfs's TestCloseAndFsyncCommit; the server's syncs are not
// visible from outside its process). Here a task writing as an access
// point's user, as a database does, writes a file and fsyncs it, fsyncs
// its directory after a rename, and appends with a close each line: every
// one of those calls must succeed, and the server's tree holds exactly
// what the task wrote.
func TestEFSNFSFsync(t *testing.T) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	efsNFSCluster(t, s, "container")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "fsync")
	var mt efsMT
	s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", `{"Uid": 1001, "Gid": 1001}`,
		"--root-directory", "Path=/db,CreationInfo={OwnerUid=1001,OwnerGid=1001,Permissions=755}")
	script := `cd /v || exit 10;
		dd if=/dev/urandom of=db.tmp bs=65536 count=40 conv=fsync 2>/dev/null || exit 11;
		mv db.tmp db || exit 12;
		sync . || exit 13;
		i=0; while [ $i -lt 20 ]; do echo entry-$i >> wal || exit 14; i=$((i+1)); done;
		sync wal || exit 15;
		sha256sum db | cut -d' ' -f1 > db.sum || exit 16;
		exit 42`
	registerJSON(t, s, `{"family": "fsync", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "`+fs.FileSystemId+`",
			"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "`+ap.AccessPointId+`"}}}],
		"containerDefinitions": [{"name": "c", "image": "gantry-test/busybox:latest", "essential": true,
			"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}],
			"command": ["sh", "-c", "`+strings.NewReplacer("\n", " ", "\t", "").Replace(script)+`"]}]}`)
	task := runTask(t, s, "--cluster", "efs", "--launch-type", "FARGATE", "--task-definition", "fsync",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "efs", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := task.Containers[0]; c.ExitCode == nil || *c.ExitCode != 42 {
		t.Fatalf("task: exit %v, reason %q; 10: no mount, 11: write+fsync, 12: rename, 13: directory fsync, 14: append+close, 15: fsync, 16: read back; helper log: %s",
			c.ExitCode, task.StoppedReason, helperLog(s))
	}
	dir := filepath.Join(s.DataDir, "efs", fs.FileSystemId, "db")
	db, err := os.ReadFile(filepath.Join(dir, "db"))
	if err != nil || len(db) != 40*65536 {
		t.Fatalf("db on the server's tree: %d bytes, %v", len(db), err)
	}
	sum := sha256.Sum256(db)
	if b, _ := os.ReadFile(filepath.Join(dir, "db.sum")); strings.TrimSpace(string(b)) != hex.EncodeToString(sum[:]) {
		t.Errorf("db on the tree hashes %x, the task read %q", sum, b)
	}
	var want strings.Builder
	for i := range 20 {
		fmt.Fprintf(&want, "entry-%d\n", i)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "wal")); string(b) != want.String() {
		t.Errorf("wal on the server's tree: %q, want %q", b, want.String())
	}
	assertNothingLeft(t, s)
	assertNoNFSLeft(t, s, mt.IpAddress)
}
