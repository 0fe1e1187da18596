package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
	"github.com/gantry-dev/gantry/internal/testnet"
)

// fwTable is the server's nftables table (as internal/agent/local names it).
func fwTable(s *testenv.Server) string {
	abs, _ := filepath.Abs(s.DataDir)
	h := sha256.Sum256([]byte(abs))
	return "gantry-" + hex.EncodeToString(h[:5])
}

func nftTable(t *testing.T, name string) (string, bool) {
	out, err := exec.Command("nft", "list", "table", "ip", name).CombinedOutput()
	return string(out), err == nil
}

// TestSecurityGroups runs real tasks behind real security groups and checks
// each connection by a client task's exit code: 0 connected, 1 not.
func TestSecurityGroups(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "fw")
	registerJSON(t, s, `{"family":"srv","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c",
		"mkdir /www && echo ok > /www/index.html && for p in 8080 8081 8082; do httpd -p $p -h /www; done; exec sleep 3600"]}]}`)
	// A client: connect to $PEER ("IP PORT") within 2 s, a few tries (the
	// server may still be starting); $TRIES stretches it for the
	// rule-change case. (busybox's wget -T crashes; its nc does not.)
	registerJSON(t, s, `{"family":"cli","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c",
		"for i in $(seq ${TRIES:-3}); do nc -w 2 $PEER </dev/null && exit 0; sleep 0.3; done; exit 1"]}]}`)
	subnet := defaultSubnet(t, s)

	var vpc struct {
		Vpcs []struct{ VpcId, CidrBlock string }
	}
	s.MustAWS(&vpc, "ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true")
	if len(vpc.Vpcs) != 1 {
		t.Fatalf("default VPC: %+v", vpc)
	}
	vpcID, vpcCIDR := vpc.Vpcs[0].VpcId, vpc.Vpcs[0].CidrBlock
	newGroup := func(name string) string {
		var out struct{ GroupId string }
		s.MustAWS(&out, "ec2", "create-security-group", "--group-name", name, "--description", name, "--vpc-id", vpcID)
		return out.GroupId
	}
	web, src := newGroup("web"), newGroup("src")
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "8080", "--cidr", vpcCIDR)
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "8081", "--source-group", src)

	netCfg := func(groups ...string) string {
		if len(groups) == 0 {
			return awsvpc(subnet)
		}
		return fmt.Sprintf("awsvpcConfiguration={subnets=[%s],securityGroups=[%s],assignPublicIp=DISABLED}", subnet, strings.Join(groups, ","))
	}
	startServer := func(groups ...string) string {
		task := runTask(t, s, "--cluster", "fw", "--task-definition", "srv", "--network-configuration", netCfg(groups...))
		return waitStatus(t, s, "fw", task.TaskArn, "RUNNING", 2*time.Minute).eniDetail("privateIPv4Address")
	}
	webIP := startServer(web) // 8080 from the VPC, 8081 from group src
	defIP := startServer()    // the default group: its members only

	type probe struct {
		name   string
		url    string
		groups []string
		want   bool
	}
	run := func(probes []probe) {
		t.Helper()
		var wg sync.WaitGroup
		for _, p := range probes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				task := runTask(t, s, "--cluster", "fw", "--task-definition", "cli", "--network-configuration", netCfg(p.groups...),
					"--overrides", fmt.Sprintf(`{"containerOverrides":[{"name":"main","environment":[{"name":"PEER","value":"%s"}]}]}`, p.url))
				got := waitStatus(t, s, "fw", task.TaskArn, "STOPPED", 2*time.Minute)
				c := got.Containers[0]
				if c.ExitCode == nil || (*c.ExitCode == 0) != p.want {
					t.Errorf("%s: connect to %s from %v: exit %v, want connected=%v", p.name, p.url, p.groups, exitCode(c.ExitCode), p.want)
				}
			}()
		}
		wg.Wait()
	}
	run([]probe{
		{"default group members talk", defIP + " 8080", nil, true},
		{"default group: nothing else in", defIP + " 8080", []string{src}, false},
		{"CIDR rule allows its port", webIP + " 8080", nil, true},
		{"CIDR rule: other port denied", webIP + " 8081", nil, false},
		{"source-group rule", webIP + " 8081", []string{src}, true},
	})

	// The host (the gateway) reaches tasks whatever their groups say.
	if _, err := testnet.HTTPGet(t, webIP, 8082, "/"); err != nil {
		t.Errorf("host to task: %v", err)
	}

	// A rule added while a client keeps trying reaches the kernel within
	// a second, and the client gets through.
	waiter := runTask(t, s, "--cluster", "fw", "--task-definition", "cli", "--network-configuration", netCfg(),
		"--overrides", fmt.Sprintf(`{"containerOverrides":[{"name":"main","environment":[{"name":"PEER","value":"%s 8082"},{"name":"TRIES","value":"60"}]}]}`, webIP))
	waitStatus(t, s, "fw", waiter.TaskArn, "RUNNING", 2*time.Minute)
	time.Sleep(3 * time.Second) // it has tried, and failed, a few times
	if got := describeTask(t, s, "fw", waiter.TaskArn); got.LastStatus != "RUNNING" {
		t.Fatalf("client reached 8082 before the rule existed: %s", got.LastStatus)
	}
	start := time.Now()
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "8082", "--cidr", vpcCIDR)
	for {
		if out, _ := nftTable(t, fwTable(s)); strings.Contains(out, "tcp dport 8082 accept") {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("rule not in the kernel a second after authorize")
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := waitStatus(t, s, "fw", waiter.TaskArn, "STOPPED", time.Minute)
	if c := got.Containers[0]; c.ExitCode == nil || *c.ExitCode != 0 {
		t.Errorf("client did not get through after the rule was added: exit %v", exitCode(c.ExitCode))
	}

	// Egress: without src's allow-all egress rule, its member cannot get
	// out to a port web would let it into.
	s.MustAWS(nil, "ec2", "revoke-security-group-egress", "--group-id", src, "--protocol", "-1", "--cidr", "0.0.0.0/0")
	run([]probe{{"egress revoked", webIP + " 8081", []string{src}, false}})

	// Once every task has stopped, the table is gone.
	if _, ok := nftTable(t, fwTable(s)); !ok {
		t.Errorf("no table %s while tasks run", fwTable(s))
	}
	var list struct{ TaskArns []string }
	s.MustAWS(&list, "ecs", "list-tasks", "--cluster", "fw")
	for _, arn := range list.TaskArns {
		s.MustAWS(nil, "ecs", "stop-task", "--cluster", "fw", "--task", arn)
	}
	for _, arn := range list.TaskArns {
		waitStatus(t, s, "fw", arn, "STOPPED", time.Minute)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, ok := nftTable(t, fwTable(s))
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table left after every task stopped:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	assertNothingLeft(t, s)
}

func exitCode(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
