package test

import (
	"bytes"
	"crypto/md5"
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

type smOut struct {
	ARN                string              `json:"ARN"`
	Name               string              `json:"Name"`
	VersionId          string              `json:"VersionId"`
	SecretString       *string             `json:"SecretString"`
	VersionStages      []string            `json:"VersionStages"`
	Description        string              `json:"Description"`
	DeletedDate        any                 `json:"DeletedDate"`
	DeletionDate       any                 `json:"DeletionDate"`
	VersionIdsToStages map[string][]string `json:"VersionIdsToStages"`
	Tags               []struct{ Key, Value string }
}

// TestSecretsManagerAPI drives Secrets Manager with the CLI: versions and
// stages, the three ways to name a secret, listing, deletion and recovery,
// tags, and AWS's errors.
func TestSecretsManagerAPI(t *testing.T) {
	s := testenv.Start(t)
	var c smOut
	s.MustAWS(&c, "secretsmanager", "create-secret", "--name", "app/db", "--secret-string", "s3cr3t-one", "--description", "db password", "--tags", "Key=team,Value=core")
	if !strings.HasPrefix(c.ARN, "arn:aws:secretsmanager:") || !strings.Contains(c.ARN, ":secret:app/db-") || len(c.ARN)-strings.LastIndex(c.ARN, "-") != 7 || c.VersionId == "" {
		t.Fatalf("create-secret: %+v", c)
	}
	if fi, err := os.Stat(filepath.Join(s.DataDir, "secrets.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secrets.key: %v %v", fi, err)
	}
	partial := strings.TrimSuffix(c.ARN, c.ARN[len(c.ARN)-7:])
	for _, id := range []string{"app/db", c.ARN, partial} {
		var g smOut
		s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", id)
		if g.SecretString == nil || *g.SecretString != "s3cr3t-one" || g.VersionId != c.VersionId || g.ARN != c.ARN || fmt.Sprint(g.VersionStages) != "[AWSCURRENT]" {
			t.Errorf("get-secret-value %s: %+v", id, g)
		}
	}
	if code, msg := s.AWSError("secretsmanager", "create-secret", "--name", "app/db", "--secret-string", "x"); code != "ResourceExistsException" || !strings.Contains(msg, "app/db already exists") {
		t.Errorf("duplicate: %s %s", code, msg)
	}
	if code, _ := s.AWSError("secretsmanager", "get-secret-value", "--secret-id", "nope"); code != "ResourceNotFoundException" {
		t.Errorf("missing: %s", code)
	}
	if code, _ := s.AWSError("secretsmanager", "get-secret-value", "--secret-id", c.ARN[:len(c.ARN)-6]+"zzzzzz"); code != "ResourceNotFoundException" {
		t.Errorf("wrong suffix: %s", code)
	}

	// PutSecretValue: the new version is current, the old one previous.
	var p smOut
	s.MustAWS(&p, "secretsmanager", "put-secret-value", "--secret-id", "app/db", "--secret-string", "s3cr3t-two")
	var g smOut
	s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", "app/db")
	if *g.SecretString != "s3cr3t-two" || g.VersionId != p.VersionId {
		t.Errorf("after put: %+v", g)
	}
	s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", "app/db", "--version-stage", "AWSPREVIOUS")
	if *g.SecretString != "s3cr3t-one" || g.VersionId != c.VersionId {
		t.Errorf("AWSPREVIOUS: %+v", g)
	}
	s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", "app/db", "--version-id", c.VersionId)
	if *g.SecretString != "s3cr3t-one" {
		t.Errorf("by version id: %+v", g)
	}
	if code, _ := s.AWSError("secretsmanager", "get-secret-value", "--secret-id", "app/db", "--version-stage", "AWSPENDING"); code != "ResourceNotFoundException" {
		t.Errorf("missing stage: %s", code)
	}
	if code, _ := s.AWSError("secretsmanager", "put-secret-value", "--secret-id", "app/db", "--secret-string", "x", "--secret-binary", "eA=="); code != "InvalidParameterException" {
		t.Errorf("both values: %s", code)
	}
	s.MustAWS(nil, "secretsmanager", "update-secret", "--secret-id", "app/db", "--description", "the db")
	var d smOut
	s.MustAWS(&d, "secretsmanager", "describe-secret", "--secret-id", partial)
	if d.Description != "the db" || len(d.VersionIdsToStages) != 2 || fmt.Sprint(d.VersionIdsToStages[p.VersionId]) != "[AWSCURRENT]" || fmt.Sprint(d.VersionIdsToStages[c.VersionId]) != "[AWSPREVIOUS]" || len(d.Tags) != 1 {
		t.Errorf("describe: %+v", d)
	}
	// Binary values, through boto3.
	out, err := s.Python(`
import boto3
sm = boto3.client("secretsmanager")
sm.create_secret(Name="bin", SecretBinary=b"\x00\x01\xffraw")
v = sm.get_secret_value(SecretId="bin")
print(v["SecretBinary"] == b"\x00\x01\xffraw", "SecretString" in v)
`)
	if err != nil || strings.TrimSpace(out) != "True False" {
		t.Errorf("binary secret: %v %s", err, out)
	}

	// ListSecrets: filters and paging.
	for i := range 3 {
		s.MustAWS(nil, "secretsmanager", "create-secret", "--name", fmt.Sprintf("list/s%d", i), "--secret-string", "v", "--tags", fmt.Sprintf("Key=n,Value=%d", i))
	}
	var l struct {
		SecretList []smOut
		NextToken  string
	}
	s.MustAWS(&l, "secretsmanager", "list-secrets", "--filters", "Key=name,Values=list/")
	if len(l.SecretList) != 3 {
		t.Errorf("name filter: %+v", l)
	}
	s.MustAWS(&l, "secretsmanager", "list-secrets", "--filters", "Key=tag-value,Values=1")
	if len(l.SecretList) != 1 || l.SecretList[0].Name != "list/s1" {
		t.Errorf("tag filter: %+v", l)
	}
	s.MustAWS(&l, "secretsmanager", "list-secrets", "--max-results", "2", "--no-paginate")
	if len(l.SecretList) != 2 || l.NextToken == "" {
		t.Errorf("page 1: %+v", l)
	}
	s.MustAWS(&l, "secretsmanager", "list-secrets") // the CLI follows NextToken
	if len(l.SecretList) != 5 {
		t.Errorf("all: %d", len(l.SecretList))
	}

	// Deletion with a recovery window, then restore; force delete.
	if code, _ := s.AWSError("secretsmanager", "delete-secret", "--secret-id", "app/db", "--recovery-window-in-days", "3"); code != "InvalidParameterException" {
		t.Errorf("window 3: %s", code)
	}
	if code, _ := s.AWSError("secretsmanager", "delete-secret", "--secret-id", "app/db", "--recovery-window-in-days", "7", "--force-delete-without-recovery"); code != "InvalidParameterException" {
		t.Errorf("window and force: %s", code)
	}
	var del smOut
	s.MustAWS(&del, "secretsmanager", "delete-secret", "--secret-id", "app/db", "--recovery-window-in-days", "7")
	if del.DeletionDate == nil {
		t.Errorf("delete: %+v", del)
	}
	if code, msg := s.AWSError("secretsmanager", "get-secret-value", "--secret-id", "app/db"); code != "InvalidRequestException" || !strings.Contains(msg, "marked for deletion") {
		t.Errorf("get deleted: %s %s", code, msg)
	}
	if code, _ := s.AWSError("secretsmanager", "create-secret", "--name", "app/db", "--secret-string", "x"); code != "InvalidRequestException" {
		t.Errorf("create over deleted: %s", code)
	}
	s.MustAWS(&l, "secretsmanager", "list-secrets")
	if len(l.SecretList) != 4 {
		t.Errorf("list hides deleted: %d", len(l.SecretList))
	}
	s.MustAWS(nil, "secretsmanager", "restore-secret", "--secret-id", "app/db")
	s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", "app/db")
	if *g.SecretString != "s3cr3t-two" {
		t.Errorf("restored: %+v", g)
	}
	s.MustAWS(nil, "secretsmanager", "delete-secret", "--secret-id", "list/s0", "--force-delete-without-recovery")
	if code, _ := s.AWSError("secretsmanager", "describe-secret", "--secret-id", "list/s0"); code != "ResourceNotFoundException" {
		t.Errorf("force-deleted: %s", code)
	}
	s.MustAWS(nil, "secretsmanager", "create-secret", "--name", "list/s0", "--secret-string", "again")

	// Tags.
	s.MustAWS(nil, "secretsmanager", "tag-resource", "--secret-id", "app/db", "--tags", "Key=env,Value=prod", "Key=team,Value=infra")
	s.MustAWS(nil, "secretsmanager", "untag-resource", "--secret-id", "app/db", "--tag-keys", "env")
	s.MustAWS(&d, "secretsmanager", "describe-secret", "--secret-id", "app/db")
	if len(d.Tags) != 1 || d.Tags[0].Key != "team" || d.Tags[0].Value != "infra" {
		t.Errorf("tags: %+v", d.Tags)
	}

	// No value in the clear at rest, and the values survive a restart.
	s.Restart()
	s.MustAWS(&g, "secretsmanager", "get-secret-value", "--secret-id", "app/db", "--version-stage", "AWSPREVIOUS")
	if *g.SecretString != "s3cr3t-one" {
		t.Errorf("after restart: %+v", g)
	}
	assertNotStored(t, s, "s3cr3t-one", "s3cr3t-two")
}

// assertNotStored greps the state database (with its WAL), the logs
// database, the agent's task records and the server log for values.
func assertNotStored(t *testing.T, s *testenv.Server, values ...string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.DataDir, "*.db*"))
	more, _ := filepath.Glob(filepath.Join(s.DataDir, "agent", "tasks", "*"))
	files = append(append(files, more...), filepath.Join(s.DataDir, "server.log"))
	if len(files) < 2 {
		t.Fatalf("no state files found: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the secret value %q", f, v)
			}
		}
	}
}

// TestParameterStoreAPI drives the Parameter Store subset with the CLI.
func TestParameterStoreAPI(t *testing.T) {
	s := testenv.Start(t)
	type param struct {
		Name, Type, Value, ARN string
		Version                int
	}
	var put struct{ Version int }
	s.MustAWS(&put, "ssm", "put-parameter", "--name", "/app/db/host", "--value", "db.internal", "--type", "String")
	if put.Version != 1 {
		t.Errorf("put: %+v", put)
	}
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "/app/db/password", "--value", "pa55-word", "--type", "SecureString")
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "/app/hosts", "--value", "a,b,c", "--type", "StringList")
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "plain", "--value", "top", "--type", "String")
	if code, _ := s.AWSError("ssm", "put-parameter", "--name", "/app/db/host", "--value", "x", "--type", "String"); code != "ParameterAlreadyExists" {
		t.Errorf("exists: %s", code)
	}
	s.MustAWS(&put, "ssm", "put-parameter", "--name", "/app/db/host", "--value", "db2.internal", "--overwrite")
	if put.Version != 2 {
		t.Errorf("overwrite: %+v", put)
	}
	if code, _ := s.AWSError("ssm", "put-parameter", "--name", "a/b", "--value", "x", "--type", "String"); code != "ValidationException" {
		t.Errorf("unqualified: %s", code)
	}
	if code, _ := s.AWSError("ssm", "put-parameter", "--name", "/aws/x", "--value", "x", "--type", "String"); code != "ValidationException" {
		t.Errorf("reserved: %s", code)
	}

	var g struct{ Parameter param }
	s.MustAWS(&g, "ssm", "get-parameter", "--name", "/app/db/password")
	if g.Parameter.Type != "SecureString" || g.Parameter.Value == "pa55-word" || g.Parameter.Value == "" {
		t.Errorf("secure without decryption: %+v", g)
	}
	s.MustAWS(&g, "ssm", "get-parameter", "--name", "/app/db/password", "--with-decryption")
	if g.Parameter.Value != "pa55-word" || !strings.HasSuffix(g.Parameter.ARN, ":parameter/app/db/password") {
		t.Errorf("decrypted: %+v", g)
	}
	s.MustAWS(&g, "ssm", "get-parameter", "--name", g.Parameter.ARN, "--with-decryption")
	if g.Parameter.Value != "pa55-word" {
		t.Errorf("by ARN: %+v", g)
	}
	s.MustAWS(&g, "ssm", "get-parameter", "--name", "/app/db/host:1")
	if g.Parameter.Value != "db.internal" || g.Parameter.Version != 1 {
		t.Errorf("version 1: %+v", g)
	}
	if code, _ := s.AWSError("ssm", "get-parameter", "--name", "/nope"); code != "ParameterNotFound" {
		t.Errorf("missing: %s", code)
	}
	var gs struct {
		Parameters        []param
		InvalidParameters []string
	}
	s.MustAWS(&gs, "ssm", "get-parameters", "--names", "/app/hosts", "plain", "/missing")
	if len(gs.Parameters) != 2 || fmt.Sprint(gs.InvalidParameters) != "[/missing]" {
		t.Errorf("get-parameters: %+v", gs)
	}
	s.MustAWS(&gs, "ssm", "get-parameters-by-path", "--path", "/app")
	if len(gs.Parameters) != 1 || gs.Parameters[0].Name != "/app/hosts" {
		t.Errorf("by path: %+v", gs)
	}
	s.MustAWS(&gs, "ssm", "get-parameters-by-path", "--path", "/app", "--recursive", "--with-decryption", "--page-size", "1")
	if len(gs.Parameters) != 3 {
		t.Errorf("recursive: %+v", gs)
	}
	s.MustAWS(nil, "ssm", "delete-parameter", "--name", "/app/hosts")
	if code, _ := s.AWSError("ssm", "delete-parameter", "--name", "/app/hosts"); code != "ParameterNotFound" {
		t.Errorf("delete twice: %s", code)
	}
	assertNotStored(t, s, "pa55-word")
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// checkEnv is a shell command exiting 0 only if each variable's MD5 is the
// expected one (the expected values themselves are in no task definition),
// else with the 10+index of the first that differs.
func checkEnv(vars []string, values []string) string {
	var b strings.Builder
	for i, v := range vars {
		fmt.Fprintf(&b, `test "$(printf %%s "$%s" | md5sum | cut -c1-32)" = %s || exit %d; `, v, md5hex(values[i]), 10+i)
	}
	b.WriteString("exit 0")
	return b.String()
}

// TestSecretsInTasks runs real tasks whose containers get secrets: a whole
// secret, one JSON key of another, an SSM SecureString by name and a
// String by ARN; a new value reaches new tasks; a missing secret fails the
// task as Fargate does; no value leaks into DescribeTasks or stored state.
func TestSecretsInTasks(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "sec")
	net := awsvpc(defaultSubnet(t, s))

	// The tasks read their secrets as their execution role, which must
	// be allowed to.
	s.MustAWS(nil, "iam", "create-role", "--role-name", "ecsTaskExecutionRole", "--assume-role-policy-document", ecsTasksTrust)
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "ecsTaskExecutionRole", "--policy-name", "secrets", "--policy-document",
		`{"Statement":[{"Effect":"Allow","Action":["secretsmanager:GetSecretValue","ssm:GetParameters"],"Resource":"*"}]}`)
	var whole, js smOut
	s.MustAWS(&whole, "secretsmanager", "create-secret", "--name", "whole", "--secret-string", "value-W1-7f3a")
	s.MustAWS(&js, "secretsmanager", "create-secret", "--name", "creds", "--secret-string", `{"user":"admin","pass":"value-J-91bc"}`)
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "/task/token", "--value", "value-P-c0de", "--type", "SecureString")
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "/task/region", "--value", "value-R-5e5e", "--type", "String")
	var acct struct{ Parameter struct{ ARN string } }
	s.MustAWS(&acct, "ssm", "get-parameter", "--name", "/task/region")

	vars := []string{"WHOLE", "PASS", "TOKEN", "REGION"}
	cmd := checkEnv(vars, []string{"value-W1-7f3a", "value-J-91bc", "value-P-c0de", "value-R-5e5e"})
	registerJSON(t, s, fmt.Sprintf(`{"family":"sec","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"executionRoleArn":"arn:aws:iam::`+s.Creds.AccountID+`:role/ecsTaskExecutionRole",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c",%q],
		"secrets":[{"name":"WHOLE","valueFrom":%q},{"name":"PASS","valueFrom":%q},{"name":"TOKEN","valueFrom":"/task/token"},{"name":"REGION","valueFrom":%q}]}]}`,
		cmd, whole.ARN, js.ARN+":pass::", acct.Parameter.ARN))
	registerJSON(t, s, `{"family":"nosecret","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"executionRoleArn":"arn:aws:iam::`+s.Creds.AccountID+`:role/ecsTaskExecutionRole",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["true"],
		"secrets":[{"name":"X","valueFrom":"arn:aws:secretsmanager:us-east-1:000000000000:secret:missing-AbCdEf"}]}]}`)

	first := runTask(t, s, "--cluster", "sec", "--task-definition", "sec", "--network-configuration", net)
	missing := runTask(t, s, "--cluster", "sec", "--task-definition", "nosecret", "--network-configuration", net)

	got := waitStatus(t, s, "sec", first.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "EssentialContainerExited" || got.Containers[0].ExitCode == nil || *got.Containers[0].ExitCode != 0 {
		t.Fatalf("secrets task: %s %s exit %v", got.StopCode, got.StoppedReason, got.Containers[0].ExitCode)
	}
	got = waitStatus(t, s, "sec", missing.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "TaskFailedToStart" || !strings.HasPrefix(got.StoppedReason, "ResourceInitializationError: unable to pull secrets or registry auth: ") || !strings.Contains(got.StoppedReason, "missing-AbCdEf") {
		t.Errorf("missing secret: %q %q", got.StopCode, got.StoppedReason)
	}

	// Rotation: a new value reaches the next task.
	s.MustAWS(nil, "secretsmanager", "put-secret-value", "--secret-id", "whole", "--secret-string", "value-W2-4d4d")
	cmd2 := checkEnv(vars, []string{"value-W2-4d4d", "value-J-91bc", "value-P-c0de", "value-R-5e5e"})
	second := runTask(t, s, "--cluster", "sec", "--task-definition", "sec", "--network-configuration", net,
		"--overrides", fmt.Sprintf(`{"containerOverrides":[{"name":"main","command":["sh","-c",%q]}]}`, cmd2))
	got = waitStatus(t, s, "sec", second.TaskArn, "STOPPED", 2*time.Minute)
	if got.Containers[0].ExitCode == nil || *got.Containers[0].ExitCode != 0 {
		t.Errorf("after put-secret-value: %s exit %v", got.StoppedReason, got.Containers[0].ExitCode)
	}

	stdout, _, _ := s.AWS("ecs", "describe-tasks", "--cluster", "sec", "--tasks", first.TaskArn, second.TaskArn, missing.TaskArn)
	for _, v := range []string{"value-W1-7f3a", "value-W2-4d4d", "value-J-91bc", "value-P-c0de", "value-R-5e5e"} {
		if strings.Contains(stdout, v) {
			t.Errorf("describe-tasks shows %q", v)
		}
	}
	assertNotStored(t, s, "value-W1-7f3a", "value-W2-4d4d", "value-J-91bc", "value-P-c0de", "value-R-5e5e")
}
