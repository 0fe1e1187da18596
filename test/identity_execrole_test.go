package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestExecutionRoleReadsSecrets: a task's secrets are read as its execution
// role. A role whose policy allows them starts the task; one that may not
// read the secret, or a role that does not exist, fails the task to start
// with Fargate's ResourceInitializationError; secrets or repository
// credentials without an execution role are refused at registration.
func TestExecutionRoleReadsSecrets(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	acct := s.Creds.AccountID
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "exec")
	net := awsvpc(s.DefaultSubnet())

	var sec smOut
	s.MustAWS(&sec, "secretsmanager", "create-secret", "--name", "db-pass", "--secret-string", "value-E-1a2b")
	s.MustAWS(nil, "ssm", "put-parameter", "--name", "/exec/host", "--value", "value-H-3c4d", "--type", "String")
	for _, r := range []struct{ name, policy string }{
		{"exec-ok", `{"Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"` + sec.ARN + `"},{"Effect":"Allow","Action":"ssm:GetParameters","Resource":"arn:aws:ssm:*:` + acct + `:parameter/exec/*"}]}`},
		{"exec-ssm-only", `{"Statement":[{"Effect":"Allow","Action":"ssm:GetParameters","Resource":"*"}]}`},
		{"exec-denied", `{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ssm:*","Resource":"*"}]}`},
	} {
		s.MustAWS(nil, "iam", "create-role", "--role-name", r.name, "--assume-role-policy-document", ecsTasksTrust)
		s.MustAWS(nil, "iam", "put-role-policy", "--role-name", r.name, "--policy-name", "p", "--policy-document", r.policy)
	}
	roleARN := func(name string) string { return "arn:aws:iam::" + acct + ":role/" + name }

	cmd := checkEnv([]string{"PASS", "HOST"}, []string{"value-E-1a2b", "value-H-3c4d"})
	def := func(family, role string) string {
		return fmt.Sprintf(`{"family":%q,"executionRoleArn":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
			"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c",%q],
			"secrets":[{"name":"PASS","valueFrom":%q},{"name":"HOST","valueFrom":"/exec/host"}]}]}`, family, role, cmd, sec.ARN)
	}
	registerJSON(t, s, def("ok", roleARN("exec-ok")))
	registerJSON(t, s, def("ssmonly", roleARN("exec-ssm-only")))
	registerJSON(t, s, def("denied", roleARN("exec-denied")))
	registerJSON(t, s, def("norole", roleARN("no-such-role")))

	ok := runTask(t, s, "--cluster", "exec", "--task-definition", "ok", "--network-configuration", net)
	ssmOnly := runTask(t, s, "--cluster", "exec", "--task-definition", "ssmonly", "--network-configuration", net)
	denied := runTask(t, s, "--cluster", "exec", "--task-definition", "denied", "--network-configuration", net)
	noRole := runTask(t, s, "--cluster", "exec", "--task-definition", "norole", "--network-configuration", net)

	got := waitStatus(t, s, "exec", ok.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "EssentialContainerExited" || got.Containers[0].ExitCode == nil || *got.Containers[0].ExitCode != 0 {
		t.Errorf("task whose execution role may read its secrets: %s %s exit %v", got.StopCode, got.StoppedReason, got.Containers[0].ExitCode)
	}
	const prefix = "ResourceInitializationError: unable to pull secrets or registry auth: "
	for _, c := range []struct {
		task cliTask
		want []string
	}{
		{ssmOnly, []string{"AccessDeniedException", "assumed-role/exec-ssm-only/" + taskID(ssmOnly.TaskArn), "secretsmanager:GetSecretValue", sec.ARN, "because no identity-based policy allows"}},
		{denied, []string{"AccessDeniedException", "ssm:GetParameters", "parameter/exec/host", "with an explicit deny"}},
		{noRole, []string{"ECS was unable to assume the role '" + roleARN("no-such-role") + "'"}},
	} {
		got := waitStatus(t, s, "exec", c.task.TaskArn, "STOPPED", 2*time.Minute)
		if got.StopCode != "TaskFailedToStart" || !strings.HasPrefix(got.StoppedReason, prefix) {
			t.Errorf("task %s: stopCode %q reason %q, want TaskFailedToStart and %q...", taskID(c.task.TaskArn), got.StopCode, got.StoppedReason, prefix)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(got.StoppedReason, w) {
				t.Errorf("task %s: reason %q lacks %q", taskID(c.task.TaskArn), got.StoppedReason, w)
			}
		}
		if strings.Contains(got.StoppedReason, "value-") {
			t.Errorf("a stoppedReason shows a value: %s", got.StoppedReason)
		}
	}

	// No execution role: refused at registration, as Fargate does.
	code, msg := s.AWSError("ecs", "register-task-definition", "--cli-input-json", `{"family":"x","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","secrets":[{"name":"P","valueFrom":"`+sec.ARN+`"}]}]}`)
	if code != "ClientException" || !strings.Contains(msg, "Fargate requires task definition to have execution role ARN to support secrets.") {
		t.Errorf("secrets without an execution role: %s %s", code, msg)
	}
	code, msg = s.AWSError("ecs", "register-task-definition", "--cli-input-json", `{"family":"x","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"registry.example.com/app:1","repositoryCredentials":{"credentialsParameter":"`+sec.ARN+`"}}]}`)
	if code != "ClientException" || !strings.Contains(msg, "Private repository authentication requires that the task definition specify a value for executionRoleArn.") {
		t.Errorf("repositoryCredentials without an execution role: %s %s", code, msg)
	}
	assertNotStored(t, s, "value-E-1a2b", "value-H-3c4d")
}
