package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type containerCreds struct {
	AccessKeyId, SecretAccessKey, Token, RoleArn string
	Expiration                                   time.Time
}

const ecsTasksTrust = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

// TestTaskRoleCredentials: a task with a taskRoleArn fetches its role's
// credentials from AWS_CONTAINER_CREDENTIALS_RELATIVE_URI with wget; they
// act as the role (allowed and denied by its inline policy, through the
// CLI), rotate half way to expiry, and are out of reach of another task
// and of the host; RunTask refuses a role ECS could not assume.
func TestTaskRoleCredentials(t *testing.T) {
	// Short-lived, so the test sees a rotation: new ones after 20 s.
	t.Setenv("GANTRY_TASK_CREDENTIALS_TTL", "40s")
	s := testenv.Start(t)
	s.LoadImage(testimage.Busybox(t))
	acct := s.Creds.AccountID
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "roles")
	net := awsvpc(s.DefaultSubnet())

	var role struct{ Role struct{ Arn string } }
	s.MustAWS(&role, "iam", "create-role", "--role-name", "app-role", "--assume-role-policy-document", ecsTasksTrust)
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "app-role", "--policy-name", "read",
		"--policy-document", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:ListClusters","ecs:DescribeClusters"],"Resource":"*"}]}`)
	// A role ECS tasks may not assume: RunTask refuses it.
	var other struct{ Role struct{ Arn string } }
	s.MustAWS(&other, "iam", "create-role", "--role-name", "not-for-tasks", "--assume-role-policy-document",
		`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+acct+`:root"},"Action":"sts:AssumeRole"}]}`)

	logs := `"logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/roles","awslogs-region":"us-east-1","awslogs-stream-prefix":"ecs","awslogs-create-group":"true"}}`
	fetch := `wget -q -O - "http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"`
	registerJSON(t, s, `{"family":"withrole","taskRoleArn":"`+role.Role.Arn+`","executionRoleArn":"arn:aws:iam::`+acct+`:role/ecsTaskExecutionRole",
		"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest",
		"command":["sh","-c","trap 'exit 0' TERM; sleep 1; echo \"URI $AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\"; echo \"C1 $(`+jsonEscape(fetch)+`)\"; sleep 24; echo \"C2 $(`+jsonEscape(fetch)+`)\"; sleep 600 & wait"],`+logs+`}]}`)
	registerJSON(t, s, `{"family":"snoop","executionRoleArn":"arn:aws:iam::`+acct+`:role/ecsTaskExecutionRole",
		"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest",
		"command":["sh","-c","echo \"MINE [$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI]\"; echo \"OTHER $(wget -q -O - http://169.254.170.2$TARGET 2>&1; echo rc=$?)\""],`+logs+`}]}`)

	task := runTask(t, s, "--cluster", "roles", "--task-definition", "withrole", "--network-configuration", net)
	stream := "ecs/app/" + taskID(task.TaskArn)
	lines := taskLines(t, s, "/ecs/roles", stream, "URI", "C1")
	uri := lines["URI"]
	if !strings.Contains(uri, "/v2/credentials/") || (!strings.HasPrefix(uri, "/") && !strings.HasPrefix(uri, ":")) {
		t.Fatalf("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = %q", uri)
	}
	var c1 containerCreds
	if err := json.Unmarshal([]byte(lines["C1"]), &c1); err != nil {
		t.Fatalf("credentials %q: %v", lines["C1"], err)
	}
	if !strings.HasPrefix(c1.AccessKeyId, "ASIA") || c1.SecretAccessKey == "" || c1.Token == "" || c1.RoleArn != role.Role.Arn ||
		time.Until(c1.Expiration) > 41*time.Second || time.Until(c1.Expiration) < 0 {
		t.Fatalf("credentials %+v", c1)
	}

	// They are the role's session, held to its policy.
	k1 := keyPair{c1.AccessKeyId, c1.SecretAccessKey, c1.Token}
	var who callerIdentity
	mustAs(t, s, k1, &who, "sts", "get-caller-identity")
	if who.Arn != "arn:aws:sts::"+acct+":assumed-role/app-role/"+taskID(task.TaskArn) || who.Account != acct {
		t.Errorf("task credentials' identity: %+v", who)
	}
	var cl clusterList
	mustAs(t, s, k1, &cl, "ecs", "list-clusters")
	if len(cl.ClusterArns) != 1 {
		t.Errorf("list-clusters with the task's credentials: %+v", cl)
	}
	if e := errAs(t, s, k1, "ecs", "create-cluster", "--cluster-name", "nope"); !strings.Contains(e, "AccessDeniedException") ||
		!strings.Contains(e, "assumed-role/app-role/") || !strings.Contains(e, "ecs:CreateCluster") {
		t.Errorf("create-cluster with the task's credentials: %s", e)
	}
	if e := errAs(t, s, k1, "secretsmanager", "list-secrets"); !strings.Contains(e, "AccessDeniedException") {
		t.Errorf("list-secrets with the task's credentials: %s", e)
	}
	if e := errAs(t, s, keyPair{c1.AccessKeyId, c1.SecretAccessKey, ""}, "ecs", "list-clusters"); !strings.Contains(e, "UnrecognizedClientException") {
		t.Errorf("task credentials without their token: %s", e)
	}

	// Another task knowing the URI gets nothing, and has none of its own.
	snoop := runTask(t, s, "--cluster", "roles", "--task-definition", "snoop", "--network-configuration", net,
		"--overrides", `{"containerOverrides":[{"name":"app","environment":[{"name":"TARGET","value":"`+uri+`"}]}]}`)
	got := taskLines(t, s, "/ecs/roles", "ecs/app/"+taskID(snoop.TaskArn), "MINE", "OTHER")
	if got["MINE"] != "[]" {
		t.Errorf("a task without a role has AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=%s", got["MINE"])
	}
	if strings.Contains(got["OTHER"], "ASIA") || strings.HasSuffix(got["OTHER"], "rc=0") {
		t.Errorf("a second task read the first one's credentials: %s", got["OTHER"])
	}
	// Nor can the host.
	if resp, err := http.Get("http://" + metadata.Address + uri); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("the host read a task's credentials: %s", resp.Status)
		}
	}

	// Rotation: half way to expiry the task gets new credentials, which work.
	lines = taskLines(t, s, "/ecs/roles", stream, "C2")
	var c2 containerCreds
	if err := json.Unmarshal([]byte(lines["C2"]), &c2); err != nil {
		t.Fatalf("rotated credentials %q: %v", lines["C2"], err)
	}
	if c2.AccessKeyId == c1.AccessKeyId || !c2.Expiration.After(c1.Expiration) {
		t.Errorf("credentials did not rotate: %s (expires %v) then %s (expires %v)", c1.AccessKeyId, c1.Expiration, c2.AccessKeyId, c2.Expiration)
	}
	mustAs(t, s, keyPair{c2.AccessKeyId, c2.SecretAccessKey, c2.Token}, nil, "ecs", "list-clusters")

	// RunTask refuses a role ECS could not assume, in the task
	// definition or as an override, as AWS does: the task never starts.
	assumeMsg := func(arn string) string {
		return "ECS was unable to assume the role '" + arn + "' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role."
	}
	ghost := "arn:aws:iam::" + acct + ":role/no-such-role"
	registerJSON(t, s, `{"family":"ghost","taskRoleArn":"`+ghost+`","executionRoleArn":"arn:aws:iam::`+acct+`:role/ecsTaskExecutionRole",
		"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"app","image":"gantry-test/busybox:latest","command":["sleep","600"]}]}`)
	var before struct{ TaskArns []string }
	s.MustAWS(&before, "ecs", "list-tasks", "--cluster", "roles")
	for _, c := range []struct{ role, def, override string }{
		{other.Role.Arn, "withrole", other.Role.Arn}, // does not trust ecs-tasks.amazonaws.com
		{ghost, "ghost", ""},                         // does not exist
		{ghost, "withrole", ghost},
		{"arn:aws:iam::111122223333:role/app-role", "withrole", "arn:aws:iam::111122223333:role/app-role"}, // another account's
	} {
		args := []string{"ecs", "run-task", "--cluster", "roles", "--task-definition", c.def, "--network-configuration", net}
		if c.override != "" {
			args = append(args, "--overrides", `{"taskRoleArn":"`+c.override+`"}`)
		}
		code, msg := s.AWSError(args...)
		if code != "ClientException" || !strings.HasSuffix(msg, ": "+assumeMsg(c.role)) {
			t.Errorf("run-task with task role %s (definition %s): %s %q", c.role, c.def, code, msg)
		}
	}
	var after struct{ TaskArns []string }
	s.MustAWS(&after, "ecs", "list-tasks", "--cluster", "roles")
	if len(after.TaskArns) != len(before.TaskArns) {
		t.Errorf("refused run-tasks left tasks: %d before, %d after", len(before.TaskArns), len(after.TaskArns))
	}
	// A service's tasks meet the same refusal; the service says so in its events.
	s.MustAWS(nil, "ecs", "create-service", "--cluster", "roles", "--service-name", "ghost", "--task-definition", "ghost",
		"--desired-count", "1", "--network-configuration", net)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(2 * time.Second) {
		var out struct {
			Services []struct {
				RunningCount int
				Events       []struct{ Message string }
			}
		}
		s.MustAWS(&out, "ecs", "describe-services", "--cluster", "roles", "--services", "ghost")
		found := false
		for _, e := range out.Services[0].Events {
			// ECS's event: "(service ghost) failed to launch a task with (error ...)."
			found = found || strings.HasSuffix(e.Message, "failed to launch a task with (error "+strings.TrimSuffix(assumeMsg(ghost), ".")+").")
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service with a role ECS cannot assume: no event says so: %+v", out)
		}
	}
	s.MustAWS(nil, "ecs", "delete-service", "--cluster", "roles", "--service", "ghost", "--force")
}

// jsonEscape makes s safe inside a JSON string.
func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
