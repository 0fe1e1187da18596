package test

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type ec2Tag struct{ Key, Value string }

type ec2SGRule struct {
	SecurityGroupRuleId string
	GroupId             string
	IsEgress            bool
	IpProtocol          string
	FromPort, ToPort    int
	CidrIpv4            string
	ReferencedGroupInfo *struct{ GroupId string }
	Description         string
}

type ec2Perm struct {
	IpProtocol       string
	FromPort, ToPort *int
	IpRanges         []struct{ CidrIp, Description string }
	UserIdGroupPairs []struct{ GroupId, UserId string }
}

func wantErr(t *testing.T, s *testenv.Server, code string, args ...string) string {
	t.Helper()
	got, msg := s.AWSError(args...)
	if got != code {
		t.Fatalf("aws %s: got %q, want %s\n%s", strings.Join(args, " "), got, code, msg)
	}
	return msg
}

func groupPerms(t *testing.T, s *testenv.Server, id string) (in, out []ec2Perm) {
	t.Helper()
	var g struct {
		SecurityGroups []struct{ IpPermissions, IpPermissionsEgress []ec2Perm }
	}
	s.MustAWS(&g, "ec2", "describe-security-groups", "--group-ids", id)
	if len(g.SecurityGroups) != 1 {
		t.Fatalf("describe %s: %+v", id, g)
	}
	return g.SecurityGroups[0].IpPermissions, g.SecurityGroups[0].IpPermissionsEgress
}

func groupRules(t *testing.T, s *testenv.Server, id string) []ec2SGRule {
	t.Helper()
	var out struct{ SecurityGroupRules []ec2SGRule }
	s.MustAWS(&out, "ec2", "describe-security-group-rules", "--filters", "Name=group-id,Values="+id)
	return out.SecurityGroupRules
}

// TestEC2VPCWrites drives the write side of VPCs, subnets, security groups
// and tags through the aws CLI, with every error EC2 gives on the way.
func TestEC2VPCWrites(t *testing.T) {
	s := testenv.Start(t)
	region := s.Creds.Region

	// VPCs: the size limits, then one with tags.
	wantErr(t, s, "InvalidVpc.Range", "ec2", "create-vpc", "--cidr-block", "10.0.0.0/8")
	wantErr(t, s, "InvalidVpc.Range", "ec2", "create-vpc", "--cidr-block", "10.0.0.0/29")
	wantErr(t, s, "InvalidParameterValue", "ec2", "create-vpc", "--cidr-block", "10.0.0.300/16")
	wantErr(t, s, "InvalidParameterValue", "ec2", "create-vpc", "--cidr-block", "10.0.0.0/16",
		"--tag-specifications", "ResourceType=subnet,Tags=[{Key=a,Value=b}]")
	var vpc struct {
		Vpc struct {
			VpcId, CidrBlock, State string
			IsDefault               bool
			Tags                    []ec2Tag
		}
	}
	s.MustAWS(&vpc, "ec2", "create-vpc", "--cidr-block", "10.200.0.0/16",
		"--tag-specifications", "ResourceType=vpc,Tags=[{Key=Name,Value=blue}]")
	vpcID := vpc.Vpc.VpcId
	if !regexp.MustCompile(`^vpc-[0-9a-f]{17}$`).MatchString(vpcID) || vpc.Vpc.CidrBlock != "10.200.0.0/16" || vpc.Vpc.IsDefault ||
		!slices.Equal(vpc.Vpc.Tags, []ec2Tag{{"Name", "blue"}}) {
		t.Fatalf("create-vpc: %+v", vpc)
	}
	var ids []string
	s.MustAWS(&ids, "ec2", "describe-vpcs", "--filters", "Name=tag:Name,Values=blue", "--query", "Vpcs[].VpcId")
	if !slices.Equal(ids, []string{vpcID}) {
		t.Fatalf("describe-vpcs by tag: %v", ids)
	}
	// Its own default group came with it.
	var defGroup string
	s.MustAWS(&defGroup, "ec2", "describe-security-groups", "--filters", "Name=vpc-id,Values="+vpcID, "Name=group-name,Values=default",
		"--query", "SecurityGroups[0].GroupId")
	if !strings.HasPrefix(defGroup, "sg-") {
		t.Fatalf("new VPC's default group: %q", defGroup)
	}

	// Subnets: inside the VPC, no overlap, zones of the region.
	wantErr(t, s, "InvalidSubnet.Range", "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.201.0.0/24")
	wantErr(t, s, "InvalidSubnet.Range", "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.200.0.0/29")
	wantErr(t, s, "InvalidVpcID.NotFound", "ec2", "create-subnet", "--vpc-id", "vpc-0123456789abcdef0", "--cidr-block", "10.200.0.0/24")
	wantErr(t, s, "InvalidParameterValue", "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.200.0.0/24", "--availability-zone", region+"z")
	var sub struct {
		Subnet struct {
			SubnetId, VpcId, CidrBlock, AvailabilityZone string
			AvailableIpAddressCount                      int
			DefaultForAz                                 bool
		}
	}
	s.MustAWS(&sub, "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.200.1.0/24")
	subnetA := sub.Subnet.SubnetId
	if !strings.HasPrefix(subnetA, "subnet-") || sub.Subnet.VpcId != vpcID || sub.Subnet.AvailabilityZone != region+"a" ||
		sub.Subnet.AvailableIpAddressCount != 251 || sub.Subnet.DefaultForAz {
		t.Fatalf("create-subnet: %+v", sub)
	}
	wantErr(t, s, "InvalidSubnet.Conflict", "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.200.0.0/23")
	s.MustAWS(&sub, "ec2", "create-subnet", "--vpc-id", vpcID, "--cidr-block", "10.200.2.0/28", "--availability-zone", region+"b",
		"--tag-specifications", "ResourceType=subnet,Tags=[{Key=tier,Value=db}]")
	subnetB := sub.Subnet.SubnetId
	if sub.Subnet.AvailabilityZone != region+"b" {
		t.Fatalf("subnet zone: %+v", sub)
	}
	s.MustAWS(&ids, "ec2", "describe-subnets", "--filters", "Name=vpc-id,Values="+vpcID, "Name=tag:tier,Values=db", "--query", "Subnets[].SubnetId")
	if !slices.Equal(ids, []string{subnetB}) {
		t.Fatalf("describe-subnets by vpc and tag: %v", ids)
	}

	// Security groups.
	var sg struct{ GroupId string }
	s.MustAWS(&sg, "ec2", "create-security-group", "--group-name", "web", "--description", "web tier", "--vpc-id", vpcID)
	web := sg.GroupId
	wantErr(t, s, "InvalidGroup.Duplicate", "ec2", "create-security-group", "--group-name", "web", "--description", "x", "--vpc-id", vpcID)
	wantErr(t, s, "InvalidGroup.Reserved", "ec2", "create-security-group", "--group-name", "default", "--description", "x", "--vpc-id", vpcID)
	wantErr(t, s, "InvalidVpcID.NotFound", "ec2", "create-security-group", "--group-name", "x", "--description", "x", "--vpc-id", "vpc-0123456789abcdef0")
	s.MustAWS(&sg, "ec2", "create-security-group", "--group-name", "app", "--description", "app tier", "--vpc-id", vpcID)
	app := sg.GroupId
	in, out := groupPerms(t, s, web)
	if len(in) != 0 || len(out) != 1 || out[0].IpProtocol != "-1" || out[0].IpRanges[0].CidrIp != "0.0.0.0/0" {
		t.Fatalf("new group: in %+v out %+v", in, out)
	}

	// Rules as the CLI writes them: shorthand and --ip-permissions.
	var auth struct {
		Return             bool
		SecurityGroupRules []ec2SGRule
	}
	s.MustAWS(&auth, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "443", "--cidr", "0.0.0.0/0")
	if !auth.Return || len(auth.SecurityGroupRules) != 1 || !strings.HasPrefix(auth.SecurityGroupRules[0].SecurityGroupRuleId, "sgr-") ||
		auth.SecurityGroupRules[0].FromPort != 443 || auth.SecurityGroupRules[0].CidrIpv4 != "0.0.0.0/0" {
		t.Fatalf("authorize: %+v", auth)
	}
	rule443 := auth.SecurityGroupRules[0].SecurityGroupRuleId
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "udp", "--port", "5000-5100", "--cidr", "10.200.1.0/24")
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "8080", "--source-group", web)
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "icmp", "--port", "-1", "--cidr", "10.0.0.0/8")
	s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--ip-permissions",
		`[{"IpProtocol":"tcp","FromPort":22,"ToPort":22,"IpRanges":[{"CidrIp":"192.168.0.0/16","Description":"ssh"},{"CidrIp":"172.16.0.0/12"}]},`+
			`{"IpProtocol":"6","FromPort":80,"ToPort":80,"UserIdGroupPairs":[{"GroupId":"`+app+`"}]}]`)
	s.MustAWS(nil, "ec2", "authorize-security-group-egress", "--group-id", app, "--protocol", "tcp", "--port", "5432", "--cidr", "10.200.2.0/28")
	msg := wantErr(t, s, "InvalidPermission.Duplicate", "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "443", "--cidr", "0.0.0.0/0")
	if !strings.Contains(msg, "peer: 0.0.0.0/0, TCP, from port: 443, to port: 443, ALLOW") {
		t.Errorf("duplicate message: %s", msg)
	}
	wantErr(t, s, "InvalidPermission.Duplicate", "ec2", "authorize-security-group-egress", "--group-id", web, "--protocol", "all", "--cidr", "0.0.0.0/0")
	wantErr(t, s, "InvalidParameterValue", "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "90-80", "--cidr", "0.0.0.0/0")
	wantErr(t, s, "InvalidParameterValue", "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "70000", "--cidr", "0.0.0.0/0")
	wantErr(t, s, "InvalidParameterValue", "ec2", "authorize-security-group-ingress", "--group-id", web, "--ip-permissions", `[{"IpProtocol":"tcp","IpRanges":[{"CidrIp":"0.0.0.0/0"}]}]`)
	wantErr(t, s, "InvalidParameterValue", "ec2", "authorize-security-group-ingress", "--group-id", web, "--ip-permissions", `[{"IpProtocol":"bogus","IpRanges":[{"CidrIp":"0.0.0.0/0"}]}]`)
	wantErr(t, s, "InvalidParameterValue", "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "1", "--cidr", "10.0.0/8")
	wantErr(t, s, "InvalidGroup.NotFound", "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "1", "--source-group", "sg-0123456789abcdef0")
	wantErr(t, s, "InvalidGroup.NotFound", "ec2", "authorize-security-group-ingress", "--group-id", "sg-0123456789abcdef0", "--protocol", "tcp", "--port", "1", "--cidr", "0.0.0.0/0")
	wantErr(t, s, "InvalidGroupId.Malformed", "ec2", "authorize-security-group-ingress", "--group-id", "web", "--protocol", "tcp", "--port", "1", "--cidr", "0.0.0.0/0")

	in, _ = groupPerms(t, s, web)
	byProto := map[string]ec2Perm{}
	for _, p := range in {
		key := p.IpProtocol
		if p.FromPort != nil {
			key += ":" + strconv.Itoa(*p.FromPort) + "-" + strconv.Itoa(*p.ToPort)
		}
		byProto[key] = p
	}
	if p := byProto["tcp:22-22"]; len(p.IpRanges) != 2 || p.IpRanges[0].Description != "ssh" {
		t.Errorf("ssh permission grouped: %+v (all %+v)", p, in)
	}
	if p := byProto["tcp:80-80"]; len(p.UserIdGroupPairs) != 1 || p.UserIdGroupPairs[0].GroupId != app || p.UserIdGroupPairs[0].UserId != s.Creds.AccountID {
		t.Errorf("protocol 6 stored as tcp with a source group: %+v (all %+v)", p, in)
	}
	if _, ok := byProto["udp:5000-5100"]; !ok {
		t.Errorf("udp range missing: %+v", in)
	}
	if p := byProto["icmp:-1--1"]; len(p.IpRanges) != 1 {
		t.Errorf("icmp rule: %+v", in)
	}
	rules := groupRules(t, s, web)
	// 443, udp range, icmp, two ssh ranges, 80 from app; one egress.
	if len(rules) != 7 {
		t.Fatalf("describe-security-group-rules: %d rules %+v", len(rules), rules)
	}
	var one []ec2SGRule
	s.MustAWS(&one, "ec2", "describe-security-group-rules", "--security-group-rule-ids", rule443, "--query", "SecurityGroupRules")
	if len(one) != 1 || one[0].GroupId != web || one[0].IsEgress || one[0].IpProtocol != "tcp" || one[0].ToPort != 443 {
		t.Fatalf("rule by id: %+v", one)
	}
	wantErr(t, s, "InvalidSecurityGroupRuleId.NotFound", "ec2", "describe-security-group-rules", "--security-group-rule-ids", "sgr-0123456789abcdef0")
	appRules := groupRules(t, s, app)
	if i := slices.IndexFunc(appRules, func(r ec2SGRule) bool { return r.ReferencedGroupInfo != nil && r.ReferencedGroupInfo.GroupId == web }); i < 0 || appRules[i].FromPort != 8080 {
		t.Fatalf("source-group rule: %+v", appRules)
	}

	// Revoke by properties and by id; a missing rule in a non-default VPC
	// is an error and changes nothing.
	wantErr(t, s, "InvalidPermission.NotFound", "ec2", "revoke-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "444", "--cidr", "0.0.0.0/0")
	var rev struct {
		Return                    bool
		RevokedSecurityGroupRules []struct{ SecurityGroupRuleId string }
	}
	s.MustAWS(&rev, "ec2", "revoke-security-group-ingress", "--group-id", web, "--protocol", "udp", "--port", "5000-5100", "--cidr", "10.200.1.0/24")
	if !rev.Return || len(rev.RevokedSecurityGroupRules) != 1 {
		t.Fatalf("revoke: %+v", rev)
	}
	s.MustAWS(&rev, "ec2", "revoke-security-group-ingress", "--group-id", web, "--security-group-rule-ids", rule443)
	if len(rev.RevokedSecurityGroupRules) != 1 || rev.RevokedSecurityGroupRules[0].SecurityGroupRuleId != rule443 {
		t.Fatalf("revoke by id: %+v", rev)
	}
	s.MustAWS(nil, "ec2", "revoke-security-group-egress", "--group-id", app, "--protocol", "tcp", "--port", "5432", "--cidr", "10.200.2.0/28")
	if n := len(groupRules(t, s, web)); n != 5 {
		t.Fatalf("after revokes %d rules, want 5", n)
	}
	// In the default VPC an unknown rule is reported, not refused.
	s.MustAWS(&sg, "ec2", "create-security-group", "--group-name", "plain", "--description", "in the default VPC")
	var unk struct {
		Return               bool
		UnknownIpPermissions []ec2Perm
	}
	s.MustAWS(&unk, "ec2", "revoke-security-group-ingress", "--group-name", "plain", "--protocol", "tcp", "--port", "1", "--cidr", "0.0.0.0/0")
	if unk.Return || len(unk.UnknownIpPermissions) != 1 {
		t.Fatalf("revoke unknown in default VPC: %+v", unk)
	}

	// Tags on all three kinds.
	s.MustAWS(nil, "ec2", "create-tags", "--resources", vpcID, subnetA, web, "--tags", "Key=env,Value=test", "Key=team,Value=")
	var tags struct {
		Tags []struct{ Key, Value, ResourceId, ResourceType string }
	}
	s.MustAWS(&tags, "ec2", "describe-tags", "--filters", "Name=key,Values=env")
	if len(tags.Tags) != 3 {
		t.Fatalf("describe-tags: %+v", tags)
	}
	s.MustAWS(&tags, "ec2", "describe-tags", "--filters", "Name=resource-type,Values=security-group")
	if len(tags.Tags) != 2 || tags.Tags[0].ResourceId != web {
		t.Fatalf("describe-tags by type: %+v", tags)
	}
	s.MustAWS(&ids, "ec2", "describe-security-groups", "--filters", "Name=tag:env,Values=test", "--query", "SecurityGroups[].GroupId")
	if !slices.Equal(ids, []string{web}) {
		t.Fatalf("groups by tag: %v", ids)
	}
	s.MustAWS(nil, "ec2", "delete-tags", "--resources", web, "--tags", "Key=env,Value=other", "Key=team")
	s.MustAWS(&tags, "ec2", "describe-tags", "--filters", "Name=resource-id,Values="+web)
	if len(tags.Tags) != 1 || tags.Tags[0].Key != "env" {
		t.Fatalf("delete-tags with a value that differs keeps the tag: %+v", tags)
	}
	wantErr(t, s, "InvalidVpcID.NotFound", "ec2", "create-tags", "--resources", "vpc-0123456789abcdef0", "--tags", "Key=a,Value=b")
	wantErr(t, s, "InvalidID", "ec2", "create-tags", "--resources", "i-0123456789abcdef0", "--tags", "Key=a,Value=b")
	wantErr(t, s, "InvalidParameterValue", "ec2", "create-tags", "--resources", vpcID, "--tags", "Key=aws:x,Value=b")

	// Deletes: what still has dependents is refused.
	wantErr(t, s, "DependencyViolation", "ec2", "delete-vpc", "--vpc-id", vpcID)
	wantErr(t, s, "CannotDelete", "ec2", "delete-security-group", "--group-id", defGroup)
	wantErr(t, s, "DependencyViolation", "ec2", "delete-security-group", "--group-id", app)       // web's port 80 rule names it
	wantErr(t, s, "InvalidGroup.NotFound", "ec2", "delete-security-group", "--group-name", "web") // not in the default VPC
	// app's rule names web as its source: revoked, web may go, then app.
	s.MustAWS(nil, "ec2", "revoke-security-group-ingress", "--group-id", app, "--protocol", "tcp", "--port", "8080", "--source-group", web)
	s.MustAWS(nil, "ec2", "delete-security-group", "--group-id", web)
	s.MustAWS(nil, "ec2", "delete-security-group", "--group-id", app)
	s.MustAWS(nil, "ec2", "delete-security-group", "--group-name", "plain")
	s.MustAWS(nil, "ec2", "delete-subnet", "--subnet-id", subnetA)
	wantErr(t, s, "InvalidSubnetID.NotFound", "ec2", "delete-subnet", "--subnet-id", subnetA)
	wantErr(t, s, "DependencyViolation", "ec2", "delete-vpc", "--vpc-id", vpcID)
	s.MustAWS(nil, "ec2", "delete-subnet", "--subnet-id", subnetB)
	s.MustAWS(nil, "ec2", "delete-vpc", "--vpc-id", vpcID)
	wantErr(t, s, "InvalidVpcID.NotFound", "ec2", "delete-vpc", "--vpc-id", vpcID)
	wantErr(t, s, "InvalidGroup.NotFound", "ec2", "describe-security-groups", "--group-ids", defGroup)
	s.MustAWS(&ids, "ec2", "describe-vpcs", "--query", "Vpcs[].VpcId")
	if len(ids) != 1 {
		t.Fatalf("VPCs left: %v", ids)
	}
}

// TestEC2TaskENI runs a real task and checks that EC2 shows its ENI and
// refuses to delete the subnet and the group it uses until it stops.
func TestEC2TaskENI(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "eni")
	registerJSON(t, s, `{"family":"sleeper","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sleep","600"],"essential":true}]}`)
	subnet := defaultSubnet(t, s)
	var sg struct{ GroupId string }
	s.MustAWS(&sg, "ec2", "create-security-group", "--group-name", "task", "--description", "task group")

	task := runTask(t, s, "--cluster", "eni", "--launch-type", "FARGATE", "--task-definition", "sleeper",
		"--network-configuration", "awsvpcConfiguration={subnets=["+subnet+"],securityGroups=["+sg.GroupId+"],assignPublicIp=DISABLED}")
	task = waitStatus(t, s, "eni", task.TaskArn, "RUNNING", 2*time.Minute)
	ip, eniID := task.eniDetail("privateIPv4Address"), task.eniDetail("networkInterfaceId")

	var enis struct {
		NetworkInterfaces []struct {
			NetworkInterfaceId, PrivateIpAddress, MacAddress, SubnetId, VpcId, AvailabilityZone string
			Status, InterfaceType, RequesterId, Description, OwnerId                            string
			RequesterManaged                                                                    bool
			Groups                                                                              []struct{ GroupId, GroupName string }
			Attachment                                                                          struct{ Status string }
		}
	}
	s.MustAWS(&enis, "ec2", "describe-network-interfaces", "--filters", "Name=subnet-id,Values="+subnet)
	if len(enis.NetworkInterfaces) != 1 {
		t.Fatalf("describe-network-interfaces: %+v", enis)
	}
	e := enis.NetworkInterfaces[0]
	var attachmentID string
	s.MustAWS(&attachmentID, "ecs", "describe-tasks", "--cluster", "eni", "--tasks", task.TaskArn, "--query", "tasks[0].attachments[0].id")
	if e.NetworkInterfaceId != eniID || e.PrivateIpAddress != ip || ip == "" || e.MacAddress != task.eniDetail("macAddress") ||
		e.SubnetId != subnet || !strings.HasPrefix(e.VpcId, "vpc-") || e.AvailabilityZone != task.AvailabilityZone ||
		e.Status != "in-use" || e.Attachment.Status != "attached" || e.InterfaceType != "interface" || !e.RequesterManaged ||
		e.RequesterId != "amazon-ecs" || e.OwnerId != s.Creds.AccountID ||
		e.Description != "arn:aws:ecs:"+s.Creds.Region+":"+s.Creds.AccountID+":attachment/"+attachmentID ||
		len(e.Groups) != 1 || e.Groups[0].GroupId != sg.GroupId || e.Groups[0].GroupName != "task" {
		t.Fatalf("ENI %+v\ntask %+v", e, task)
	}
	var byID []string
	s.MustAWS(&byID, "ec2", "describe-network-interfaces", "--network-interface-ids", eniID, "--query", "NetworkInterfaces[].PrivateIpAddress")
	if !slices.Equal(byID, []string{ip}) {
		t.Fatalf("by id: %v", byID)
	}
	wantErr(t, s, "InvalidNetworkInterfaceID.NotFound", "ec2", "describe-network-interfaces", "--network-interface-ids", "eni-0123456789abcdef0")

	wantErr(t, s, "DependencyViolation", "ec2", "delete-subnet", "--subnet-id", subnet)
	wantErr(t, s, "DependencyViolation", "ec2", "delete-security-group", "--group-id", sg.GroupId)

	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "eni", "--task", task.TaskArn)
	waitStatus(t, s, "eni", task.TaskArn, "STOPPED", 2*time.Minute)
	s.MustAWS(&byID, "ec2", "describe-network-interfaces", "--query", "NetworkInterfaces[].NetworkInterfaceId")
	if len(byID) != 0 {
		t.Fatalf("ENIs after stop: %v", byID)
	}
	s.MustAWS(nil, "ec2", "delete-security-group", "--group-id", sg.GroupId)
	s.MustAWS(nil, "ec2", "delete-subnet", "--subnet-id", subnet)
}
