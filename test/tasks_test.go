package test

import (
	"context"
	"fmt"
	"github.com/gantry-dev/gantry/internal/testnet"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/netw"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// Shapes as the aws CLI prints them; only what the tests look at.
type cliContainer struct {
	Name              string `json:"name"`
	Image             string `json:"image"`
	LastStatus        string `json:"lastStatus"`
	ExitCode          *int   `json:"exitCode"`
	Reason            string `json:"reason"`
	RuntimeID         string `json:"runtimeId"`
	NetworkInterfaces []struct {
		AttachmentID       string `json:"attachmentId"`
		PrivateIpv4Address string `json:"privateIpv4Address"`
	} `json:"networkInterfaces"`
}

type cliTask struct {
	TaskArn          string `json:"taskArn"`
	ClusterArn       string `json:"clusterArn"`
	LastStatus       string `json:"lastStatus"`
	DesiredStatus    string `json:"desiredStatus"`
	StopCode         string `json:"stopCode"`
	StoppedReason    string `json:"stoppedReason"`
	LaunchType       string `json:"launchType"`
	CapacityProvider string `json:"capacityProviderName"`
	PlatformVersion  string `json:"platformVersion"`
	PlatformFamily   string `json:"platformFamily"`
	AvailabilityZone string `json:"availabilityZone"`
	Cpu              string `json:"cpu"`
	Memory           string `json:"memory"`
	Group            string `json:"group"`
	StartedBy        string `json:"startedBy"`
	Version          int64  `json:"version"`
	CreatedAt        any    `json:"createdAt"`
	StartedAt        any    `json:"startedAt"`
	StoppingAt       any    `json:"stoppingAt"`
	StoppedAt        any    `json:"stoppedAt"`
	PullStartedAt    any    `json:"pullStartedAt"`
	Connectivity     string `json:"connectivity"`
	EphemeralStorage struct {
		SizeInGiB int `json:"sizeInGiB"`
	} `json:"ephemeralStorage"`
	Attachments []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Status  string `json:"status"`
		Details []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"details"`
	} `json:"attachments"`
	Containers []cliContainer `json:"containers"`
	Tags       []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"tags"`
}

func (t cliTask) eniDetail(name string) string {
	for _, a := range t.Attachments {
		if a.Type != "ElasticNetworkInterface" {
			continue
		}
		for _, d := range a.Details {
			if d.Name == name {
				return d.Value
			}
		}
	}
	return ""
}

type cliTasks struct {
	Tasks    []cliTask `json:"tasks"`
	Failures []struct {
		Arn    string `json:"arn"`
		Reason string `json:"reason"`
	} `json:"failures"`
}

// loadImage imports a docker-save tarball into the server's containerd, as
// a user does with `gantry image load`.
func loadImage(t *testing.T, s *testenv.Server, tarball string) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), "image", "load", "--data-dir", s.DataDir, "--containerd", "/nonexistent/containerd.sock", tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gantry image load: %v\n%s", err, out)
	}
}

func defaultSubnet(t *testing.T, s *testenv.Server) string {
	t.Helper()
	var out struct {
		Subnets []struct {
			SubnetID string `json:"SubnetId"`
		}
	}
	s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true")
	if len(out.Subnets) == 0 {
		t.Fatal("no default subnet")
	}
	return out.Subnets[0].SubnetID
}

func registerFile(t *testing.T, s *testenv.Server, path string) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	s.MustAWS(nil, "ecs", "register-task-definition", "--cli-input-json", "file://"+abs)
}

func registerJSON(t *testing.T, s *testenv.Server, def string) {
	t.Helper()
	s.MustAWS(nil, "ecs", "register-task-definition", "--cli-input-json", def)
}

func awsvpc(subnet string) string {
	return fmt.Sprintf("awsvpcConfiguration={subnets=[%s],assignPublicIp=DISABLED}", subnet)
}

func runTask(t *testing.T, s *testenv.Server, args ...string) cliTask {
	t.Helper()
	var out cliTasks
	s.MustAWS(&out, append([]string{"ecs", "run-task"}, args...)...)
	if len(out.Tasks) != 1 || len(out.Failures) != 0 {
		t.Fatalf("run-task: %+v", out)
	}
	return out.Tasks[0]
}

func describeTask(t *testing.T, s *testenv.Server, cluster, arn string) cliTask {
	t.Helper()
	var out cliTasks
	s.MustAWS(&out, "ecs", "describe-tasks", "--cluster", cluster, "--tasks", arn, "--include", "TAGS")
	if len(out.Tasks) != 1 {
		t.Fatalf("describe-tasks %s: %+v", arn, out)
	}
	return out.Tasks[0]
}

// waitStatus polls until the task reaches lastStatus, failing if it stops
// first (unless STOPPED is what we wait for).
func waitStatus(t *testing.T, s *testenv.Server, cluster, arn, status string, timeout time.Duration) cliTask {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		task := describeTask(t, s, cluster, arn)
		if task.LastStatus == status {
			return task
		}
		if task.LastStatus == "STOPPED" {
			t.Fatalf("task stopped while waiting for %s: %s %s", status, task.StopCode, task.StoppedReason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %s after %v, want %s", task.LastStatus, timeout, status)
		}
		time.Sleep(time.Second)
	}
}

// httpGet fetches the task's page; callers only call it once the task is RUNNING.
func httpGet(t *testing.T, ip string) string {
	t.Helper()
	var lastErr error
	for i := 0; i < 20; i++ {
		page, err := testnet.HTTPGet(t, ip, 80, "/")
		if err == nil {
			return page
		}
		lastErr = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("GET http://%s/: %v", ip, lastErr)
	return ""
}

// assertNothingLeft checks the host holds nothing of the server's tasks: no
// containers, network namespaces, address leases or network records.
func assertNothingLeft(t *testing.T, s *testenv.Server) {
	t.Helper()
	nw, err := netw.New(s.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ctrd.New(gcontainerd.OwnSocket(s.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), gcontainerd.Namespace)
	var left []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		left, err = nw.Leftovers()
		if err != nil {
			t.Fatal(err)
		}
		cs, err := client.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			left = append(left, "container "+c.ID())
		}
		left = slices.DeleteFunc(left, func(what string) bool { return pooledLeft(s, nw, what) })
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind after the tasks stopped: %v", left)
	}
}

// taskCgroup is the name of a task's cgroup under /gantry (testenv.TaskCgroup).
func taskCgroup(t *testing.T, s *testenv.Server, id string) string {
	return testenv.TaskCgroup(s.DataDir, id)
}

// pooledLeft says whether one of assertNothingLeft's findings is a sandbox
// the server's pool keeps ready (not a task's, so not left behind): its
// root container, or its network, held under the entry's id (its address's
// lease under the id of the namespace pool's entry it came from).
func pooledLeft(s *testenv.Server, nw *netw.Manager, what string) bool {
	ents, _ := os.ReadDir(filepath.Join(s.DataDir, "agent", "sandbox-pool"))
	for _, e := range ents {
		id := e.Name()
		if what == "container "+id+"-sandbox" || strings.HasSuffix(what, "/"+id+".json") {
			return true
		}
		if att, err := nw.Get(id); err == nil && att != nil &&
			(what == "netns "+att.NetNSPath || strings.HasPrefix(what, "lease "+att.IPv4+" in ")) {
			return true
		}
	}
	return false
}

var taskARNRe = regexp.MustCompile(`^arn:aws:ecs:us-east-1:[0-9]{12}:task/demo/[0-9a-f]{32}$`)

// TestTaskWalkthrough is the README's walkthrough, command for command.
func TestTaskWalkthrough(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerFile(t, s, "../docs/examples/web-task.json")
	var subnet, arn string
	s.MustAWS(&subnet, "ec2", "describe-subnets", "--query", "Subnets[0].SubnetId")
	s.MustAWS(&arn, "ecs", "run-task", "--cluster", "demo", "--launch-type", "FARGATE", "--task-definition", "web",
		"--network-configuration", "awsvpcConfiguration={subnets=["+subnet+"],assignPublicIp=DISABLED}",
		"--query", "tasks[0].taskArn")
	if !taskARNRe.MatchString(arn) {
		t.Fatalf("task ARN %q", arn)
	}
	task := cliTask{TaskArn: arn}
	_, stderr, code := s.AWS("ecs", "wait", "tasks-running", "--cluster", "demo", "--tasks", task.TaskArn)
	if code != 0 {
		got := describeTask(t, s, "demo", task.TaskArn)
		t.Fatalf("wait tasks-running: exit %d %s\ntask: %+v", code, stderr, got)
	}
	var ip string
	s.MustAWS(&ip, "ecs", "describe-tasks", "--cluster", "demo", "--tasks", arn,
		"--query", "tasks[0].attachments[0].details[?name=='privateIPv4Address'].value | [0]")
	task = describeTask(t, s, "demo", task.TaskArn)
	if task.eniDetail("subnetId") != subnet || task.eniDetail("privateIPv4Address") != ip {
		t.Errorf("ENI: subnet %q address %q, want %s %s", task.eniDetail("subnetId"), task.eniDetail("privateIPv4Address"), subnet, ip)
	}
	if task.LastStatus != "RUNNING" || ip == "" || task.StartedAt == nil || task.PullStartedAt == nil || task.Connectivity != "CONNECTED" {
		t.Fatalf("running task: %+v", task)
	}
	if !regexp.MustCompile(`^eni-[0-9a-f]{17}$`).MatchString(task.eniDetail("networkInterfaceId")) ||
		!regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`).MatchString(task.eniDetail("macAddress")) ||
		task.eniDetail("privateDnsName") != "ip-"+strings.ReplaceAll(ip, ".", "-")+".ec2.internal" ||
		task.Attachments[0].Status != "ATTACHED" {
		t.Errorf("ENI details: %+v", task.Attachments)
	}
	if !strings.HasPrefix(task.AvailabilityZone, "us-east-1") {
		t.Errorf("availabilityZone %q", task.AvailabilityZone)
	}
	c := task.Containers[0]
	if c.Name != "web" || c.LastStatus != "RUNNING" || c.RuntimeID == "" || len(c.NetworkInterfaces) != 1 || c.NetworkInterfaces[0].PrivateIpv4Address != ip {
		t.Errorf("container: %+v", c)
	}
	if page := httpGet(t, ip); page == "" {
		t.Error("empty page")
	}

	var list struct{ TaskArns []string }
	s.MustAWS(&list, "ecs", "list-tasks", "--cluster", "demo")
	if len(list.TaskArns) != 1 || list.TaskArns[0] != task.TaskArn {
		t.Errorf("list-tasks: %v", list.TaskArns)
	}

	var stopped struct{ Task cliTask }
	s.MustAWS(&stopped, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	if stopped.Task.DesiredStatus != "STOPPED" || stopped.Task.StopCode != "UserInitiated" {
		t.Errorf("stop-task answered %+v", stopped.Task)
	}
	if _, stderr, code := s.AWS("ecs", "wait", "tasks-stopped", "--cluster", "demo", "--tasks", task.TaskArn); code != 0 {
		t.Fatalf("wait tasks-stopped: %s", stderr)
	}
	task = describeTask(t, s, "demo", task.TaskArn)
	if task.LastStatus != "STOPPED" || task.StopCode != "UserInitiated" || task.StoppedAt == nil || task.StoppingAt == nil ||
		task.Containers[0].LastStatus != "STOPPED" || task.Attachments[0].Status != "DELETED" {
		t.Errorf("stopped task: %+v", task)
	}
	// Nothing is left running: no RUNNING tasks, and the address is gone.
	s.MustAWS(&list, "ecs", "list-tasks", "--cluster", "demo")
	if len(list.TaskArns) != 0 {
		t.Errorf("list-tasks after stop: %v", list.TaskArns)
	}
	s.MustAWS(&list, "ecs", "list-tasks", "--cluster", "demo", "--desired-status", "STOPPED")
	if len(list.TaskArns) != 1 {
		t.Errorf("list-tasks STOPPED: %v", list.TaskArns)
	}
	assertNothingLeft(t, s)
	// Stopping again returns the stopped task unchanged.
	s.MustAWS(&stopped, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	if stopped.Task.LastStatus != "STOPPED" || stopped.Task.Version != task.Version {
		t.Errorf("second stop-task: %+v", stopped.Task)
	}
}

// TestTaskRunValidation checks RunTask's errors, each with AWS's type.
func TestTaskRunValidation(t *testing.T) {
	s := testenv.Start(t)
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerFile(t, s, "../docs/examples/web-task.json")
	registerJSON(t, s, `{"family":"ec2only","networkMode":"bridge","requiresCompatibilities":["EC2"],"containerDefinitions":[{"name":"a","image":"busybox","memory":128}]}`)
	registerJSON(t, s, `{"family":"gone","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"busybox"}]}`)
	s.MustAWS(nil, "ecs", "deregister-task-definition", "--task-definition", "gone:1")
	subnet := defaultSubnet(t, s)
	net := awsvpc(subnet)

	cases := []struct {
		name, code, msg string
		args            []string
	}{
		{"no cluster", "ClusterNotFoundException", "Cluster not found", []string{"--cluster", "nope", "--task-definition", "web", "--network-configuration", net}},
		{"default cluster missing", "ClusterNotFoundException", "Cluster not found", []string{"--task-definition", "web", "--network-configuration", net}},
		{"unknown definition", "ClientException", "TaskDefinition not found", []string{"--cluster", "demo", "--task-definition", "nope", "--network-configuration", net}},
		{"unknown revision", "ClientException", "TaskDefinition not found", []string{"--cluster", "demo", "--task-definition", "web:9", "--network-configuration", net}},
		{"inactive revision", "ClientException", "TaskDefinition is inactive", []string{"--cluster", "demo", "--task-definition", "gone:1", "--network-configuration", net}},
		{"not fargate", "InvalidParameterException", "does not support launch_type FARGATE", []string{"--cluster", "demo", "--task-definition", "ec2only", "--launch-type", "FARGATE", "--network-configuration", net}},
		{"launch type and strategy", "InvalidParameterException", "Specifying both a launch type and capacity provider strategy is not supported", []string{"--cluster", "demo", "--task-definition", "web", "--launch-type", "FARGATE", "--capacity-provider-strategy", "capacityProvider=FARGATE,weight=1", "--network-configuration", net}},
		{"unknown provider", "InvalidParameterException", "capacity provider", []string{"--cluster", "demo", "--task-definition", "web", "--capacity-provider-strategy", "capacityProvider=mine,weight=1", "--network-configuration", net}},
		{"count too high", "InvalidParameterException", "Count", []string{"--cluster", "demo", "--task-definition", "web", "--count", "11", "--network-configuration", net}},
		{"count zero", "InvalidParameterException", "Count", []string{"--cluster", "demo", "--task-definition", "web", "--count", "0", "--network-configuration", net}},
		{"no network", "InvalidParameterException", "Network Configuration must be provided when networkMode 'awsvpc' is specified.", []string{"--cluster", "demo", "--task-definition", "web"}},
		{"no subnets", "InvalidParameterException", "subnets can not be empty", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", "awsvpcConfiguration={subnets=[]}"}},
		{"unknown subnet", "InvalidParameterException", "The subnet ID 'subnet-0123456789abcdef0' does not exist", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", "awsvpcConfiguration={subnets=[subnet-0123456789abcdef0]}"}},
		{"unknown group", "InvalidParameterException", "sg-0123456789abcdef0", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", fmt.Sprintf("awsvpcConfiguration={subnets=[%s],securityGroups=[sg-0123456789abcdef0]}", subnet)}},
		{"six groups", "InvalidParameterException", "securityGroups", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", fmt.Sprintf("awsvpcConfiguration={subnets=[%s],securityGroups=[sg-1,sg-2,sg-3,sg-4,sg-5,sg-6]}", subnet)}},
		{"bad public ip", "InvalidParameterException", "assignPublicIp", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", fmt.Sprintf("awsvpcConfiguration={subnets=[%s],assignPublicIp=MAYBE}", subnet)}},
		{"unknown container override", "InvalidParameterException", "Override for container named other is not a container in the TaskDefinition.", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", net, "--overrides", `{"containerOverrides":[{"name":"other","command":["true"]}]}`}},
		{"bad size override", "ClientException", "No Fargate configuration exists for given values", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", net, "--overrides", `{"cpu":"256","memory":"4096"}`}},
		{"startedBy too long", "InvalidParameterException", "startedBy", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", net, "--started-by", strings.Repeat("x", 129)}},
		{"reserved tag", "InvalidParameterException", "aws:", []string{"--cluster", "demo", "--task-definition", "web", "--network-configuration", net, "--tags", "key=aws:x,value=y"}},
		{"bad launch type", "InvalidParameterException", "launchType", []string{"--cluster", "demo", "--task-definition", "web", "--launch-type", "MOON", "--network-configuration", net}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := s.AWSError(append([]string{"ecs", "run-task"}, c.args...)...)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("got %s: %s\nwant %s containing %q", code, msg, c.code, c.msg)
			}
		})
	}

	// The other task operations' errors.
	for _, c := range []struct {
		code, msg string
		args      []string
	}{
		{"InvalidParameterException", "The referenced task was not found.", []string{"ecs", "stop-task", "--cluster", "demo", "--task", "0123456789abcdef0123456789abcdef"}},
		{"ClusterNotFoundException", "Cluster not found", []string{"ecs", "stop-task", "--cluster", "nope", "--task", "0123456789abcdef0123456789abcdef"}},
		{"ClusterNotFoundException", "Cluster not found", []string{"ecs", "describe-tasks", "--cluster", "nope", "--tasks", "0123456789abcdef0123456789abcdef"}},
		{"ClusterNotFoundException", "Cluster not found", []string{"ecs", "list-tasks", "--cluster", "nope"}},
		{"InvalidParameterException", "Family and serviceName", []string{"ecs", "list-tasks", "--cluster", "demo", "--family", "web", "--service-name", "svc"}},
		{"InvalidParameterException", "maxResults", []string{"ecs", "list-tasks", "--cluster", "demo", "--max-items", "5", "--page-size", "101"}},
		{"InvalidParameterException", "desiredStatus", []string{"ecs", "list-tasks", "--cluster", "demo", "--desired-status", "DONE"}},
	} {
		code, msg := s.AWSError(c.args...)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("%v: got %s: %s\nwant %s containing %q", c.args, code, msg, c.code, c.msg)
		}
	}

	// Missing tasks are failures, not errors.
	var out cliTasks
	s.MustAWS(&out, "ecs", "describe-tasks", "--cluster", "demo", "--tasks", "0123456789abcdef0123456789abcdef", "not-a-task")
	if len(out.Tasks) != 0 || len(out.Failures) != 2 || out.Failures[0].Reason != "MISSING" {
		t.Errorf("describe-tasks of missing tasks: %+v", out)
	}
}

// TestTaskExitCodes covers tasks that end by themselves: an essential
// container's exit code, overrides changing what runs, an image that cannot
// be pulled.
func TestTaskExitCodes(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerJSON(t, s, `{"family":"job","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","exit 3"],
		"environment":[{"name":"CODE","value":"9"}]}]}`)
	registerJSON(t, s, `{"family":"nopull","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"127.0.0.1:1/gantry-test/missing:latest"}]}`)
	net := awsvpc(defaultSubnet(t, s))

	exit3 := runTask(t, s, "--cluster", "demo", "--task-definition", "job", "--network-configuration", net)
	override := runTask(t, s, "--cluster", "demo", "--task-definition", "job", "--network-configuration", net,
		"--overrides", `{"containerOverrides":[{"name":"main","command":["sh","-c","exit $CODE"],"environment":[{"name":"CODE","value":"5"}]}]}`)
	if len(override.Containers) != 1 {
		t.Fatalf("override task: %+v", override)
	}
	missing := runTask(t, s, "--cluster", "demo", "--task-definition", "nopull", "--network-configuration", net)

	for _, c := range []struct {
		task cliTask
		exit int
	}{{exit3, 3}, {override, 5}} {
		got := waitStatus(t, s, "demo", c.task.TaskArn, "STOPPED", 2*time.Minute)
		ct := got.Containers[0]
		if got.StopCode != "EssentialContainerExited" || got.DesiredStatus != "STOPPED" || ct.ExitCode == nil || *ct.ExitCode != c.exit || ct.LastStatus != "STOPPED" {
			t.Errorf("want exit %d, EssentialContainerExited; got %+v (container %+v)", c.exit, got, ct)
		}
		if got.StoppedAt == nil || got.StartedAt == nil {
			t.Errorf("timestamps: %+v", got)
		}
	}
	got := waitStatus(t, s, "demo", missing.TaskArn, "STOPPED", 2*time.Minute)
	if got.StopCode != "TaskFailedToStart" || !strings.HasPrefix(got.StoppedReason, "CannotPullContainerError") {
		t.Errorf("unpullable image: stopCode %q reason %q", got.StopCode, got.StoppedReason)
	}
}

// TestTaskListTasks covers ListTasks' filters and pagination.
func TestTaskListTasks(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	for _, fam := range []string{"alpha", "beta"} {
		registerJSON(t, s, fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
			"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sleep","300"],"stopTimeout":2}],
			"tags":[{"key":"team","value":%q}]}`, fam, fam))
	}
	net := awsvpc(defaultSubnet(t, s))
	var alpha cliTasks
	s.MustAWS(&alpha, "ecs", "run-task", "--cluster", "demo", "--task-definition", "alpha", "--network-configuration", net,
		"--count", "3", "--started-by", "me", "--propagate-tags", "TASK_DEFINITION", "--tags", "key=run,value=1")
	if len(alpha.Tasks) != 3 {
		t.Fatalf("count 3 gave %d tasks", len(alpha.Tasks))
	}
	beta := runTask(t, s, "--cluster", "demo", "--task-definition", "beta", "--network-configuration", net,
		"--capacity-provider-strategy", "capacityProvider=FARGATE_SPOT,weight=1")
	if beta.CapacityProvider != "FARGATE_SPOT" || beta.LaunchType != "FARGATE" {
		t.Errorf("capacity provider task: %+v", beta)
	}
	// RunTask's answer: the whole task, still PROVISIONING.
	if beta.LastStatus != "PROVISIONING" || beta.DesiredStatus != "RUNNING" || beta.PlatformVersion != "1.4.0" ||
		beta.PlatformFamily != "Linux" || beta.Cpu != "256" || beta.Memory != "512" || beta.Group != "family:beta" ||
		beta.EphemeralStorage.SizeInGiB != 20 || beta.Version != 1 || beta.CreatedAt == nil || !strings.HasPrefix(beta.AvailabilityZone, "us-east-1") ||
		len(beta.Containers) != 1 || beta.Containers[0].LastStatus != "PENDING" || beta.Containers[0].Image != "gantry-test/busybox:latest" {
		t.Errorf("run-task answered %+v", beta)
	}
	if beta.eniDetail("subnetId") == "" || !strings.HasPrefix(beta.eniDetail("networkInterfaceId"), "eni-") || beta.Attachments[0].Status != "PRECREATED" {
		t.Errorf("ENI attachment at start: %+v", beta.Attachments)
	}
	tags := map[string]string{}
	for _, tg := range describeTask(t, s, "demo", alpha.Tasks[0].TaskArn).Tags {
		tags[tg.Key] = tg.Value
	}
	if tags["team"] != "alpha" || tags["run"] != "1" {
		t.Errorf("tags with propagateTags TASK_DEFINITION: %v", tags)
	}

	list := func(args ...string) []string {
		var out struct{ TaskArns []string }
		s.MustAWS(&out, append([]string{"ecs", "list-tasks", "--cluster", "demo"}, args...)...)
		return out.TaskArns
	}
	if n := len(list()); n != 4 {
		t.Errorf("all: %d", n)
	}
	if n := len(list("--family", "alpha")); n != 3 {
		t.Errorf("family alpha: %d", n)
	}
	if got := list("--family", "beta"); len(got) != 1 || got[0] != beta.TaskArn {
		t.Errorf("family beta: %v", got)
	}
	if n := len(list("--started-by", "me")); n != 3 {
		t.Errorf("startedBy: %d", n)
	}
	if n := len(list("--launch-type", "FARGATE")); n != 4 {
		t.Errorf("launchType FARGATE: %d", n)
	}
	if n := len(list("--launch-type", "EC2")); n != 0 {
		t.Errorf("launchType EC2: %d", n)
	}
	if n := len(list("--service-name", "svc")); n != 0 {
		t.Errorf("serviceName: %d", n)
	}
	// The CLI follows nextToken itself; one task per page must still give all.
	if n := len(list("--page-size", "1")); n != 4 {
		t.Errorf("paged by 1: %d", n)
	}
	var page struct {
		TaskArns  []string
		NextToken string
	}
	s.MustAWS(&page, "ecs", "list-tasks", "--cluster", "demo", "--max-items", "2")
	if len(page.TaskArns) != 2 || page.NextToken == "" {
		t.Errorf("first page of 2: %+v", page)
	}

	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", beta.TaskArn, "--reason", "done here")
	if got := list("--desired-status", "STOPPED"); len(got) != 1 || got[0] != beta.TaskArn {
		t.Errorf("desiredStatus STOPPED: %v", got)
	}
	if n := len(list()); n != 3 {
		t.Errorf("RUNNING after a stop: %d", n)
	}
	stopped := waitStatus(t, s, "demo", beta.TaskArn, "STOPPED", 2*time.Minute)
	if stopped.StoppedReason != "done here" || stopped.StopCode != "UserInitiated" {
		t.Errorf("stopped with reason: %+v", stopped)
	}
	for _, task := range alpha.Tasks {
		s.MustAWS(nil, "ecs", "stop-task", "--cluster", "demo", "--task", task.TaskArn)
	}
	for _, task := range alpha.Tasks {
		waitStatus(t, s, "demo", task.TaskArn, "STOPPED", 2*time.Minute)
	}
}
