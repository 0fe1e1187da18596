package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type obj = map[string]any

// tdFile writes a request as a JSON file for --cli-input-json, the way users
// keep task definitions.
func tdFile(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "td.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return "file://" + p
}

func registerTD(t *testing.T, s *testenv.Server, td obj) obj {
	t.Helper()
	var out struct {
		TaskDefinition obj `json:"taskDefinition"`
	}
	s.MustAWS(&out, "ecs", "register-task-definition", "--cli-input-json", tdFile(t, td))
	return out.TaskDefinition
}

// fargateTD is the smallest valid Fargate definition; tests break one rule
// at a time on a copy of it.
func fargateTD(family string) obj {
	return obj{
		"family":                  family,
		"networkMode":             "awsvpc",
		"requiresCompatibilities": []string{"FARGATE"},
		"cpu":                     "256",
		"memory":                  "512",
		"containerDefinitions": []obj{{
			"name":  "app",
			"image": "public.ecr.aws/docker/library/nginx:latest",
		}},
	}
}

// with returns a deep copy of fargateTD changed by edit.
func with(edit func(td obj, app obj)) obj {
	td := fargateTD("rules")
	app := td["containerDefinitions"].([]obj)[0]
	edit(td, app)
	return td
}

func TestTaskDefinitionValidation(t *testing.T) {
	s := testenv.Start(t)
	long := strings.Repeat("f", 256)
	cases := []struct {
		name, code, msg string
		td              obj
	}{
		{"family chars", "ClientException", "Family contains invalid characters.", with(func(td, _ obj) { td["family"] = "my family!" })},
		{"family length", "ClientException", "255", with(func(td, _ obj) { td["family"] = long })},
		{"no containers", "ClientException", "Container list cannot be empty.", with(func(td, _ obj) { td["containerDefinitions"] = []obj{} })},
		{"too many containers", "ClientException", "Too many containers.", with(func(td, _ obj) {
			var cs []obj
			for i := range 11 {
				cs = append(cs, obj{"name": fmt.Sprintf("c%d", i), "image": "busybox"})
			}
			td["containerDefinitions"] = cs
		})},
		{"container name chars", "ClientException", "Container.name contains invalid characters.", with(func(_, app obj) { app["name"] = "app.1" })},
		{"duplicate container", "ClientException", "Duplicate container name 'app'", with(func(td, app obj) {
			td["containerDefinitions"] = []obj{app, {"name": "app", "image": "busybox"}}
		})},
		{"image missing", "ClientException", "Container.image should not be null or empty.", with(func(_, app obj) { delete(app, "image") })},
		{"fargate bridge", "ClientException", "Fargate only supports network mode \u2018awsvpc\u2019.", with(func(td, _ obj) { td["networkMode"] = "bridge" })},
		{"fargate no network mode", "ClientException", "Fargate only supports network mode", with(func(td, _ obj) { delete(td, "networkMode") })},
		{"fargate no cpu", "ClientException", "Fargate requires that 'cpu' be defined at the task level.", with(func(td, _ obj) { delete(td, "cpu") })},
		{"fargate no memory", "ClientException", "Fargate requires that 'memory' be defined at the task level.", with(func(td, _ obj) { delete(td, "memory") })},
		{"fargate pair", "ClientException", "No Fargate configuration exists for given values: 256 CPU, 4096 memory. See the Amazon ECS documentation for the valid values.", with(func(td, _ obj) { td["memory"] = "4096" })},
		{"fargate pair in units", "ClientException", "No Fargate configuration exists for given values: 256 CPU, 4096 memory.", with(func(td, _ obj) { td["cpu"], td["memory"] = "0.25 vCPU", "4 GB" })},
		{"fargate off-step memory", "ClientException", "No Fargate configuration exists for given values: 8192 CPU, 17408 memory.", with(func(td, _ obj) { td["cpu"], td["memory"] = "8192", "17408" })},
		{"fargate unknown cpu", "ClientException", "No Fargate configuration exists for given values: 384 CPU, 1024 memory.", with(func(td, _ obj) { td["cpu"], td["memory"] = "384", "1024" })},
		{"cpu garbage", "ClientException", "Invalid 'cpu' setting for task.", with(func(td, _ obj) { td["cpu"] = "lots" })},
		{"memory wrong unit", "ClientException", "Invalid 'memory' setting for task.", with(func(td, _ obj) { td["memory"] = "1 vCPU" })},
		{"container cpu sum", "ClientException", "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'.", with(func(td, app obj) {
			app["cpu"] = 200
			td["containerDefinitions"] = []obj{app, {"name": "side", "image": "busybox", "cpu": 100}}
		})},
		{"container memory", "ClientException", "The 'memory' setting for container 'app' is greater than for the task.", with(func(_, app obj) { app["memory"] = 1024 })},
		{"reservation sum", "ClientException", "The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'.", with(func(td, app obj) {
			app["memoryReservation"] = 300
			td["containerDefinitions"] = []obj{app, {"name": "side", "image": "busybox", "memoryReservation": 300}}
		})},
		{"reservation above hard limit", "ClientException", "'memory' value must be greater than or equal to the 'memoryReservation'", with(func(_, app obj) { app["memory"], app["memoryReservation"] = 128, 256 })},
		{"ephemeral too small", "ClientException", "ephemeralStorage.sizeInGiB", with(func(td, _ obj) { td["ephemeralStorage"] = obj{"sizeInGiB": 20} })},
		{"ephemeral too big", "ClientException", "between 21 and 200", with(func(td, _ obj) { td["ephemeralStorage"] = obj{"sizeInGiB": 201} })},
		{"links awsvpc", "ClientException", "Links are not supported when networkMode=awsvpc.", with(func(td, app obj) {
			app["links"] = []string{"side"}
			td["containerDefinitions"] = []obj{app, {"name": "side", "image": "busybox"}}
		})},
		{"host port", "ClientException", "When networkMode=awsvpc, the host ports and container ports in port mappings must match.", with(func(_, app obj) {
			app["portMappings"] = []obj{{"containerPort": 80, "hostPort": 8080}}
		})},
		{"container port", "ClientException", "Invalid 'containerPort' setting for container 'app'.", with(func(_, app obj) {
			app["portMappings"] = []obj{{"containerPort": 70000}}
		})},
		{"privileged", "ClientException", "do not support privileged", with(func(_, app obj) { app["privileged"] = true })},
		{"security options", "ClientException", "do not support dockerSecurityOptions", with(func(_, app obj) { app["dockerSecurityOptions"] = []string{"no-new-privileges"} })},
		{"devices", "ClientException", "do not support linuxParameters.devices", with(func(_, app obj) {
			app["linuxParameters"] = obj{"devices": []obj{{"hostPath": "/dev/fuse"}}}
		})},
		{"capability", "ClientException", "SYS_PTRACE", with(func(_, app obj) {
			app["linuxParameters"] = obj{"capabilities": obj{"add": []string{"NET_ADMIN"}}}
		})},
		{"host volume", "ClientException", "Fargate compatible task definitions do not support sourcePath", with(func(td, _ obj) {
			td["volumes"] = []obj{{"name": "data", "host": obj{"sourcePath": "/srv"}}}
		})},
		{"docker volume", "ClientException", "do not support dockerVolumeConfiguration", with(func(td, _ obj) {
			td["volumes"] = []obj{{"name": "data", "dockerVolumeConfiguration": obj{"driver": "local"}}}
		})},
		{"placement constraints", "ClientException", "do not support placementConstraints", with(func(td, _ obj) {
			td["placementConstraints"] = []obj{{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t2.*"}}
		})},
		{"ipc mode", "ClientException", "Tasks using the Fargate launch type do not support ipcMode.", with(func(td, _ obj) { td["ipcMode"] = "host" })},
		{"pid mode host", "ClientException", "pidMode 'host'", with(func(td, _ obj) { td["pidMode"] = "host" })},
		{"awslogs without role", "ClientException", "Fargate requires task definition to have execution role ARN to support log driver awslogs.", with(func(_, app obj) {
			app["logConfiguration"] = obj{"logDriver": "awslogs", "options": obj{"awslogs-group": "g"}}
		})},
		{"ecr without role", "ClientException", "Fargate requires task definition to have execution role ARN to support ECR images.", with(func(_, app obj) {
			app["image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"
		})},
		{"depends on unknown", "ClientException", "Container 'db' does not exist", with(func(_, app obj) {
			app["dependsOn"] = []obj{{"containerName": "db", "condition": "START"}}
		})},
		{"depends on condition", "ClientException", "Condition must be one of", with(func(td, app obj) {
			app["dependsOn"] = []obj{{"containerName": "side", "condition": "READY"}}
			td["containerDefinitions"] = []obj{app, {"name": "side", "image": "busybox"}}
		})},
		{"healthy needs health check", "ClientException", "requires container 'side' to have a health check", with(func(td, app obj) {
			app["dependsOn"] = []obj{{"containerName": "side", "condition": "HEALTHY"}}
			td["containerDefinitions"] = []obj{app, {"name": "side", "image": "busybox"}}
		})},
		{"health interval", "ClientException", "'interval' must be between 5 and 300", with(func(_, app obj) {
			app["healthCheck"] = obj{"command": []string{"CMD", "true"}, "interval": 4}
		})},
		{"health timeout", "ClientException", "'timeout' must be between 2 and 120", with(func(_, app obj) {
			app["healthCheck"] = obj{"command": []string{"CMD", "true"}, "timeout": 121}
		})},
		{"health retries", "ClientException", "'retries' must be between 1 and 10", with(func(_, app obj) {
			app["healthCheck"] = obj{"command": []string{"CMD", "true"}, "retries": 11}
		})},
		{"health start period", "ClientException", "'startPeriod' must be between 0 and 300", with(func(_, app obj) {
			app["healthCheck"] = obj{"command": []string{"CMD", "true"}, "startPeriod": 301}
		})},
		{"stop timeout", "ClientException", "maximum stopTimeout of 120 seconds", with(func(_, app obj) { app["stopTimeout"] = 121 })},
		{"ulimit name", "ClientException", "Invalid ulimit name 'files'", with(func(_, app obj) {
			app["ulimits"] = []obj{{"name": "files", "softLimit": 1, "hardLimit": 2}}
		})},
		{"no essential", "ClientException", "at least one essential container", with(func(_, app obj) { app["essential"] = false })},
		{"mount unknown volume", "ClientException", "sourceVolume 'data' is not defined", with(func(_, app obj) {
			app["mountPoints"] = []obj{{"sourceVolume": "data", "containerPath": "/data"}}
		})},
		{"ec2 without memory", "ClientException", "Invalid setting for container 'app'. At least one of 'memory' or 'memoryReservation' must be specified.", obj{
			"family": "ec2", "containerDefinitions": []obj{{"name": "app", "image": "busybox"}},
		}},
		{"reserved tag", "InvalidParameterException", "aws:", with(func(td, _ obj) {
			td["tags"] = []obj{{"key": "aws:owner", "value": "me"}}
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := s.AWSError("ecs", "register-task-definition", "--cli-input-json", tdFile(t, c.td))
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("got %s %q, want %s containing %q", code, msg, c.code, c.msg)
			}
		})
	}
	// Nothing refused may have left a revision behind.
	var fams struct{ Families []string }
	s.MustAWS(&fams, "ecs", "list-task-definition-families")
	if len(fams.Families) != 0 {
		t.Errorf("refused registrations created families %v", fams.Families)
	}
}

func TestTaskDefinitionRegisterDefaults(t *testing.T) {
	s := testenv.Start(t)
	td := fargateTD("web")
	td["cpu"], td["memory"] = "1 vCPU", "2 GB"
	app := td["containerDefinitions"].([]obj)[0]
	app["portMappings"] = []obj{{"containerPort": 80}}
	td["volumes"] = []obj{{"name": "scratch"}}
	got := registerTD(t, s, td)

	want := obj{
		"family":                  "web",
		"revision":                1.0,
		"status":                  "ACTIVE",
		"cpu":                     "1024",
		"memory":                  "2048",
		"networkMode":             "awsvpc",
		"compatibilities":         []any{"EC2", "FARGATE"},
		"requiresCompatibilities": []any{"FARGATE"},
		"placementConstraints":    []any{},
		"volumes":                 []any{obj{"name": "scratch", "host": obj{}}},
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	arn, _ := got["taskDefinitionArn"].(string)
	if !strings.HasPrefix(arn, "arn:aws:ecs:"+s.Creds.Region+":") || !strings.HasSuffix(arn, ":task-definition/web:1") {
		t.Errorf("taskDefinitionArn = %q", arn)
	}
	account := strings.Split(arn, ":")[4]
	if got["registeredBy"] != "arn:aws:iam::"+account+":root" {
		t.Errorf("registeredBy = %v", got["registeredBy"])
	}
	if _, ok := got["registeredAt"].(float64); !ok {
		t.Errorf("registeredAt = %#v, want epoch seconds", got["registeredAt"])
	}
	if attrs := fmt.Sprint(got["requiresAttributes"]); !strings.Contains(attrs, "ecs.capability.task-eni") {
		t.Errorf("requiresAttributes = %v, want task-eni", attrs)
	}
	c := got["containerDefinitions"].([]any)[0].(obj)
	wantC := obj{
		"name":         "app",
		"cpu":          0.0,
		"essential":    true,
		"portMappings": []any{obj{"containerPort": 80.0, "hostPort": 80.0, "protocol": "tcp"}},
		"environment":  []any{},
		"mountPoints":  []any{},
		"volumesFrom":  []any{},
	}
	for k, v := range wantC {
		if !reflect.DeepEqual(c[k], v) {
			t.Errorf("container %s = %#v, want %#v", k, c[k], v)
		}
	}

	// A definition outside Fargate's rules is still registrable when it
	// does not ask for Fargate, and records that it cannot run there.
	ec2 := obj{
		"family": "legacy",
		"containerDefinitions": []obj{
			{"name": "web", "image": "nginx", "memory": 128, "links": []string{"db"}, "privileged": true,
				"portMappings": []obj{{"containerPort": 80}}, "mountPoints": []obj{{"sourceVolume": "data", "containerPath": "/data"}}},
			{"name": "db", "image": "postgres", "memoryReservation": 256},
		},
		"volumes": []obj{{"name": "data", "host": obj{"sourcePath": "/srv/data"}}},
	}
	got = registerTD(t, s, ec2)
	if !reflect.DeepEqual(got["compatibilities"], []any{"EXTERNAL", "EC2"}) {
		t.Errorf("compatibilities = %v, want [EXTERNAL EC2]", got["compatibilities"])
	}
	pm := got["containerDefinitions"].([]any)[0].(obj)["portMappings"].([]any)[0].(obj)
	if pm["hostPort"] != 0.0 {
		t.Errorf("bridge hostPort = %v, want 0 (dynamic)", pm["hostPort"])
	}
	// awsvpc with a valid size but no requiresCompatibilities: Fargate-compatible.
	plain := fargateTD("plain")
	delete(plain, "requiresCompatibilities")
	got = registerTD(t, s, plain)
	if !reflect.DeepEqual(got["compatibilities"], []any{"EC2", "FARGATE"}) {
		t.Errorf("compatibilities = %v, want [EC2 FARGATE]", got["compatibilities"])
	}
	if _, ok := got["requiresCompatibilities"]; ok {
		t.Errorf("requiresCompatibilities = %v, want it left out as it was not given", got["requiresCompatibilities"])
	}

	// --container-definitions and flags, the other common CLI form.
	var out struct{ TaskDefinition obj }
	s.MustAWS(&out, "ecs", "register-task-definition", "--family", "flags", "--network-mode", "awsvpc",
		"--requires-compatibilities", "FARGATE", "--cpu", "512", "--memory", "1 GB",
		"--container-definitions", `[{"name":"a","image":"busybox","command":["sleep","1"]}]`)
	if out.TaskDefinition["memory"] != "1024" || out.TaskDefinition["revision"] != 1.0 {
		t.Errorf("flags form: memory %v revision %v", out.TaskDefinition["memory"], out.TaskDefinition["revision"])
	}
}

func TestTaskDefinitionLifecycle(t *testing.T) {
	s := testenv.Start(t)
	for _, f := range []string{"a", "b", "a", "a-b", "b", "a"} {
		registerTD(t, s, fargateTD(f))
	}
	list := func(args ...string) []string {
		t.Helper()
		var out struct{ TaskDefinitionArns []string }
		s.MustAWS(&out, append([]string{"ecs", "list-task-definitions"}, args...)...)
		names := []string{}
		for _, a := range out.TaskDefinitionArns {
			names = append(names, a[strings.LastIndex(a, "/")+1:])
		}
		return names
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if len(want) == 0 {
			want = []string{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	eq("list", list(), "a:1", "a:2", "a:3", "a-b:1", "b:1", "b:2")
	eq("list DESC", list("--sort", "DESC"), "b:2", "b:1", "a-b:1", "a:3", "a:2", "a:1")
	eq("list family a", list("--family-prefix", "a"), "a:1", "a:2", "a:3")
	eq("list paged by the CLI", list("--page-size", "2"), "a:1", "a:2", "a:3", "a-b:1", "b:1", "b:2")

	var fams struct{ Families []string }
	s.MustAWS(&fams, "ecs", "list-task-definition-families", "--family-prefix", "a")
	eq("families a*", fams.Families, "a", "a-b")

	// Deregister: INACTIVE, timestamped, still describable, out of the ACTIVE list.
	var dereg struct{ TaskDefinition obj }
	s.MustAWS(&dereg, "ecs", "deregister-task-definition", "--task-definition", "a:1")
	if dereg.TaskDefinition["status"] != "INACTIVE" || dereg.TaskDefinition["deregisteredAt"] == nil {
		t.Errorf("deregistered: status %v deregisteredAt %v", dereg.TaskDefinition["status"], dereg.TaskDefinition["deregisteredAt"])
	}
	var desc struct{ TaskDefinition obj }
	s.MustAWS(&desc, "ecs", "describe-task-definition", "--task-definition", "a:1")
	if desc.TaskDefinition["status"] != "INACTIVE" {
		t.Errorf("describe a:1 status = %v", desc.TaskDefinition["status"])
	}
	s.MustAWS(&desc, "ecs", "describe-task-definition", "--task-definition", "a")
	if desc.TaskDefinition["revision"] != 3.0 {
		t.Errorf("describe a = revision %v, want the latest ACTIVE (3)", desc.TaskDefinition["revision"])
	}
	eq("list ACTIVE", list("--family-prefix", "a"), "a:2", "a:3")
	eq("list INACTIVE", list("--status", "INACTIVE"), "a:1")
	if code, _ := s.AWSError("ecs", "deregister-task-definition", "--task-definition", "a:9"); code != "ClientException" {
		t.Errorf("deregister a:9: %s, want ClientException", code)
	}
	if code, _ := s.AWSError("ecs", "deregister-task-definition", "--task-definition", "a"); code != "ClientException" {
		t.Errorf("deregister without revision: %s, want ClientException", code)
	}

	for _, r := range []string{"b:1", "b:2"} {
		s.MustAWS(nil, "ecs", "deregister-task-definition", "--task-definition", r)
	}
	s.MustAWS(&fams, "ecs", "list-task-definition-families", "--status", "INACTIVE")
	eq("INACTIVE families", fams.Families, "b")
	s.MustAWS(&fams, "ecs", "list-task-definition-families", "--status", "ACTIVE")
	eq("ACTIVE families", fams.Families, "a", "a-b")
	s.MustAWS(&fams, "ecs", "list-task-definition-families")
	eq("ALL families", fams.Families, "a", "a-b", "b")

	// Delete: only INACTIVE ones; the others come back as failures.
	var del struct {
		TaskDefinitions []obj
		Failures        []struct{ Arn, Reason string }
	}
	s.MustAWS(&del, "ecs", "delete-task-definitions", "--task-definitions", "a:1", "a:2", "nope:4")
	if len(del.TaskDefinitions) != 1 || del.TaskDefinitions[0]["status"] != "DELETE_IN_PROGRESS" || del.TaskDefinitions[0]["deleteRequestedAt"] == nil {
		t.Errorf("deleted = %v, want a:1 DELETE_IN_PROGRESS", del.TaskDefinitions)
	}
	if len(del.Failures) != 2 || !strings.HasSuffix(del.Failures[0].Arn, "task-definition/a:2") || !strings.Contains(del.Failures[0].Reason, "ACTIVE") {
		t.Errorf("failures = %+v, want a:2 (ACTIVE) and nope:4", del.Failures)
	}
	if code, msg := s.AWSError("ecs", "describe-task-definition", "--task-definition", "a:1"); code != "ClientException" || !strings.Contains(msg, "Unable to describe task definition.") {
		t.Errorf("describe deleted a:1: %s %s", code, msg)
	}
	var eleven []string
	for i := range 11 {
		eleven = append(eleven, fmt.Sprintf("b:%d", i+1))
	}
	if code, _ := s.AWSError(append([]string{"ecs", "delete-task-definitions", "--task-definitions"}, eleven...)...); code != "InvalidParameterException" {
		t.Errorf("delete 11: %s, want InvalidParameterException", code)
	}

	// Revisions survive a restart and are never reused, even after deletion.
	s.Restart()
	if rev := registerTD(t, s, fargateTD("a"))["revision"]; rev != 4.0 {
		t.Errorf("next revision of a = %v, want 4", rev)
	}
	eq("list after restart", list("--family-prefix", "a"), "a:2", "a:3", "a:4")

	if code, msg := s.AWSError("ecs", "describe-task-definition", "--task-definition", "ghost"); code != "ClientException" || !strings.Contains(msg, "Unable to describe task definition.") {
		t.Errorf("describe ghost: %s %s", code, msg)
	}
	if code, _ := s.AWSError("ecs", "list-task-definitions", "--status", "GONE"); code != "InvalidParameterException" {
		t.Errorf("list bad status: %s", code)
	}
}

// TestTaskDefinitionBoto3 drives raw pagination and the whole
// ContainerDefinition shape through boto3.
func TestTaskDefinitionBoto3(t *testing.T) {
	s := testenv.Start(t)
	out, err := s.Python(`
import boto3, json, sys
ecs = boto3.client("ecs")

for i in range(5):
    ecs.register_task_definition(family="p", containerDefinitions=[{"name": "a", "image": "busybox", "memory": 64}])
seen, token, pages = [], None, 0
while True:
    kw = {"maxResults": 2, "familyPrefix": "p"}
    if token: kw["nextToken"] = token
    r = ecs.list_task_definitions(**kw)
    pages += 1
    seen += [a.rsplit("/", 1)[1] for a in r["taskDefinitionArns"]]
    token = r.get("nextToken")
    if not token: break
assert seen == ["p:%d" % i for i in range(1, 6)] and pages == 3, (seen, pages)
r = ecs.list_task_definitions(familyPrefix="nothing")
assert r["taskDefinitionArns"] == [], r
for bad in (0, 101):
    try:
        ecs.list_task_definitions(maxResults=bad)
        sys.exit("maxResults=%d accepted" % bad)
    except ecs.exceptions.InvalidParameterException:
        pass
try:
    ecs.list_task_definitions(nextToken="!!not-a-token!!")
    sys.exit("bad token accepted")
except ecs.exceptions.InvalidParameterException:
    pass

sidecar = {"name": "sidecar", "image": "busybox", "essential": False,
           "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 10, "timeout": 3, "retries": 2, "startPeriod": 5}}
app = {
    "name": "app", "image": "public.ecr.aws/docker/library/nginx:1.27", "cpu": 256, "memory": 1024, "memoryReservation": 512,
    "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "http", "appProtocol": "http"},
                     {"containerPortRange": "9000-9010", "protocol": "udp"}],
    "essential": True, "entryPoint": ["sh", "-c"], "command": ["exec nginx -g 'daemon off;'"],
    "environment": [{"name": "MODE", "value": "prod"}],
    "environmentFiles": [{"value": "arn:aws:s3:::bucket/app.env", "type": "s3"}],
    "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": False}],
    "volumesFrom": [{"sourceContainer": "sidecar", "readOnly": True}],
    "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"], "drop": ["NET_RAW"]}, "initProcessEnabled": True},
    "secrets": [{"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/db"}],
    "dependsOn": [{"containerName": "sidecar", "condition": "HEALTHY"}],
    "startTimeout": 60, "stopTimeout": 30, "versionConsistency": "disabled",
    "workingDirectory": "/srv", "user": "1000:1000", "readonlyRootFilesystem": True,
    "interactive": True, "pseudoTerminal": True, "dockerLabels": {"team": "web"},
    "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
    "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"},
                         "secretOptions": [{"name": "token", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/token"}]},
    "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"], "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 10},
    "systemControls": [{"namespace": "net.core.somaxconn", "value": "1024"}],
    "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:123456789012:secret:reg"},
    "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60},
}
req = {
    "family": "rich", "taskRoleArn": "arn:aws:iam::123456789012:role/task", "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
    "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "1024", "memory": "2048",
    "containerDefinitions": [app, sidecar], "volumes": [{"name": "data"}], "pidMode": "task",
    "ephemeralStorage": {"sizeInGiB": 30}, "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    "enableFaultInjection": True, "tags": [{"key": "env", "value": "test"}],
}
reg = ecs.register_task_definition(**req)
assert reg["tags"] == req["tags"], reg["tags"]
d = ecs.describe_task_definition(taskDefinition="rich:1", include=["TAGS"])

def missing(sent, got, path):
    if isinstance(sent, dict):
        if not isinstance(got, dict): return [path]
        return [m for k, v in sent.items() for m in missing(v, got.get(k), path + "." + k)]
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent): return [path]
        return [m for i, v in enumerate(sent) for m in missing(v, got[i], "%s[%d]" % (path, i))]
    return [] if sent == got else [path + " sent %r got %r" % (sent, got)]

td = d["taskDefinition"]
req.pop("tags")
bad = missing(req, td, "taskDefinition")
assert not bad, bad
assert d["tags"] == [{"key": "env", "value": "test"}], d.get("tags")
assert "tags" not in ecs.describe_task_definition(taskDefinition="rich")
assert td["compatibilities"] == ["EC2", "FARGATE"], td["compatibilities"]
attrs = {a["name"] for a in td["requiresAttributes"]}
for need in ("ecs.capability.task-eni", "ecs.capability.container-health-check", "ecs.capability.execution-role-awslogs", "com.amazonaws.ecs.capability.task-iam-role", "ecs.capability.container-ordering"):
    assert need in attrs, (need, attrs)
print("OK")
`)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
}
