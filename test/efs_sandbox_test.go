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

// An access point with a POSIX user gives every container user of a task
// what the access point's user may do, in both isolations, as EFS does:
// a container running as 1234:1234 writes into the access point user's
// 0755 directory (which gVisor's own permission checks refused before
// mounts were made per container user), the files are 1000:1000 on the
// host, reads work, root's 0600 file stays closed, symlinks out of the
// root lead nowhere, and a chown to anyone but the access point's user
// is EPERM. A root sidecar reads what the app wrote and sees the real
// owner. Nothing of the mounts is left when the tasks stop.
func TestEFSAccessPointSandbox(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "plain", "--settings", "name=isolation,value=container")
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sandboxed", "--settings", "name=isolation,value=sandbox")
	var fs efsFS
	s.MustAWS(&fs, "efs", "create-file-system", "--creation-token", "sandbox")
	s.MustAWS(nil, "efs", "create-mount-target", "--file-system-id", fs.FileSystemId, "--subnet-id", s.DefaultSubnet())
	var ap efsAP
	s.MustAWS(&ap, "efs", "create-access-point", "--file-system-id", fs.FileSystemId,
		"--posix-user", "Uid=1000,Gid=1000",
		"--root-directory", "Path=/apps,CreationInfo={OwnerUid=1000,OwnerGid=1000,Permissions=755}")

	tree := filepath.Join(s.DataDir, "efs", fs.FileSystemId)
	apps := filepath.Join(tree, "apps")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// One directory per isolation inside the access point's root, the
	// access point user's and 0755 like the root; a root-owned 0600 file
	// and symlinks above the root in each.
	must(os.WriteFile(filepath.Join(tree, "secret"), []byte("above"), 0o644))
	must(os.MkdirAll(apps, 0o755))
	must(os.Chown(apps, 1000, 1000))
	for _, d := range []string{"container", "sandbox"} {
		dir := filepath.Join(apps, d)
		must(os.Mkdir(dir, 0o755))
		must(os.Chown(dir, 1000, 1000))
		must(os.WriteFile(filepath.Join(dir, "root-only"), []byte("root's"), 0o600))
		must(os.Symlink("../..", filepath.Join(dir, "up")))
		must(os.Symlink(tree, filepath.Join(dir, "abs")))
	}

	script := func(s string) string { return strings.NewReplacer("\n", " ", "\t", "").Replace(s) }
	def := func(isolation, seen string) string {
		return `{"family": "ap-` + isolation + `", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512",
		"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "` + fs.FileSystemId + `",
			"transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "` + ap.AccessPointId + `"}}}],
		"containerDefinitions": [
		{"name": "app", "image": "gantry-test/busybox:latest", "essential": false, "user": "1234:1234",
		 "mountPoints": [{"sourceVolume": "v", "containerPath": "/mnt/efs"}],
		 "command": ["sh", "-c", "` + script(`cd /mnt/efs/`+isolation+` || exit 10;
			[ $(id -u):$(id -g) = 1234:1234 ] || exit 11;
			echo hello > file || exit 12;
			echo more >> file || exit 13;
			[ $(cat file | wc -l) = 2 ] || exit 14;
			mkdir -p d/e || exit 15;
			echo deep > d/e/f || exit 16;
			chmod 640 file || exit 17;
			[ $(stat -c %u:%g file) = `+seen+` ] || exit 18;
			cat root-only 2>/dev/null && exit 19;
			echo x >> root-only 2>/dev/null && exit 20;
			cat up/secret 2>/dev/null && exit 21;
			cat abs/secret 2>/dev/null && exit 22;
			chown 0 file 2>/dev/null && exit 24;
			chown 4321:4321 file 2>/dev/null && exit 25;
			mv file renamed && ln renamed hard && rm hard || exit 26;
			ln -s renamed link && [ $(cat link | head -1) = hello ] || exit 27;
			touch renamed || exit 28;
			rm -r d && mkdir d && echo deep > d/f || exit 29;
			exit 0`) + `"]},
		{"name": "sidecar", "image": "gantry-test/busybox:latest", "essential": true,
		 "dependsOn": [{"containerName": "app", "condition": "SUCCESS"}],
		 "mountPoints": [{"sourceVolume": "v", "containerPath": "/mnt/efs"}],
		 "command": ["sh", "-c", "` + script(`cd /mnt/efs/`+isolation+` || exit 10;
			[ $(id -u) = 0 ] || exit 11;
			[ $(head -1 renamed) = hello ] || exit 12;
			[ $(stat -c %u:%g renamed) = 1000:1000 ] || exit 13;
			echo root > by-root || exit 14;
			[ $(stat -c %u:%g by-root) = 1000:1000 ] || exit 15;
			cat root-only 2>/dev/null && exit 16;
			exit 42`) + `"]}]}`
	}
	// Under runc the container's kernel is the host's and shows the real
	// owner; in a sandbox the mount shows the access point's user as the
	// container's.
	registerJSON(t, s, def("container", "1000:1000"))
	registerJSON(t, s, def("sandbox", "1234:1234"))
	tasks := map[string]string{}
	for cluster, isolation := range map[string]string{"plain": "container", "sandboxed": "sandbox"} {
		task := runTask(t, s, "--cluster", cluster, "--launch-type", "FARGATE", "--task-definition", "ap-"+isolation,
			"--network-configuration", awsvpc(s.DefaultSubnet()))
		tasks[cluster] = task.TaskArn
	}
	for cluster, arn := range tasks {
		task := waitStatus(t, s, cluster, arn, "STOPPED", 2*time.Minute)
		if got, want := taskIsolation(t, s, cluster, arn), map[string]string{"plain": "container", "sandboxed": "sandbox"}[cluster]; got != want {
			t.Errorf("%s task ran with isolation %q, want %q", cluster, got, want)
		}
		codes := map[string]int{}
		for _, c := range task.Containers {
			if c.ExitCode != nil {
				codes[c.Name] = *c.ExitCode
			}
		}
		if codes["app"] != 0 || codes["sidecar"] != 42 {
			t.Errorf("%s: exit codes %v (reason %q), want app 0 and sidecar 42; "+
				"10: no mount, 11: wrong user, 12-17: could not write, read, make directories or chmod, 18: owner shown, "+
				"19/20 (16 for the sidecar): opened root's 0600 file, 21/22: saw above the root, 24/25: gave the file away, "+
				"26-29: rename, link, symlink, touch, rmdir; sidecar 12-15: did not read the app's file or saw another owner",
				cluster, codes, task.StoppedReason)
		}
	}
	for _, d := range []string{"container", "sandbox"} {
		dir := filepath.Join(apps, d)
		for _, f := range []string{"renamed", "d", "d/f", "by-root"} {
			if st, err := os.Lstat(filepath.Join(dir, f)); err != nil || !ownedBy(st, 1000, 1000) {
				t.Errorf("%s/%s on the host: %v %v, want owned by 1000:1000", d, f, st, err)
			}
		}
		if st, err := os.Stat(filepath.Join(dir, "renamed")); err == nil && st.Mode().Perm() != 0o640 {
			t.Errorf("%s/renamed: mode %v, want 0640", d, st.Mode())
		}
		if b, err := os.ReadFile(filepath.Join(dir, "renamed")); err != nil || string(b) != "hello\nmore\n" {
			t.Errorf("%s/renamed holds %q (%v)", d, b, err)
		}
		if st, err := os.Lstat(filepath.Join(dir, "root-only")); err != nil || !ownedBy(st, 0, 0) {
			t.Errorf("%s/root-only: %v %v, want root's still", d, st, err)
		} else if b, _ := os.ReadFile(filepath.Join(dir, "root-only")); string(b) != "root's" {
			t.Errorf("%s/root-only now holds %q", d, b)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(tree, "secret")); string(b) != "above" {
		t.Errorf("the secret above the root now holds %q", b)
	}
	assertNothingLeft(t, s)
	assertNoEFSMounts(t, s)
}
