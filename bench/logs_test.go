package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// BenchmarkLogIngest measures log lines from container stdout to stored
// CloudWatch Logs events, end to end, with 20 tasks writing at once. In the
// same run the same tasks write the same lines to a file inside the
// container instead: that is the floor the awslogs path is compared with.
//
//	go test -run '^$' -bench LogIngest -benchtime 1x -timeout 30m ./bench
func BenchmarkLogIngest(b *testing.B) {
	const tasks, lines = 20, 20000
	e := setup(b)
	ctx := context.Background()
	// ~100-byte lines, as applications write them.
	gen := fmt.Sprintf(`seq 1 %d | awk '{printf "line %%08d %%s\n", $1, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij"}'`, lines)
	var wantBytes int64
	for i := 1; i <= lines; i++ {
		wantBytes += int64(len(fmt.Sprintf("line %08d %s", i, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij")))
	}
	wantBytes *= tasks
	register := func(family, cmd string, awslogs bool) {
		cd := types.ContainerDefinition{Name: aws.String("gen"), Image: aws.String(image), Command: []string{"sh", "-c", cmd}}
		if awslogs {
			cd.LogConfiguration = &types.LogConfiguration{LogDriver: types.LogDriverAwslogs, Options: map[string]string{
				"awslogs-group": "/bench/" + family, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "b", "awslogs-create-group": "true",
			}}
		}
		_, err := e.ecs.RegisterTaskDefinition(ctx, &ecs.RegisterTaskDefinitionInput{
			Family: aws.String(family), NetworkMode: types.NetworkModeAwsvpc, ExecutionRoleArn: aws.String("arn:aws:iam::000000000000:role/ecsTaskExecutionRole"),
			RequiresCompatibilities: []types.Compatibility{types.CompatibilityFargate}, Cpu: aws.String("256"), Memory: aws.String("512"),
			ContainerDefinitions: []types.ContainerDefinition{cd},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	run := func(family string) []string {
		out, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
			Cluster: aws.String("bench"), TaskDefinition: aws.String(family), Count: aws.Int32(10), LaunchType: types.LaunchTypeFargate,
			NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
		})
		if err != nil || len(out.Failures) > 0 {
			b.Fatalf("run-task: %v %+v", err, out)
		}
		out2, err := e.ecs.RunTask(ctx, &ecs.RunTaskInput{
			Cluster: aws.String("bench"), TaskDefinition: aws.String(family), Count: aws.Int32(tasks - 10), LaunchType: types.LaunchTypeFargate,
			NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{e.subnet}}},
		})
		if err != nil || len(out2.Failures) > 0 {
			b.Fatalf("run-task: %v %+v", err, out2)
		}
		var arns []string
		for _, t := range append(out.Tasks, out2.Tasks...) {
			arns = append(arns, aws.ToString(t.TaskArn))
		}
		return arns
	}
	storedBytes := func(group string) int64 {
		stdout, _, code := e.s.AWS("logs", "describe-log-groups", "--log-group-name-prefix", group)
		var out struct {
			LogGroups []struct {
				StoredBytes int64 `json:"storedBytes"`
			} `json:"logGroups"`
		}
		if code != 0 || json.Unmarshal([]byte(stdout), &out) != nil || len(out.LogGroups) == 0 {
			return 0
		}
		return out.LogGroups[0].StoredBytes
	}

	for i := 0; i < b.N; i++ {
		file, logs := fmt.Sprintf("tofile%d", i), fmt.Sprintf("awslogs%d", i)
		register(file, gen+" > /tmp/out.log", false)
		register(logs, gen, true)

		// Both start the same way; only where the lines go differs.
		start := time.Now()
		arns := run(file)
		if err := e.waitStatus(ctx, arns, "STOPPED", 200*time.Millisecond); err != nil {
			b.Fatal(err)
		}
		fileTime := time.Since(start)

		start = time.Now()
		arns = run(logs)
		for storedBytes("/bench/"+logs) < wantBytes {
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("stored %d of %d bytes", storedBytes("/bench/"+logs), wantBytes)
			}
			time.Sleep(200 * time.Millisecond)
		}
		logsTime := time.Since(start)
		if got := storedBytes("/bench/" + logs); got != wantBytes {
			b.Fatalf("stored %d bytes, want %d", got, wantBytes)
		}
		e.waitStatus(ctx, arns, "STOPPED", time.Second)

		total := float64(tasks * lines)
		b.ReportMetric(total/logsTime.Seconds(), "awslogs-lines/s")
		b.ReportMetric(float64(wantBytes)/logsTime.Seconds()/1e6, "awslogs-MB/s")
		b.ReportMetric(total/fileTime.Seconds(), "file-lines/s")
		b.ReportMetric(logsTime.Seconds()/fileTime.Seconds(), "awslogs/file")
	}
}
