package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestCrossAccountDenied: a new account gets its own default VPC and runs
// a task in it; another account naming its cluster, task, task definition,
// secret or parameter by ARN is refused with AccessDenied (never data,
// never an empty success), whether root or a user allowed everything.
func TestCrossAccountDenied(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	dd := []string{"--data-dir", s.DataDir}
	a := keyPair{id: s.Creds.AccessKeyID, secret: s.Creds.SecretAccessKey}
	gantryCmd(t, append([]string{"accounts", "create", "team-b", "--id", "333344445555"}, dd...)...)
	b := envKeys(t, gantryCmd(t, append([]string{"env", "--account", "team-b", "--endpoint", s.Endpoint}, dd...)...))

	// team-b's own default VPC, subnets and default group, apart from A's.
	type subnets struct {
		Subnets []struct{ SubnetId, VpcId, CidrBlock, OwnerId string }
	}
	var sa, sb subnets
	mustAs(t, s, a, &sa, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	mustAs(t, s, b, &sb, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	if len(sb.Subnets) == 0 || sb.Subnets[0].OwnerId != "333344445555" || sb.Subnets[0].VpcId == sa.Subnets[0].VpcId {
		t.Fatalf("team-b's default subnets %+v (A's %+v)", sb, sa)
	}
	var sg struct {
		SecurityGroups []struct{ GroupId, VpcId string }
	}
	mustAs(t, s, b, &sg, "ec2", "describe-security-groups", "--filters", "Name=group-name,Values=default", "Name=vpc-id,Values="+sb.Subnets[0].VpcId)
	if len(sg.SecurityGroups) != 1 {
		t.Errorf("team-b's default security group: %+v", sg)
	}

	// team-b's resources, one of each kind, and a running task.
	var cl struct{ Cluster struct{ ClusterArn string } }
	mustAs(t, s, b, &cl, "ecs", "create-cluster", "--cluster-name", "bc")
	var td struct {
		TaskDefinition struct{ TaskDefinitionArn string }
	}
	mustAs(t, s, b, &td, "ecs", "register-task-definition", "--cli-input-json", `{"family":"b-sleep","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","trap 'exit 0' TERM; sleep 600 & wait"]}]}`)
	var run cliTasks
	mustAs(t, s, b, &run, "ecs", "run-task", "--cluster", "bc", "--task-definition", "b-sleep", "--network-configuration", awsvpc(sb.Subnets[0].SubnetId))
	if len(run.Tasks) != 1 {
		t.Fatalf("run-task in team-b: %+v", run)
	}
	taskARN := run.Tasks[0].TaskArn
	var sec smOut
	mustAs(t, s, b, &sec, "secretsmanager", "create-secret", "--name", "b-secret", "--secret-string", "value-B-77aa")
	mustAs(t, s, b, nil, "ssm", "put-parameter", "--name", "/b/param", "--value", "value-BP-88bb", "--type", "SecureString")
	paramARN := "arn:aws:ssm:" + s.Creds.Region + ":333344445555:parameter/b/param"
	waitRunningAs(t, s, b, cl.Cluster.ClusterArn, taskARN)

	// A user of A allowed everything is refused just as A's root is.
	s.MustAWS(nil, "iam", "create-user", "--user-name", "admin")
	s.MustAWS(nil, "iam", "put-user-policy", "--user-name", "admin", "--policy-name", "all", "--policy-document", `{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`)
	var ak struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	s.MustAWS(&ak, "iam", "create-access-key", "--user-name", "admin")
	admin := keyPair{id: ak.AccessKey.AccessKeyId, secret: ak.AccessKey.SecretAccessKey}

	matrix := [][]string{
		{"ecs", "describe-clusters", "--clusters", cl.Cluster.ClusterArn},
		{"ecs", "describe-clusters", "--clusters", "default", cl.Cluster.ClusterArn},
		{"ecs", "list-tasks", "--cluster", cl.Cluster.ClusterArn},
		{"ecs", "describe-tasks", "--cluster", cl.Cluster.ClusterArn, "--tasks", taskARN},
		{"ecs", "describe-tasks", "--cluster", "bc", "--tasks", taskARN},
		{"ecs", "stop-task", "--cluster", cl.Cluster.ClusterArn, "--task", taskARN},
		{"ecs", "describe-task-definition", "--task-definition", td.TaskDefinition.TaskDefinitionArn},
		{"ecs", "run-task", "--cluster", cl.Cluster.ClusterArn, "--task-definition", td.TaskDefinition.TaskDefinitionArn},
		{"ecs", "list-tags-for-resource", "--resource-arn", cl.Cluster.ClusterArn},
		{"ecs", "delete-cluster", "--cluster", cl.Cluster.ClusterArn},
		{"secretsmanager", "get-secret-value", "--secret-id", sec.ARN},
		{"secretsmanager", "describe-secret", "--secret-id", sec.ARN},
		{"secretsmanager", "put-secret-value", "--secret-id", sec.ARN, "--secret-string", "overwritten"},
		{"secretsmanager", "delete-secret", "--secret-id", sec.ARN, "--force-delete-without-recovery"},
		{"ssm", "get-parameter", "--name", paramARN, "--with-decryption"},
		{"ssm", "get-parameters", "--names", paramARN, "--with-decryption"},
	}
	for _, args := range matrix {
		o, e, code := awsAs(t, s, a.id, a.secret, "", args...)
		if code == 0 || !strings.Contains(e, "AccessDenied") {
			t.Errorf("A's root: aws %s: exit %d, want AccessDenied; stdout %s stderr %s", strings.Join(args, " "), code, o, e)
		}
		for _, v := range []string{"value-B-77aa", "value-BP-88bb"} {
			if strings.Contains(o+e, v) {
				t.Errorf("A's root: aws %s shows team-b's value", strings.Join(args, " "))
			}
		}
	}
	// The same matrix for the user, through boto3 in one process (each
	// CLI run costs a Python start).
	out, err := s.Python(fmt.Sprintf(`
import boto3, botocore
s = boto3.Session(aws_access_key_id=%q, aws_secret_access_key=%q)
ecs, sm, ssm = s.client("ecs"), s.client("secretsmanager"), s.client("ssm")
cluster, task, td, secret, param = %q, %q, %q, %q, %q
calls = [
    lambda: ecs.describe_clusters(clusters=[cluster]),
    lambda: ecs.list_tasks(cluster=cluster),
    lambda: ecs.describe_tasks(cluster=cluster, tasks=[task]),
    lambda: ecs.describe_tasks(cluster="bc", tasks=[task]),
    lambda: ecs.stop_task(cluster=cluster, task=task),
    lambda: ecs.describe_task_definition(taskDefinition=td),
    lambda: ecs.delete_cluster(cluster=cluster),
    lambda: sm.get_secret_value(SecretId=secret),
    lambda: sm.put_secret_value(SecretId=secret, SecretString="overwritten"),
    lambda: ssm.get_parameter(Name=param, WithDecryption=True),
]
for i, call in enumerate(calls):
    try:
        print(i, "ALLOWED", call())
    except botocore.exceptions.ClientError as e:
        print(i, e.response["Error"]["Code"])
`, admin.id, admin.secret, cl.Cluster.ClusterArn, taskARN, td.TaskDefinition.TaskDefinitionArn, sec.ARN, paramARN))
	if err != nil {
		t.Fatalf("boto3 matrix: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 10 {
		t.Fatalf("boto3 matrix: %s", out)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " AccessDeniedException") {
			t.Errorf("A's admin user, call %s", l)
		}
	}

	// team-b's things are untouched and its own calls still work.
	waitRunningAs(t, s, b, cl.Cluster.ClusterArn, taskARN)
	var g smOut
	mustAs(t, s, b, &g, "secretsmanager", "get-secret-value", "--secret-id", sec.ARN)
	if g.SecretString == nil || *g.SecretString != "value-B-77aa" {
		t.Errorf("team-b's secret after A's attempts: %+v", g)
	}
	mustAs(t, s, b, nil, "ecs", "stop-task", "--cluster", "bc", "--task", taskARN)
}

// waitRunningAs waits for a task to be RUNNING, asking with key k.
func waitRunningAs(t *testing.T, s *testenv.Server, k keyPair, cluster, arn string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		var out cliTasks
		mustAs(t, s, k, &out, "ecs", "describe-tasks", "--cluster", cluster, "--tasks", arn)
		if len(out.Tasks) == 1 && out.Tasks[0].LastStatus == "RUNNING" {
			return
		}
		if len(out.Tasks) == 1 && out.Tasks[0].LastStatus == "STOPPED" {
			t.Fatalf("task %s stopped: %s", arn, out.Tasks[0].StoppedReason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not RUNNING: %+v", arn, out)
		}
	}
}
