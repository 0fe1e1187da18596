package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// inTaskDef is a task definition running script (sh) in the image with
// Python, boto3 and the aws CLI, its output in CloudWatch Logs group
// /ecs/intask under stream ecs/app/<task id>. role "": no task role.
func inTaskDef(family, account, role, script string) string {
	c := map[string]any{
		"name": "app", "image": testimage.PythonRef, "essential": true,
		"command": []string{"sh", "-c", script},
		// Without credentials the SDKs would next try EC2's instance
		// metadata, which a Fargate task has not: no stray requests.
		"environment": []map[string]string{{"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}},
		"logConfiguration": map[string]any{"logDriver": "awslogs", "options": map[string]string{
			"awslogs-group": "/ecs/intask", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"}},
	}
	td := map[string]any{
		"family": family, "networkMode": "awsvpc", "requiresCompatibilities": []string{"FARGATE"},
		// A whole vCPU: each CLI call starts a Python interpreter.
		"cpu": "1024", "memory": "2048", "containerDefinitions": []any{c},
		// awslogs wants one on Fargate; Gantry reads nothing as it here.
		"executionRoleArn": "arn:aws:iam::" + account + ":role/ecsTaskExecutionRole",
	}
	if role != "" {
		td["taskRoleArn"] = role
	}
	b, _ := json.Marshal(td)
	return string(b)
}

// oneLine runs a command in a task's script and prints its output (stdout
// and stderr) on one line after tag. A try that timed out reaching the
// endpoints is made again: botocore gives the credentials endpoint 2 s,
// which a host running many test suites at once can exceed; anything else
// (an answer, a denial, no credentials) is printed as it came.
func oneLine(tag, cmd string) string {
	return fmt.Sprintf("for i in 1 2 3; do out=$( (%s) 2>&1 | tr '\\n' ' '); case \"$out\" in *\"Connect timeout\"*|*\"Read timeout\"*) sleep 2;; *) break;; esac; done; echo \"%s $out\"; ", cmd, tag)
}

// TestTaskRoleInTask: inside tasks, the real aws CLI and boto3 find
// Gantry's API (AWS_ENDPOINT_URL) and the task role's credentials on their
// own, and are held to the role's policy; a task without a role has no
// credentials; a task of another account sees only that account; the API
// on the tasks' address still demands a signature and only the host and
// tasks may connect to it.
func TestTaskRoleInTask(t *testing.T) {
	s := testenv.Start(t)
	s.LoadImage(testimage.Python(t))
	acct := s.Creds.AccountID
	var cl struct{ Cluster struct{ ClusterArn string } }
	s.MustAWS(&cl, "ecs", "create-cluster", "--cluster-name", "intask")
	net := awsvpc(s.DefaultSubnet())

	var role struct{ Role struct{ Arn string } }
	s.MustAWS(&role, "iam", "create-role", "--role-name", "cli-role", "--assume-role-policy-document", ecsTasksTrust)
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "cli-role", "--policy-name", "ecs", "--policy-document",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"},{"Effect":"Deny","Action":"ecs:DeleteCluster","Resource":"*"}]}`)

	script := oneLine("ENV", `echo "$AWS_ENDPOINT_URL $AWS_REGION $AWS_DEFAULT_REGION $AWS_EXECUTION_ENV"`) +
		oneLine("LIST", "aws ecs list-clusters --query clusterArns --output text") +
		oneLine("DELETE", "aws ecs delete-cluster --cluster intask") +
		oneLine("WHO", `python3 -c 'import boto3; print(boto3.client("sts").get_caller_identity()["Arn"])'`) +
		// A request without a signature, straight to the endpoint.
		oneLine("UNSIGNED", `wget -q -O - --header "X-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters" --header "Content-Type: application/x-amz-json-1.1" --post-data "{}" "$AWS_ENDPOINT_URL/"; echo rc=$?`)
	registerJSON(t, s, inTaskDef("cli", acct, role.Role.Arn, script))
	registerJSON(t, s, inTaskDef("norole", acct, "", oneLine("NOROLE", "aws ecs list-clusters")+oneLine("NOROLEPY", `python3 -c 'import boto3; boto3.client("sts").get_caller_identity()'`)))

	task := runTask(t, s, "--cluster", "intask", "--task-definition", "cli", "--network-configuration", net)
	bare := runTask(t, s, "--cluster", "intask", "--task-definition", "norole", "--network-configuration", net)
	// Another account's task, started now to run alongside: its role may
	// do anything in ECS, but only in its own account.
	dd := []string{"--data-dir", s.DataDir}
	gantryCmd(t, append([]string{"accounts", "create", "intask-b", "--id", "444455556666"}, dd...)...)
	b := envKeys(t, gantryCmd(t, append([]string{"env", "--account", "intask-b", "--endpoint", s.Endpoint}, dd...)...))
	var bc struct{ Cluster struct{ ClusterArn string } }
	mustAs(t, s, b, &bc, "ecs", "create-cluster", "--cluster-name", "b-cluster")
	var brole struct{ Role struct{ Arn string } }
	mustAs(t, s, b, &brole, "iam", "create-role", "--role-name", "b-role", "--assume-role-policy-document", ecsTasksTrust)
	mustAs(t, s, b, nil, "iam", "put-role-policy", "--role-name", "b-role", "--policy-name", "all", "--policy-document",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]}`)
	mustAs(t, s, b, nil, "ecs", "register-task-definition", "--cli-input-json", inTaskDef("b-cli", "444455556666", brole.Role.Arn,
		oneLine("BLIST", "aws ecs list-clusters --query clusterArns --output text")+
			oneLine("BFOREIGN", "aws ecs describe-clusters --clusters "+cl.Cluster.ClusterArn)))
	var sb struct{ Subnets []struct{ SubnetId string } }
	mustAs(t, s, b, &sb, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	if len(sb.Subnets) == 0 {
		t.Fatal("account B has no default subnet")
	}
	var brun cliTasks
	mustAs(t, s, b, &brun, "ecs", "run-task", "--cluster", "b-cluster", "--task-definition", "b-cli", "--network-configuration", awsvpc(sb.Subnets[0].SubnetId))
	if len(brun.Tasks) != 1 {
		t.Fatalf("run-task in account B: %+v", brun)
	}
	got := taskLines(t, s, "/ecs/intask", "ecs/app/"+taskID(task.TaskArn), "ENV", "LIST", "DELETE", "WHO", "UNSIGNED")

	env := strings.Fields(got["ENV"])
	if len(env) != 4 || !strings.HasPrefix(env[0], "http://"+metadata.Address+":") || env[1] != s.Creds.Region || env[2] != s.Creds.Region || env[3] != "AWS_ECS_FARGATE" {
		t.Fatalf("AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, AWS_EXECUTION_ENV in the task: %q", got["ENV"])
	}
	apiURL := env[0]
	if strings.TrimSpace(got["LIST"]) != cl.Cluster.ClusterArn {
		t.Errorf("aws ecs list-clusters in the task: %q, want %s", got["LIST"], cl.Cluster.ClusterArn)
	}
	if !strings.Contains(got["DELETE"], "AccessDeniedException") || !strings.Contains(got["DELETE"], "assumed-role/cli-role/"+taskID(task.TaskArn)) ||
		!strings.Contains(got["DELETE"], "explicit deny") {
		t.Errorf("aws ecs delete-cluster in the task: %q", got["DELETE"])
	}
	if want := "arn:aws:sts::" + acct + ":assumed-role/cli-role/" + taskID(task.TaskArn); strings.TrimSpace(got["WHO"]) != want {
		t.Errorf("boto3 get_caller_identity in the task: %q, want %s", got["WHO"], want)
	}
	if strings.Contains(got["UNSIGNED"], "clusterArns") || strings.HasSuffix(strings.TrimSpace(got["UNSIGNED"]), "rc=0") {
		t.Errorf("an unsigned request from the task was answered: %q", got["UNSIGNED"])
	}
	s.MustAWS(nil, "ecs", "describe-clusters", "--clusters", "intask") // still there

	got = taskLines(t, s, "/ecs/intask", "ecs/app/"+taskID(bare.TaskArn), "NOROLE", "NOROLEPY")
	if !strings.Contains(got["NOROLE"], "Unable to locate credentials") || !strings.Contains(got["NOROLEPY"], "NoCredentialsError") {
		t.Errorf("a task without a role: CLI %q, boto3 %q", got["NOROLE"], got["NOROLEPY"])
	}

	// The host reaches the same endpoint, and it wants a signature there too.
	resp, err := http.Post(apiURL+"/", "application/x-amz-json-1.1", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("the host cannot reach the tasks' API at %s: %v", apiURL, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || strings.Contains(string(body), "clusterArns") {
		t.Errorf("unsigned request from the host to %s: %s %s", apiURL, resp.Status, body)
	}
	t.Run("strangers", func(t *testing.T) { strangerCannotConnect(t, s, apiURL) })

	// Account B's task, running meanwhile, sees only account B.
	got = linesAs(t, s, b, "/ecs/intask", "ecs/app/"+taskID(brun.Tasks[0].TaskArn), "BLIST", "BFOREIGN")
	if strings.TrimSpace(got["BLIST"]) != bc.Cluster.ClusterArn {
		t.Errorf("account B's task lists %q, want only %s", got["BLIST"], bc.Cluster.ClusterArn)
	}
	if !strings.Contains(got["BFOREIGN"], "AccessDeniedException") || strings.Contains(got["BFOREIGN"], `"clusterName"`) {
		t.Errorf("account B's task describing A's cluster: %q", got["BFOREIGN"])
	}
}

// linesAs is taskLines reading the logs with key k (another account's).
func linesAs(t *testing.T, s *testenv.Server, k keyPair, group, stream string, prefixes ...string) map[string]string {
	t.Helper()
	return streamLines(t, stream, prefixes, func(args ...string) (string, int) {
		o, _, code := awsAs(t, s, k.id, k.secret, k.token, args...)
		return o, code
	}, "logs", "get-log-events", "--log-group-name", group, "--log-stream-name", stream, "--start-from-head")
}

// strangerCannotConnect: a network namespace of the test's own, joined to
// the host by a veth that is not a Gantry bridge (as a container of
// another runtime, or a neighbour routing 169.254.170.2 here, would be),
// reaches a listener on 169.254.170.2 but not the tasks' API port.
func strangerCannotConnect(t *testing.T, s *testenv.Server, apiURL string) {
	_, apiPort, _ := net.SplitHostPort(strings.TrimPrefix(apiURL, "http://"))
	control, err := net.Listen("tcp4", metadata.Address+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	go func() {
		for {
			c, err := control.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, controlPort, _ := net.SplitHostPort(control.Addr().String())

	// TEST-NET-1 addresses: never routed anywhere, and only between the
	// host and this namespace.
	id := fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)
	ns, host, peer := "gapitest-"+id, "gapi"+id, "gapip"+id
	sub := fmt.Sprintf("192.0.2.%d", 4*(time.Now().UnixNano()%60+1))
	hostIP, nsIP := addrPlus(sub, 1), addrPlus(sub, 2)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	run("ip", "link", "set", peer, "netns", ns)
	run("ip", "addr", "add", hostIP+"/30", "dev", host)
	run("ip", "link", "set", host, "up")
	run("ip", "-n", ns, "addr", "add", nsIP+"/30", "dev", peer)
	run("ip", "-n", ns, "link", "set", peer, "up")
	run("ip", "-n", ns, "link", "set", "lo", "up")
	run("ip", "-n", ns, "route", "add", metadata.Address+"/32", "via", hostIP)

	connect := func(port string) bool {
		err := exec.Command("ip", "netns", "exec", ns, "python3", "-c",
			"import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()", metadata.Address, port).Run()
		return err == nil
	}
	if !connect(controlPort) {
		t.Fatalf("the namespace cannot reach %s:%s at all: the check below would prove nothing", metadata.Address, controlPort)
	}
	if connect(apiPort) {
		t.Errorf("a namespace that is not a task connected to the tasks' API at %s", apiURL)
	}
}

func addrPlus(base string, n int) string {
	ip := net.ParseIP(base).To4()
	ip[3] += byte(n)
	return ip.String()
}
