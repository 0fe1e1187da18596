package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// echoImage is busybox plus netecho (test/netecho, built static here), as
// "gantry-test/netecho:latest".
func echoImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "netecho")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/gantry-dev/gantry/test/netecho")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build netecho: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(dir, "netecho.tar")
	if err := testimage.WriteWithFiles(tar, "gantry-test/netecho:latest",
		[]testimage.File{{Name: "bin/netecho", Mode: 0o755, Data: data}}, testimage.WithCmd("sh")); err != nil {
		t.Fatal(err)
	}
	return tar
}

// netTest is a server with the netecho image and task definitions: "echo"
// (UDP and TCP echo on several ports) and "probe" ($PROTO to $PEER).
type netTest struct {
	t *testing.T
	s *testenv.Server
}

const echoPorts = "udp:5353 udp:5354 udp:6005 tcp:7000 tcp:7001"

func newNetTest(t *testing.T, args ...string) *netTest {
	s := testenv.Start(t, args...)
	loadImage(t, s, echoImage(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "net")
	registerJSON(t, s, `{"family":"echo","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/netecho:latest","command":["netecho","serve",`+
		`"`+strings.Join(strings.Fields(echoPorts), `","`)+`"]}]}`)
	registerJSON(t, s, `{"family":"probe","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/netecho:latest","command":["sh","-c","exec netecho $MODE $PROTO $PEER $TRIES"]}]}`)
	return &netTest{t: t, s: s}
}

func netCfg(subnet string, groups ...string) string {
	if len(groups) == 0 {
		return awsvpc(subnet)
	}
	return fmt.Sprintf("awsvpcConfiguration={subnets=[%s],securityGroups=[%s],assignPublicIp=DISABLED}", subnet, strings.Join(groups, ","))
}

// echo starts an echo server and returns its task and private address.
func (n *netTest) echo(subnet string, groups ...string) (string, string) {
	arn := n.startEcho(subnet, groups...)
	return arn, n.running(arn)
}

func (n *netTest) startEcho(subnet string, groups ...string) string {
	return runTask(n.t, n.s, "--cluster", "net", "--task-definition", "echo", "--network-configuration", netCfg(subnet, groups...)).TaskArn
}

// running waits for the task to run and returns its private address.
func (n *netTest) running(arn string) string {
	return waitStatus(n.t, n.s, "net", arn, "RUNNING", 2*time.Minute).eniDetail("privateIPv4Address")
}

type netProbe struct {
	name        string
	proto, peer string // "udp", "10.1.2.3:5353"
	subnet      string
	groups      []string
	want        bool
}

// probe runs a client task per probe, all at once, and checks each one's
// verdict by its exit code: 0 echoed, 1 not.
func (n *netTest) probe(probes ...netProbe) {
	n.t.Helper()
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := fmt.Sprintf(`[{"name":"MODE","value":"probe"},{"name":"PROTO","value":"%s"},{"name":"PEER","value":"%s"},{"name":"TRIES","value":"3"}]`, p.proto, p.peer)
			task := runTask(n.t, n.s, "--cluster", "net", "--task-definition", "probe", "--network-configuration", netCfg(p.subnet, p.groups...),
				"--overrides", `{"containerOverrides":[{"name":"main","environment":`+env+`}]}`)
			got := waitStatus(n.t, n.s, "net", task.TaskArn, "STOPPED", 2*time.Minute)
			c := got.Containers[0]
			if c.ExitCode == nil || (*c.ExitCode == 0) != p.want {
				n.t.Errorf("%s: %s to %s: exit %v, want echoed=%v", p.name, p.proto, p.peer, exitCode(c.ExitCode), p.want)
			}
		}()
	}
	wg.Wait()
}

func (n *netTest) stopAll() {
	var list struct{ TaskArns []string }
	n.s.MustAWS(&list, "ecs", "list-tasks", "--cluster", "net")
	for _, arn := range list.TaskArns {
		n.s.MustAWS(nil, "ecs", "stop-task", "--cluster", "net", "--task", arn)
	}
	for _, arn := range list.TaskArns {
		waitStatus(n.t, n.s, "net", arn, "STOPPED", time.Minute)
	}
}

func (n *netTest) group(vpc, name string) string {
	var out struct{ GroupId string }
	n.s.MustAWS(&out, "ec2", "create-security-group", "--group-name", name, "--description", name, "--vpc-id", vpc)
	return out.GroupId
}

func (n *netTest) defaultVPC() (id, cidr string) {
	var vpc struct {
		Vpcs []struct{ VpcId, CidrBlock string }
	}
	n.s.MustAWS(&vpc, "ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true")
	if len(vpc.Vpcs) != 1 {
		n.t.Fatalf("default VPC: %+v", vpc)
	}
	return vpc.Vpcs[0].VpcId, vpc.Vpcs[0].CidrBlock
}

// freeTestRange picks a /16 in 10.2-99 that no route on this host uses
// (test servers' default VPCs take 10.100-249).
func freeTestRange(t *testing.T) string {
	out, _ := exec.Command("ip", "-4", "-o", "route").Output()
	for i := range 98 {
		x := 2 + (os.Getpid()+i)%98
		if !strings.Contains(string(out), fmt.Sprintf(" 10.%d.", x)) && !strings.HasPrefix(string(out), fmt.Sprintf("10.%d.", x)) &&
			!strings.Contains(string(out), fmt.Sprintf("\n10.%d.", x)) {
			return fmt.Sprintf("10.%d", x)
		}
	}
	t.Fatal("no free 10.x range")
	return ""
}

// TestVPCTraffic checks real UDP and TCP between tasks, on one server:
// UDP against a rule on a port and a port range (every other port shut, no
// TCP let in by a UDP rule, closed again once revoked); tasks in two VPCs
// with the same CIDR cannot reach each other, even with groups open to
// everyone, while tasks of one VPC can; a task given no groups gets its own
// VPC's default group, and a group of another VPC is refused.
func TestVPCTraffic(t *testing.T) {
	n := newNetTest(t)
	defVPC, defCIDR := n.defaultVPC()
	defSubnet := defaultSubnet(t, n.s)
	dns := n.group(defVPC, "dns")
	n.s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", dns, "--protocol", "udp", "--port", "5353", "--cidr", defCIDR)
	n.s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", dns, "--ip-permissions",
		fmt.Sprintf("IpProtocol=udp,FromPort=6000,ToPort=6010,IpRanges=[{CidrIp=%s}]", defCIDR))

	x := freeTestRange(t)
	vpcA, vpcB := n.vpc(x+".0.0/16"), n.vpc(x+".0.0/16")
	a1 := n.subnet(vpcA, x+".1.0/24")
	b2 := n.subnet(vpcB, x+".2.0/24")
	openA, openB := n.openGroup(vpcA), n.openGroup(vpcB)
	// Started together, so the host starts them in parallel.
	arns := []string{n.startEcho(defSubnet, dns), n.startEcho(a1, openA), n.startEcho(b2, openB), n.startEcho(a1)}
	ipDNS, ipA, ipB, ipDef := n.running(arns[0]), n.running(arns[1]), n.running(arns[2]), n.running(arns[3])
	// The last one, given no securityGroups, gets its own VPC's default
	// group.
	defArn := arns[3]
	var defA struct{ SecurityGroups []struct{ GroupId string } }
	n.s.MustAWS(&defA, "ec2", "describe-security-groups", "--filters", "Name=vpc-id,Values="+vpcA, "Name=group-name,Values=default")
	eni := describeTask(t, n.s, "net", defArn).eniDetail("networkInterfaceId")
	var enis struct {
		NetworkInterfaces []struct{ Groups []struct{ GroupId string } }
	}
	n.s.MustAWS(&enis, "ec2", "describe-network-interfaces", "--network-interface-ids", eni)
	if len(defA.SecurityGroups) != 1 || len(enis.NetworkInterfaces) != 1 || len(enis.NetworkInterfaces[0].Groups) != 1 ||
		enis.NetworkInterfaces[0].Groups[0].GroupId != defA.SecurityGroups[0].GroupId {
		t.Errorf("task in %s without groups: ENI groups %+v, want the VPC's default group %+v", vpcA, enis, defA)
	}
	// A group of another VPC than the subnets is refused.
	if code, msg := n.s.AWSError("ecs", "run-task", "--cluster", "net", "--task-definition", "echo",
		"--network-configuration", netCfg(a1, openB)); code != "InvalidParameterException" {
		t.Errorf("run-task with a group of another VPC: %s %s, want InvalidParameterException", code, msg)
	}
	n.probe(
		netProbe{"udp rule's port", "udp", ipDNS + ":5353", defSubnet, nil, true},
		netProbe{"udp port range", "udp", ipDNS + ":6005", defSubnet, nil, true},
		netProbe{"udp: other port", "udp", ipDNS + ":5354", defSubnet, nil, false},
		netProbe{"udp rule lets no tcp in", "tcp", ipDNS + ":7000", defSubnet, nil, false},
		netProbe{"VPC's default group: members talk", "tcp", ipDef + ":7000", a1, nil, true},
		netProbe{"VPC's default group: nothing else in", "tcp", ipDef + ":7000", a1, []string{openA}, false},
		netProbe{"one VPC: udp", "udp", ipA + ":5354", a1, []string{openA}, true},
		netProbe{"one VPC: tcp", "tcp", ipA + ":7001", a1, []string{openA}, true},
		netProbe{"VPC A to B: udp", "udp", ipB + ":5353", a1, []string{openA}, false},
		netProbe{"VPC A to B: tcp", "tcp", ipB + ":7000", a1, []string{openA}, false},
		netProbe{"VPC B to A: tcp", "tcp", ipA + ":7000", b2, []string{openB}, false},
		netProbe{"VPC B to A: udp", "udp", ipA + ":5353", b2, []string{openB}, false},
	)
	// Revoked, the UDP port closes again.
	n.s.MustAWS(nil, "ec2", "revoke-security-group-ingress", "--group-id", dns, "--protocol", "udp", "--port", "5353", "--cidr", defCIDR)
	n.probe(netProbe{"udp rule revoked", "udp", ipDNS + ":5353", defSubnet, nil, false})
	n.stopAll()
	assertNothingLeft(t, n.s)
	if out, ok := nftTable(t, fwTable(n.s)); ok {
		t.Errorf("table left after every task stopped:\n%s", out)
	}
}

// TestVPCSubnetsRoute: two subnets of one VPC reach each other through the
// host, over the VPC's one bridge.
func TestVPCSubnetsRoute(t *testing.T) {
	n := newNetTest(t)
	x := freeTestRange(t)
	vpc := n.vpc(x + ".0.0/16")
	s1, s3 := n.subnet(vpc, x+".1.0/24"), n.subnet(vpc, x+".3.0/24")
	open := n.openGroup(vpc)
	_, ip := n.echo(s1, open)
	n.probe(
		netProbe{"subnets of one VPC: udp", "udp", ip + ":5354", s3, []string{open}, true},
		netProbe{"subnets of one VPC: tcp", "tcp", ip + ":7001", s3, []string{open}, true},
	)
	n.stopAll()
	assertNothingLeft(t, n.s)
}

func (n *netTest) vpc(cidr string) string {
	var out struct{ Vpc struct{ VpcId string } }
	n.s.MustAWS(&out, "ec2", "create-vpc", "--cidr-block", cidr)
	return out.Vpc.VpcId
}

func (n *netTest) subnet(vpc, cidr string) string {
	var out struct{ Subnet struct{ SubnetId string } }
	n.s.MustAWS(&out, "ec2", "create-subnet", "--vpc-id", vpc, "--cidr-block", cidr)
	return out.Subnet.SubnetId
}

// openGroup is a group of vpc letting everything in.
func (n *netTest) openGroup(vpc string) string {
	g := n.group(vpc, "open")
	n.s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", g, "--protocol", "-1", "--cidr", "0.0.0.0/0")
	return g
}

// TestFirewallUpdatesKeepFlows holds TCP connections open across task
// starts, stops and a rule change: updating the table for one task must
// not disturb the established flows of the others.
func TestFirewallUpdatesKeepFlows(t *testing.T) {
	n := newNetTest(t)
	vpc, cidr := n.defaultVPC()
	subnet := defaultSubnet(t, n.s)
	srv := n.group(vpc, "srv")
	n.s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", srv, "--protocol", "tcp", "--port", "7000", "--cidr", cidr)
	_, ip := n.echo(subnet, srv)
	// Two clients hold a connection each for 40 s.
	var holders []string
	for range 2 {
		env := fmt.Sprintf(`[{"name":"MODE","value":"hold"},{"name":"PEER","value":"%s:7000"},{"name":"TRIES","value":"40"}]`, ip)
		task := runTask(t, n.s, "--cluster", "net", "--task-definition", "probe", "--network-configuration", awsvpc(subnet),
			"--overrides", `{"containerOverrides":[{"name":"main","environment":`+env+`}]}`)
		holders = append(holders, task.TaskArn)
	}
	for _, h := range holders {
		waitStatus(t, n.s, "net", h, "RUNNING", 2*time.Minute)
	}
	// Meanwhile: tasks start and stop, and the group loses the very rule
	// that let the connections in (established flows outlive it, as in
	// AWS).
	var more []string
	for range 3 {
		arn, _ := n.echo(subnet, srv)
		more = append(more, arn)
	}
	n.s.MustAWS(nil, "ec2", "revoke-security-group-ingress", "--group-id", srv, "--protocol", "tcp", "--port", "7000", "--cidr", cidr)
	for _, arn := range more[:2] {
		n.s.MustAWS(nil, "ecs", "stop-task", "--cluster", "net", "--task", arn)
	}
	for _, arn := range more[:2] {
		waitStatus(t, n.s, "net", arn, "STOPPED", time.Minute)
	}
	// The changes must have happened while the connections were held.
	for _, h := range holders {
		if got := describeTask(t, n.s, "net", h); got.LastStatus != "RUNNING" {
			t.Fatalf("a holder ended (%s) before the firewall changes were done: the host is too slow for this test", got.LastStatus)
		}
	}
	for _, h := range holders {
		got := waitStatus(t, n.s, "net", h, "STOPPED", time.Minute)
		if c := got.Containers[0]; c.ExitCode == nil || *c.ExitCode != 0 {
			t.Errorf("held connection broken by a firewall update: exit %v", exitCode(c.ExitCode))
		}
	}
	// And a new connection is refused now the rule is gone.
	n.probe(netProbe{"rule revoked: new flow", "tcp", ip + ":7000", subnet, nil, false})
	n.stopAll()
	assertNothingLeft(t, n.s)
}
