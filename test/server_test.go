package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type clusterList struct {
	ClusterArns []string `json:"clusterArns"`
}

// TestGantryEnv: the exports `gantry env` prints are all a shell needs for
// the aws CLI to reach this server as its account.
func TestGantryEnv(t *testing.T) {
	s := testenv.Start(t)
	var created struct{ Cluster struct{ ClusterArn string } }
	s.MustAWS(&created, "ecs", "create-cluster", "--cluster-name", "env-check")

	bin := testenv.Binary(t)
	cmd := exec.Command("bash", "-c", `set -e; eval "$("$GANTRY" env --data-dir "$DATA" --endpoint "$ENDPOINT")"; aws ecs list-clusters --output json`)
	// Nothing AWS-related from the test's own environment, and no config
	// files: only what gantry env exports may make this work.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GANTRY=" + bin, "DATA=" + s.DataDir, "ENDPOINT=" + s.Endpoint}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("eval \"$(gantry env)\"; aws ecs list-clusters: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), created.Cluster.ClusterArn) || created.Cluster.ClusterArn == "" {
		t.Fatalf("list-clusters through gantry env printed %s; want %q in it", stdout.String(), created.Cluster.ClusterArn)
	}

	out, err := exec.Command(bin, "env", "--data-dir", s.DataDir, "--endpoint", s.Endpoint).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"export AWS_ENDPOINT_URL=" + s.Endpoint + "\n",
		"export AWS_ACCESS_KEY_ID=" + s.Creds.AccessKeyID + "\n",
		"export AWS_SECRET_ACCESS_KEY=" + s.Creds.SecretAccessKey + "\n",
		"export AWS_DEFAULT_REGION=" + s.Creds.Region + "\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("gantry env output lacks %q:\n%s", want, out)
		}
	}

	// A data directory no server has initialised: a clear error, no exports.
	empty := t.TempDir()
	c := exec.Command(bin, "env", "--data-dir", empty)
	out, err = c.CombinedOutput()
	if err == nil || strings.Contains(string(out), "export") || !strings.Contains(string(out), "gantry server --data-dir "+empty) {
		t.Errorf("gantry env on an empty data dir: %v\n%s", err, out)
	}
}

// TestServerFlags: --data-dir, --region and --account-id are honoured.
func TestServerFlags(t *testing.T) {
	s := testenv.Start(t, "--region", "eu-west-3", "--account-id", "111122223333")
	if s.Creds.Region != "eu-west-3" || s.Creds.AccountID != "111122223333" {
		t.Fatalf("credentials: %+v", s.Creds)
	}
	fi, err := os.Stat(filepath.Join(s.DataDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials.json mode %v, want 0600 (it holds the secret key)", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(s.DataDir, "state.db")); err != nil {
		t.Errorf("state is not in --data-dir: %v", err)
	}
	var created struct{ Cluster struct{ ClusterArn string } }
	s.MustAWS(&created, "ecs", "create-cluster", "--cluster-name", "flags")
	if want := "arn:aws:ecs:eu-west-3:111122223333:cluster/flags"; created.Cluster.ClusterArn != want {
		t.Fatalf("cluster ARN %q, want %q", created.Cluster.ClusterArn, want)
	}
}

// TestRestartKeepsState: what the API created is there after a restart, and
// the account's keys do not change.
func TestRestartKeepsState(t *testing.T) {
	s := testenv.Start(t)
	var created struct{ Cluster struct{ ClusterArn string } }
	s.MustAWS(&created, "ecs", "create-cluster", "--cluster-name", "survivor")
	before := *s.Creds

	s.Restart()
	if *s.Creds != before {
		t.Fatalf("credentials changed across a restart: %+v -> %+v", before, *s.Creds)
	}
	var described struct {
		Clusters []struct{ ClusterArn, ClusterName, Status string }
		Failures []struct{ Arn, Reason string }
	}
	s.MustAWS(&described, "ecs", "describe-clusters", "--clusters", "survivor")
	if len(described.Clusters) != 1 || described.Clusters[0].ClusterArn != created.Cluster.ClusterArn || described.Clusters[0].Status != "ACTIVE" {
		t.Fatalf("after restart: %+v", described)
	}
	var list clusterList
	s.MustAWS(&list, "ecs", "list-clusters")
	found := false
	for _, arn := range list.ClusterArns {
		found = found || arn == created.Cluster.ClusterArn
	}
	if !found {
		t.Fatalf("list-clusters after restart: %v", list.ClusterArns)
	}
}

// TestCommandLine: version, usage and flag errors.
func TestCommandLine(t *testing.T) {
	bin := testenv.Binary(t)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run("version"); code != 0 || !strings.HasPrefix(out, "gantry ") {
		t.Errorf("gantry version: exit %d, %q", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"server", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"env", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	} {
		out, code := run(c.args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("gantry %v: exit %d\n%s\nwant exit 2 and %q", c.args, code, out, c.want)
		}
	}
	// A flag error names the command's flags, so the user can fix it.
	if out, _ := run("server", "--no-such-flag"); !strings.Contains(out, "-data-dir") {
		t.Errorf("gantry server with a bad flag does not show its flags:\n%s", out)
	}
	if out, code := run("help"); code != 0 || !strings.Contains(out, "gantry server") {
		t.Errorf("gantry help: exit %d\n%s", code, out)
	}
}

// TestServerPortInUse: a second server on a taken address says so and exits
// instead of running half-started.
func TestServerPortInUse(t *testing.T) {
	s := testenv.Start(t)
	dir := t.TempDir()
	t.Cleanup(func() { testenv.StopContainerd(dir) })
	cmd := exec.Command(testenv.Binary(t), "server", "--data-dir", dir, "--listen", s.Listen, "--containerd", "/nonexistent/containerd.sock")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), s.Listen) {
			t.Fatalf("second server: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("a second server on %s kept running:\n%s", s.Listen, out.String())
	}
}
