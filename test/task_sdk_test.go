package test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestTaskSDKs runs a task with aws-sdk-go-v2 and with boto3, each through
// its own waiters, and checks both see the same task shape.
func TestTaskSDKs(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	registerFile(t, s, "../docs/examples/web-task.json")
	subnet := defaultSubnet(t, s)

	t.Run("aws-sdk-go-v2", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		client := s.ECS()
		runIn := &ecs.RunTaskInput{
			Cluster:        aws.String("demo"),
			TaskDefinition: aws.String("web"),
			LaunchType:     types.LaunchTypeFargate,
			NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{
				Subnets: []string{subnet}, AssignPublicIp: types.AssignPublicIpDisabled,
			}},
			Tags:        []types.Tag{{Key: aws.String("via"), Value: aws.String("go")}},
			ClientToken: aws.String("walkthrough-" + time.Now().Format("150405.000")),
		}
		run, err := client.RunTask(ctx, runIn)
		if err != nil {
			t.Fatal(err)
		}
		if len(run.Tasks) != 1 || len(run.Failures) != 0 {
			t.Fatalf("RunTask: %+v", run)
		}
		arn := aws.ToString(run.Tasks[0].TaskArn)
		// A retry with the same client token starts nothing new.
		again, err := client.RunTask(ctx, runIn)
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Tasks) != 1 || aws.ToString(again.Tasks[0].TaskArn) != arn {
			t.Errorf("RunTask retried with its client token started another task: %+v", again.Tasks)
		}
		if list, err := client.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("demo")}); err != nil || len(list.TaskArns) != 1 {
			t.Errorf("tasks after a retried RunTask: %v %v", list, err)
		}
		in := &ecs.DescribeTasksInput{Cluster: aws.String("demo"), Tasks: []string{arn}, Include: []types.TaskField{types.TaskFieldTags}}
		if err := ecs.NewTasksRunningWaiter(client, func(o *ecs.TasksRunningWaiterOptions) { o.MinDelay = time.Second }).Wait(ctx, in, 3*time.Minute); err != nil {
			t.Fatalf("tasks running waiter: %v", err)
		}
		desc, err := client.DescribeTasks(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		task := desc.Tasks[0]
		if aws.ToString(task.LastStatus) != "RUNNING" || task.StartedAt == nil || task.CreatedAt == nil ||
			len(task.Tags) != 1 || aws.ToString(task.Tags[0].Value) != "go" || task.Version < 2 {
			t.Errorf("described: %+v", task)
		}
		ip := ""
		for _, d := range task.Attachments[0].Details {
			if aws.ToString(d.Name) == "privateIPv4Address" {
				ip = aws.ToString(d.Value)
			}
		}
		if ip == "" {
			t.Fatal("no private address")
		}
		httpGet(t, ip)
		if _, err := client.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("demo"), Task: aws.String(arn)}); err != nil {
			t.Fatal(err)
		}
		if err := ecs.NewTasksStoppedWaiter(client, func(o *ecs.TasksStoppedWaiterOptions) { o.MinDelay = time.Second }).Wait(ctx, in, 3*time.Minute); err != nil {
			t.Fatalf("tasks stopped waiter: %v", err)
		}
		// A typed error, as the SDK decodes it.
		_, err = client.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("demo"), Task: aws.String("0123456789abcdef0123456789abcdef")})
		var ipe *types.InvalidParameterException
		if !errors.As(err, &ipe) {
			t.Errorf("stopping an unknown task: %v", err)
		}
	})

	t.Run("boto3", func(t *testing.T) {
		out, err := s.Python(`
import boto3, json
ecs = boto3.client("ecs")
run = ecs.run_task(cluster="demo", taskDefinition="web", launchType="FARGATE",
    networkConfiguration={"awsvpcConfiguration": {"subnets": ["` + subnet + `"], "assignPublicIp": "DISABLED"}})
arn = run["tasks"][0]["taskArn"]
ecs.get_waiter("tasks_running").wait(cluster="demo", tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 180})
running = ecs.describe_tasks(cluster="demo", tasks=[arn])["tasks"][0]
stop = ecs.stop_task(cluster="demo", task=arn, reason="boto3 says bye")["task"]
ecs.get_waiter("tasks_stopped").wait(cluster="demo", tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 180})
stopped = ecs.describe_tasks(cluster="demo", tasks=[arn])["tasks"][0]
print(json.dumps({"running": running, "stop": stop, "stopped": stopped}, default=str))
`)
		if err != nil {
			t.Fatalf("boto3: %v\n%s", err, out)
		}
		var res struct{ Running, Stop, Stopped cliTask }
		if err := json.Unmarshal([]byte(out[strings.LastIndex(out, "\n{")+1:]), &res); err != nil {
			t.Fatalf("boto3 output %q: %v", out, err)
		}
		if res.Running.LastStatus != "RUNNING" || res.Running.eniDetail("privateIPv4Address") == "" {
			t.Errorf("running: %+v", res.Running)
		}
		if res.Stop.DesiredStatus != "STOPPED" || res.Stop.StoppedReason != "boto3 says bye" {
			t.Errorf("stop_task: %+v", res.Stop)
		}
		if res.Stopped.LastStatus != "STOPPED" || res.Stopped.StopCode != "UserInitiated" || res.Stopped.StoppedReason != "boto3 says bye" {
			t.Errorf("stopped: %+v", res.Stopped)
		}
	})
}
