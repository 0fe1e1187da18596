package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// File system policies are enforced when a task mounts, as EFS enforces
// them when a client connects, in both isolations:
//   - without elasticfilesystem:ClientRootAccess root is squashed to
//     65534:65534 (its files are nobody's, root's 0600 file is closed to
//     it, its chown to another user is EPERM, in a sandbox too) while
//     another user keeps its identity;
//   - the task role (iam ENABLED) that the policy grants
//     ClientRootAccess stays root, and sees root's files as 65534's;
//   - without ClientWrite every write fails with EROFS;
//   - a role denied ClientMount cannot start the task: it stops with the
//     ECS agent's ResourceInitializationError for a refused mount.
func TestEFSPolicy(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain", "--settings", "name=isolation,value=container")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sandboxed", "--settings", "name=isolation,value=sandbox")
	var app, blocked struct{ Role struct{ Arn string } }
	s.MustAWS(&app, "iam", "create-role", "--role-name", "efs-app", "--assume-role-policy-document", ecsTasksTrust)
	s.MustAWS(&blocked, "iam", "create-role", "--role-name", "efs-blocked", "--assume-role-policy-document", ecsTasksTrust)

	var shared, readonly efsFS
	s.MustAWS(&shared, "efs", "create-file-system", "--creation-token", "policy-shared")
	s.MustAWS(&readonly, "efs", "create-file-system", "--creation-token", "policy-readonly")
	for _, f := range []efsFS{shared, readonly} {
		s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", f.FileSystemId, "--subnet-id", s.DefaultSubnet())
	}
	// AWS's "prevent root access by default", plus root access for the
	// app role.
	s.MustAWS(nil, "efs", "put-file-system-policy", "--file-system-id", shared.FileSystemId, "--policy", `{"Version": "2012-10-17",
		"Statement": [
		{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
		 "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}},
		{"Effect": "Allow", "Principal": {"AWS": "`+app.Role.Arn+`"}, "Action": "elasticfilesystem:ClientRootAccess",
		 "Resource": "`+shared.FileSystemArn+`", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}`)
	// Read-only for everyone, and no mount at all for the blocked role.
	s.MustAWS(nil, "efs", "put-file-system-policy", "--file-system-id", readonly.FileSystemId, "--policy", `{"Version": "2012-10-17",
		"Statement": [
		{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientRootAccess"]},
		{"Effect": "Deny", "Principal": {"AWS": "`+blocked.Role.Arn+`"}, "Action": "elasticfilesystem:ClientMount"}]}`)
	// A bad policy is refused with the field's problem.
	if code, msg := s.AWSError("efs", "put-file-system-policy", "--file-system-id", shared.FileSystemId, "--policy",
		`{"Statement": [{"Effect": "Allow", "Action": "elasticfilesystem:ClientMount"}]}`); code != "InvalidPolicyException" || !strings.Contains(msg, "principal") {
		t.Errorf("policy without a principal: %s %q, want InvalidPolicyException naming the principal", code, msg)
	}

	// An access point whose POSIX user is root is squashed too.
	var rootAP efsAP
	s.MustAWS(&rootAP, "efs", "create-access-point", "--file-system-id", shared.FileSystemId, "--posix-user", "Uid=0,Gid=0",
		"--root-directory", "Path=/as-root,CreationInfo={OwnerUid=65534,OwnerGid=65534,Permissions=755}")
	tree := filepath.Join(s.DataDir, "efs", shared.FileSystemId)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(tree, 0o777))
	must(os.WriteFile(filepath.Join(tree, "secret"), []byte("root's"), 0o600))
	roTree := filepath.Join(s.DataDir, "efs", readonly.FileSystemId)
	must(os.WriteFile(filepath.Join(roTree, "readme"), []byte("hello"), 0o644))

	script := func(s string) string { return strings.NewReplacer("\n", " ", "\t", "").Replace(s) }
	vol := func(fsID string, iam bool) string {
		auth := ""
		if iam {
			auth = `, "authorizationConfig": {"iam": "ENABLED"}`
		}
		return `{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "` + fsID + `", "transitEncryption": "ENABLED"` + auth + `}}`
	}
	register := func(family, role, volume, containers string) {
		roleField := ""
		if role != "" {
			roleField = `"taskRoleArn": "` + role + `", `
		}
		registerJSON(t, s, `{"family": "`+family+`", `+roleField+`"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
			"cpu": "256", "memory": "512", "volumes": [`+volume+`], "containerDefinitions": [`+containers+`]}`)
	}
	mount := `"mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/efs"}]`
	// Root squashed; a 1234 sibling keeps its identity.
	apVol := `{"name": "aproot", "efsVolumeConfiguration": {"fileSystemId": "` + shared.FileSystemId + `", "transitEncryption": "ENABLED",
		"authorizationConfig": {"accessPointId": "` + rootAP.AccessPointId + `"}}}`
	register("squash", "", vol(shared.FileSystemId, false)+", "+apVol, `
		{"name": "root", "image": "gantry-test/busybox:latest", "essential": false,
		 "mountPoints": [{"sourceVolume": "data", "containerPath": "/mnt/efs"}, {"sourceVolume": "aproot", "containerPath": "/mnt/ap"}],
		 "command": ["sh", "-c", "`+script(`cd /mnt/efs || exit 10;
			[ $(id -u) = 0 ] || exit 11;
			echo hi > /mnt/ap/$ISO || exit 19;
			[ $(stat -c %u:%g /mnt/ap/$ISO) = 65534:65534 ] || exit 19;
			mkdir $ISO || exit 12;
			echo hi > $ISO/by-root || exit 12;
			[ $(stat -c %u:%g $ISO/by-root) = 65534:65534 ] || exit 13;
			cat secret 2>/dev/null && exit 14;
			chown 4321 $ISO/by-root 2>/dev/null && exit 18;
			[ $(stat -c %u $ISO/by-root) = 65534 ] || exit 18;
			chmod 777 $ISO || exit 15;
			exit 0`)+`"]},
		{"name": "user", "image": "gantry-test/busybox:latest", "essential": true, "user": "1234:1234",
		 "dependsOn": [{"containerName": "root", "condition": "SUCCESS"}], `+mount+`,
		 "command": ["sh", "-c", "`+script(`cd /mnt/efs/$ISO || exit 10;
			echo hi > by-1234 || exit 16;
			[ $(stat -c %u:%g by-1234) = 1234:1234 ] || exit 17;
			exit 42`)+`"]}`)
	// The role with ClientRootAccess stays root, and sees what the
	// squashed tasks wrote as 65534's.
	register("rooted", app.Role.Arn, vol(shared.FileSystemId, true), `
		{"name": "app", "image": "gantry-test/busybox:latest", "essential": true, `+mount+`,
		 "command": ["sh", "-c", "`+script(`cd /mnt/efs || exit 10;
			[ $(cat secret) = \"root's\" ] || exit 20;
			echo hi > by-role || exit 21;
			[ $(stat -c %u:%g by-role) = 0:0 ] || exit 22;
			for d in container sandbox; do [ $(stat -c %u:%g $d/by-root) = 65534:65534 ] || exit 23; [ $(stat -c %u $d/by-1234) = 1234 ] || exit 24; done;
			exit 42`)+`"]}`)
	readOnly := `{"name": "app", "image": "gantry-test/busybox:latest", "essential": true, ` + mount + `,
		 "command": ["sh", "-c", "` + script(`cd /mnt/efs || exit 10;
			[ $(cat readme) = hello ] || exit 30;
			echo x 2>/tmp/err > new && exit 31;
			grep -q 'Read-only file system' /tmp/err || { cat /tmp/err; exit 32; };
			rm readme 2>/dev/null && exit 33;
			mkdir d 2>/dev/null && exit 34;
			exit 42`) + `"]}`
	register("readonly", "", vol(readonly.FileSystemId, false), readOnly)
	register("blocked", blocked.Role.Arn, vol(readonly.FileSystemId, true), readOnly)

	run := func(cluster, family string, env ...string) string {
		args := []string{"--cluster", cluster, "--launch-type", "FARGATE", "--task-definition", family,
			"--network-configuration", awsvpc(s.DefaultSubnet())}
		if len(env) > 0 {
			args = append(args, "--overrides", `{"containerOverrides": [`+
				`{"name": "root", "environment": [{"name": "ISO", "value": "`+env[0]+`"}]},`+
				`{"name": "user", "environment": [{"name": "ISO", "value": "`+env[0]+`"}]}]}`)
		}
		return runTask(t, s, args...).TaskArn
	}
	codes := func(task cliTask) map[string]int {
		out := map[string]int{}
		for _, c := range task.Containers {
			if c.ExitCode != nil {
				out[c.Name] = *c.ExitCode
			}
		}
		return out
	}
	type started struct{ cluster, arn string }
	squashed := map[string]started{
		"container": {"plain", run("plain", "squash", "container")},
		"sandbox":   {"sandboxed", run("sandboxed", "squash", "sandbox")},
	}
	ro := map[string]started{
		"container": {"plain", run("plain", "readonly")},
		"sandbox":   {"sandboxed", run("sandboxed", "readonly")},
	}
	denied := run("plain", "blocked")
	for iso, st := range squashed {
		task := waitStatus(t, s, st.cluster, st.arn, "STOPPED", 2*time.Minute)
		if c := codes(task); c["root"] != 0 || c["user"] != 42 {
			t.Errorf("%s: root-squash task exit codes %v (reason %q), want root 0 and user 42; 10: no mount, 11: not root, "+
				"12: root could not write, 13: root's file not 65534:65534, 14: squashed root read root's 0600 file, 15: chmod of its directory, "+
				"16: 1234 could not write, 17: 1234's file not 1234's, 18: squashed root's chown to another user reported success, 19: access point user 0 not squashed "+
				"(in a sandbox: runsc without scripts/runsc-setstat-errors.patch, run scripts/build-runsc.sh)", iso, c, task.StoppedReason)
		}
		if st, err := os.Lstat(filepath.Join(tree, iso, "by-root")); err != nil || !ownedBy(st, 65534, 65534) {
			t.Errorf("%s: by-root on the host: %v %v, want owned by 65534:65534", iso, st, err)
		}
		if st, err := os.Lstat(filepath.Join(tree, "as-root", iso)); err != nil || !ownedBy(st, 65534, 65534) {
			t.Errorf("%s: file through the access point of user 0 on the host: %v %v, want owned by 65534:65534", iso, st, err)
		}
		if st, err := os.Lstat(filepath.Join(tree, iso, "by-1234")); err != nil || !ownedBy(st, 1234, 1234) {
			t.Errorf("%s: by-1234 on the host: %v %v, want owned by 1234:1234", iso, st, err)
		}
	}
	for iso, st := range ro {
		task := waitStatus(t, s, st.cluster, st.arn, "STOPPED", 2*time.Minute)
		if c := codes(task); c["app"] != 42 {
			t.Errorf("%s: read-only task exit codes %v (reason %q), want 42; 30: could not read, 31: wrote, 32: not EROFS, 33: removed, 34: made a directory",
				iso, c, task.StoppedReason)
		}
	}
	if _, err := os.Stat(filepath.Join(roTree, "new")); err == nil {
		t.Errorf("a write went through a read-only mount")
	}
	task := waitStatus(t, s, "plain", denied, "STOPPED", 2*time.Minute)
	const reason = "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: " +
		"stderr: b'mount.nfs4: access denied by server while mounting 127.0.0.1:/' : unsuccessful EFS utils command execution; code: 32"
	if task.StoppedReason != reason || task.StopCode != "TaskFailedToStart" {
		t.Errorf("task of a role denied ClientMount stopped with %s %q, want TaskFailedToStart %q", task.StopCode, task.StoppedReason, reason)
	}
	for _, c := range task.Containers {
		if c.ExitCode != nil {
			t.Errorf("container %s of the denied task ran (exit %d)", c.Name, *c.ExitCode)
		}
	}

	rooted := waitStatus(t, s, "plain", run("plain", "rooted"), "STOPPED", 2*time.Minute)
	if c := codes(rooted); c["app"] != 42 {
		t.Errorf("task role with ClientRootAccess: exit codes %v (reason %q), want 42; 20: could not read root's file, 21/22: could not write as root, "+
			"23: squashed files not 65534's, 24: 1234's file not 1234's", c, rooted.StoppedReason)
	}
	assertNothingLeft(t, s)
	assertNoEFSMounts(t, s)
}

// Over NFS (--efs-mode nfs, what an agent on another host does) the
// server squashes root for a policy without ClientRootAccess (a separate
// export from the unsquashed one) and the mount is read-only without
// ClientWrite.
func TestEFSNFSPolicy(t *testing.T) {
	s := testenv.Start(t, "--efs-mode", "nfs")
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "nfs", "--settings", "name=isolation,value=container")
	var squash, readonly efsFS
	s.MustAWS(&squash, "efs", "create-file-system", "--creation-token", "nfs-squash")
	s.MustAWS(&readonly, "efs", "create-file-system", "--creation-token", "nfs-readonly")
	var mtIPs []string
	for _, f := range []efsFS{squash, readonly} {
		var mt efsMT
		s.MustAWS(&mt, "efs", "create-mount-target", "--file-system-id", f.FileSystemId, "--subnet-id", s.DefaultSubnet())
		mtIPs = append(mtIPs, mt.IpAddress)
	}
	policy := func(actions string) string {
		return `{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": [` + actions + `]}]}`
	}
	s.MustAWS(nil, "efs", "put-file-system-policy", "--file-system-id", squash.FileSystemId, "--policy",
		policy(`"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"`))
	s.MustAWS(nil, "efs", "put-file-system-policy", "--file-system-id", readonly.FileSystemId, "--policy",
		policy(`"elasticfilesystem:ClientMount", "elasticfilesystem:ClientRootAccess"`))
	tree := filepath.Join(s.DataDir, "efs", squash.FileSystemId)
	if err := os.Chmod(tree, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "secret"), []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := func(s string) string { return strings.NewReplacer("\n", " ", "\t", "").Replace(s) }
	vol := func(name, fsID string) string {
		return `{"name": "` + name + `", "efsVolumeConfiguration": {"fileSystemId": "` + fsID + `"}}`
	}
	mounts := `"mountPoints": [{"sourceVolume": "sq", "containerPath": "/mnt/sq"}, {"sourceVolume": "ro", "containerPath": "/mnt/ro"}]`
	registerJSON(t, s, `{"family": "nfspolicy", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [`+vol("sq", squash.FileSystemId)+`, `+vol("ro", readonly.FileSystemId)+`],
		"containerDefinitions": [
		{"name": "root", "image": "gantry-test/busybox:latest", "essential": false, `+mounts+`,
		 "command": ["sh", "-c", "`+script(`cd /mnt/sq || exit 10;
			echo hi > by-root || exit 11;
			[ $(stat -c %u:%g by-root) = 65534:65534 ] || exit 12;
			cat secret 2>/dev/null && exit 13;
			echo x 2>/tmp/err > /mnt/ro/new && exit 14;
			grep -q 'Read-only file system' /tmp/err || exit 15;
			exit 0`)+`"]},
		{"name": "user", "image": "gantry-test/busybox:latest", "essential": true, "user": "1234:1234",
		 "dependsOn": [{"containerName": "root", "condition": "SUCCESS"}], `+mounts+`,
		 "command": ["sh", "-c", "`+script(`cd /mnt/sq || exit 10;
			echo hi > by-1234 || exit 16;
			[ $(stat -c %u:%g by-1234) = 1234:1234 ] || exit 17;
			exit 42`)+`"]}]}`)
	task := runTask(t, s, "--cluster", "nfs", "--launch-type", "FARGATE", "--task-definition", "nfspolicy",
		"--network-configuration", awsvpc(s.DefaultSubnet()))
	task = waitStatus(t, s, "nfs", task.TaskArn, "STOPPED", 2*time.Minute)
	codes := map[string]int{}
	for _, c := range task.Containers {
		if c.ExitCode != nil {
			codes[c.Name] = *c.ExitCode
		}
	}
	if codes["root"] != 0 || codes["user"] != 42 {
		t.Errorf("exit codes %v (reason %q), want root 0 and user 42; 10: no mount, 11: root could not write, 12: root's file not 65534:65534, "+
			"13: squashed root read root's 0600 file, 14/15: wrote to the read-only volume or not EROFS, 16/17: 1234 could not write or not 1234's",
			codes, task.StoppedReason)
	}
	for f, want := range map[string]uint32{"by-root": 65534, "by-1234": 1234} {
		if st, err := os.Lstat(filepath.Join(tree, f)); err != nil || !ownedBy(st, want, want) {
			t.Errorf("%s on the host: %v %v, want owned by %d:%d", f, st, err, want, want)
		}
	}
	assertNothingLeft(t, s)
	for _, ip := range mtIPs {
		assertNoNFSLeft(t, s, ip)
	}
}
