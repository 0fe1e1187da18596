package test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// Ten RunTask calls at once in one subnet, more than the server keeps
// network namespaces ready for: every task runs with an address of its own
// and serves on it, and once they are stopped (all at once too) no
// namespace, address lease or container of theirs is left.
func TestTaskNetworkBurst(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "burst")
	registerFile(t, s, "../docs/examples/web-task.json")
	subnet := defaultSubnet(t, s)
	client := s.ECS()
	ctx := context.Background()

	const n = 10
	arns := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := client.RunTask(ctx, &ecs.RunTaskInput{
				Cluster: aws.String("burst"), TaskDefinition: aws.String("web"), LaunchType: types.LaunchTypeFargate,
				NetworkConfiguration: &types.NetworkConfiguration{AwsvpcConfiguration: &types.AwsVpcConfiguration{Subnets: []string{subnet}}},
			})
			if err == nil && len(out.Tasks) == 1 {
				arns[i] = aws.ToString(out.Tasks[0].TaskArn)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("run-task: %v", err)
		}
	}

	ips := map[string]string{}
	for _, arn := range arns {
		task := waitStatus(t, s, "burst", arn, "RUNNING", 2*time.Minute)
		ip := task.eniDetail("privateIPv4Address")
		if ip == "" || ips[ip] != "" {
			t.Fatalf("task %s has address %q (already %q's)", arn, ip, ips[ip])
		}
		ips[ip] = arn
	}
	for ip, arn := range ips {
		if page := httpGet(t, ip); page != testimage.WebIndex {
			t.Errorf("task %s at %s serves %q", arn, ip, page)
		}
	}

	for _, arn := range arns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := client.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("burst"), Task: aws.String(arn)}); err != nil {
				t.Errorf("stop-task %s: %v", arn, err)
			}
		}()
	}
	wg.Wait()
	for _, arn := range arns {
		waitStatus(t, s, "burst", arn, "STOPPED", 2*time.Minute)
	}
	assertNothingLeft(t, s)
}
