package test

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type ec2Vpc struct {
	VpcId                   string
	OwnerId                 string
	State                   string
	CidrBlock               string
	IsDefault               bool
	DhcpOptionsId           string
	InstanceTenancy         string
	CidrBlockAssociationSet []struct {
		CidrBlock      string
		CidrBlockState struct{ State string }
	}
}

type ec2Subnet struct {
	SubnetId                string
	SubnetArn               string
	VpcId                   string
	CidrBlock               string
	AvailabilityZone        string
	AvailabilityZoneId      string
	DefaultForAz            bool
	MapPublicIpOnLaunch     bool
	AvailableIpAddressCount int
	State                   string
	OwnerId                 string
}

type ec2Rule struct {
	IpProtocol       string
	IpRanges         []struct{ CidrIp string }
	UserIdGroupPairs []struct{ GroupId, UserId string }
}

type ec2Group struct {
	GroupId             string
	GroupName           string
	Description         string
	VpcId               string
	OwnerId             string
	IpPermissions       []ec2Rule
	IpPermissionsEgress []ec2Rule
}

func TestEC2DefaultVPC(t *testing.T) {
	// AWS's own default range: this test runs no task, so no route is made.
	s := testenv.Start(t, "--default-vpc-cidr", "172.31.0.0/16")
	account := s.Creds.AccountID
	region := s.Creds.Region

	var vpcs struct{ Vpcs []ec2Vpc }
	s.MustAWS(&vpcs, "ec2", "describe-vpcs")
	if len(vpcs.Vpcs) != 1 {
		t.Fatalf("want one VPC, got %+v", vpcs)
	}
	v := vpcs.Vpcs[0]
	if !regexp.MustCompile(`^vpc-[0-9a-f]{17}$`).MatchString(v.VpcId) || v.CidrBlock != "172.31.0.0/16" || !v.IsDefault ||
		v.State != "available" || v.OwnerId != account || v.InstanceTenancy != "default" || !strings.HasPrefix(v.DhcpOptionsId, "dopt-") ||
		len(v.CidrBlockAssociationSet) != 1 || v.CidrBlockAssociationSet[0].CidrBlockState.State != "associated" {
		t.Fatalf("default VPC: %+v", v)
	}

	var subnets struct{ Subnets []ec2Subnet }
	s.MustAWS(&subnets, "ec2", "describe-subnets")
	if len(subnets.Subnets) != 3 {
		t.Fatalf("want 3 default subnets, got %+v", subnets)
	}
	sort.Slice(subnets.Subnets, func(i, j int) bool { return subnets.Subnets[i].AvailabilityZone < subnets.Subnets[j].AvailabilityZone })
	for i, sn := range subnets.Subnets {
		wantCIDR := fmt.Sprintf("172.31.%d.0/20", 16*i)
		wantAZ := region + string(rune('a'+i))
		if sn.CidrBlock != wantCIDR || sn.AvailabilityZone != wantAZ || sn.VpcId != v.VpcId || !sn.DefaultForAz ||
			!sn.MapPublicIpOnLaunch || sn.AvailableIpAddressCount != 4091 || sn.State != "available" || sn.OwnerId != account ||
			sn.SubnetArn != fmt.Sprintf("arn:aws:ec2:%s:%s:subnet/%s", region, account, sn.SubnetId) ||
			!regexp.MustCompile(`^subnet-[0-9a-f]{17}$`).MatchString(sn.SubnetId) || !strings.HasSuffix(sn.AvailabilityZoneId, fmt.Sprintf("-az%d", i+1)) {
			t.Errorf("subnet %d: %+v", i, sn)
		}
	}

	var groups struct{ SecurityGroups []ec2Group }
	s.MustAWS(&groups, "ec2", "describe-security-groups")
	if len(groups.SecurityGroups) != 1 {
		t.Fatalf("want one security group, got %+v", groups)
	}
	g := groups.SecurityGroups[0]
	if g.GroupName != "default" || g.Description != "default VPC security group" || g.VpcId != v.VpcId || g.OwnerId != account ||
		len(g.IpPermissions) != 1 || g.IpPermissions[0].IpProtocol != "-1" || len(g.IpPermissions[0].UserIdGroupPairs) != 1 ||
		g.IpPermissions[0].UserIdGroupPairs[0].GroupId != g.GroupId || len(g.IpPermissionsEgress) != 1 ||
		g.IpPermissionsEgress[0].IpProtocol != "-1" || len(g.IpPermissionsEgress[0].IpRanges) != 1 || g.IpPermissionsEgress[0].IpRanges[0].CidrIp != "0.0.0.0/0" {
		t.Fatalf("default security group: %+v", g)
	}

	// Restarting keeps the same default VPC rather than making another.
	s.Restart()
	var again struct{ Vpcs []ec2Vpc }
	s.MustAWS(&again, "ec2", "describe-vpcs")
	if len(again.Vpcs) != 1 || again.Vpcs[0].VpcId != v.VpcId {
		t.Fatalf("after restart: %+v, want only %s", again, v.VpcId)
	}
	var sg2 struct{ SecurityGroups []ec2Group }
	s.MustAWS(&sg2, "ec2", "describe-security-groups", "--group-names", "default")
	if len(sg2.SecurityGroups) != 1 || sg2.SecurityGroups[0].GroupId != g.GroupId {
		t.Fatalf("by name after restart: %+v", sg2)
	}

	t.Run("ids and filters", func(t *testing.T) {
		var out struct{ Subnets []ec2Subnet }
		s.MustAWS(&out, "ec2", "describe-subnets", "--subnet-ids", subnets.Subnets[1].SubnetId)
		if len(out.Subnets) != 1 || out.Subnets[0].SubnetId != subnets.Subnets[1].SubnetId {
			t.Errorf("by id: %+v", out)
		}
		out.Subnets = nil
		s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true", "Name=availability-zone,Values="+region+"c")
		if len(out.Subnets) != 1 || out.Subnets[0].AvailabilityZone != region+"c" {
			t.Errorf("default-for-az + availability-zone: %+v", out)
		}
		out.Subnets = nil
		s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=vpc-id,Values="+v.VpcId, "Name=cidr-block,Values=172.31.1*")
		if len(out.Subnets) != 1 || out.Subnets[0].CidrBlock != "172.31.16.0/20" {
			t.Errorf("wildcard cidr filter: %+v", out)
		}
		out.Subnets = nil
		s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=vpc-id,Values=vpc-00000000000000000")
		if len(out.Subnets) != 0 {
			t.Errorf("other vpc: %+v", out)
		}
		out.Subnets = nil
		s.MustAWS(&out, "ec2", "describe-subnets", "--filters", "Name=tag:Name,Values=x")
		if len(out.Subnets) != 0 {
			t.Errorf("untagged subnets matched a tag filter: %+v", out)
		}

		var vo struct{ Vpcs []ec2Vpc }
		s.MustAWS(&vo, "ec2", "describe-vpcs", "--filters", "Name=isDefault,Values=true")
		if len(vo.Vpcs) != 1 {
			t.Errorf("isDefault filter: %+v", vo)
		}
		vo.Vpcs = nil
		s.MustAWS(&vo, "ec2", "describe-vpcs", "--filters", "Name=is-default,Values=false")
		if len(vo.Vpcs) != 0 {
			t.Errorf("is-default=false: %+v", vo)
		}
		vo.Vpcs = nil
		s.MustAWS(&vo, "ec2", "describe-vpcs", "--vpc-ids", v.VpcId)
		if len(vo.Vpcs) != 1 {
			t.Errorf("by vpc id: %+v", vo)
		}

		var go_ struct{ SecurityGroups []ec2Group }
		s.MustAWS(&go_, "ec2", "describe-security-groups", "--group-ids", g.GroupId)
		if len(go_.SecurityGroups) != 1 {
			t.Errorf("by group id: %+v", go_)
		}
		go_.SecurityGroups = nil
		s.MustAWS(&go_, "ec2", "describe-security-groups", "--filters", "Name=group-name,Values=default", "Name=vpc-id,Values="+v.VpcId)
		if len(go_.SecurityGroups) != 1 {
			t.Errorf("group-name + vpc-id filter: %+v", go_)
		}
		go_.SecurityGroups = nil
		s.MustAWS(&go_, "ec2", "describe-security-groups", "--filters", "Name=group-id,Values="+g.GroupId[:5]+"*")
		if len(go_.SecurityGroups) != 1 {
			t.Errorf("group-id wildcard: %+v", go_)
		}
	})

	t.Run("pagination", func(t *testing.T) {
		var seen []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			args := []string{"ec2", "describe-subnets", "--no-paginate", "--max-results", "5"}
			if token != "" {
				args = append(args, "--next-token", token)
			}
			var out struct {
				Subnets   []ec2Subnet
				NextToken string
			}
			s.MustAWS(&out, args...)
			for _, sn := range out.Subnets {
				seen = append(seen, sn.SubnetId)
			}
			if token = out.NextToken; token == "" {
				break
			}
		}
		if len(seen) != 3 {
			t.Fatalf("paged subnets: %v", seen)
		}
		// The CLI's own paginator follows the tokens too.
		var all struct{ Subnets []ec2Subnet }
		s.MustAWS(&all, "ec2", "describe-subnets", "--page-size", "5")
		if len(all.Subnets) != 3 {
			t.Fatalf("CLI paginator: %+v", all)
		}
		// The CLI refuses MaxResults below 5 itself; boto3 without client
		// validation shows what the server says.
		out, err := s.Python(`
import boto3, botocore.config, botocore.exceptions
c = boto3.client("ec2", config=botocore.config.Config(parameter_validation=False))
try:
    c.describe_subnets(MaxResults=2)
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
`)
		if err != nil || strings.TrimSpace(out) != "InvalidParameterValue" {
			t.Errorf("max-results 2: %v %s", err, out)
		}
		code, _ := s.AWSError("ec2", "describe-subnets", "--no-paginate", "--max-results", "5", "--subnet-ids", subnets.Subnets[0].SubnetId)
		if code != "InvalidParameterCombination" {
			t.Errorf("max-results with ids: %q", code)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code string
			msg  string
		}{
			{[]string{"describe-vpcs", "--vpc-ids", "vpc-0123456789abcdef0"}, "InvalidVpcID.NotFound", "The vpc ID 'vpc-0123456789abcdef0' does not exist"},
			{[]string{"describe-subnets", "--subnet-ids", "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound", "The subnet ID 'subnet-0123456789abcdef0' does not exist"},
			{[]string{"describe-subnets", "--subnet-ids", "subnet-1", "subnet-2"}, "InvalidSubnetID.NotFound", "The subnet IDs 'subnet-1, subnet-2' do not exist"},
			{[]string{"describe-security-groups", "--group-ids", "sg-0123456789abcdef0"}, "InvalidGroup.NotFound", "The security group 'sg-0123456789abcdef0' does not exist"},
			{[]string{"describe-security-groups", "--group-names", "nope"}, "InvalidGroup.NotFound", "The security group 'nope' does not exist in default VPC '" + v.VpcId + "'"},
			{[]string{"describe-security-groups", "--group-ids", "nope"}, "InvalidGroupId.Malformed", `Invalid id: "nope"`},
			{[]string{"describe-subnets", "--filters", "Name=bogus,Values=x"}, "InvalidParameterValue", "The filter 'bogus' is invalid"},
			{[]string{"describe-availability-zones", "--zone-names", "mars-1a"}, "InvalidParameterValue", "mars-1a"},
			{[]string{"describe-vpcs", "--dry-run"}, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."},
		} {
			code, msg := s.AWSError(append([]string{"ec2"}, c.args...)...)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("%v: got %s %q, want %s %q", c.args, code, msg, c.code, c.msg)
			}
		}
	})

	t.Run("availability zones and account attributes", func(t *testing.T) {
		var az struct {
			AvailabilityZones []struct {
				ZoneName, ZoneId, State, RegionName, ZoneType, OptInStatus string
			}
		}
		s.MustAWS(&az, "ec2", "describe-availability-zones")
		if len(az.AvailabilityZones) != 3 || az.AvailabilityZones[0].ZoneName != region+"a" || az.AvailabilityZones[0].State != "available" ||
			az.AvailabilityZones[0].RegionName != region || az.AvailabilityZones[0].ZoneType != "availability-zone" {
			t.Errorf("zones: %+v", az)
		}
		az.AvailabilityZones = nil
		s.MustAWS(&az, "ec2", "describe-availability-zones", "--zone-names", region+"b")
		if len(az.AvailabilityZones) != 1 || az.AvailabilityZones[0].ZoneName != region+"b" {
			t.Errorf("zone by name: %+v", az)
		}
		var attrs struct {
			AccountAttributes []struct {
				AttributeName   string
				AttributeValues []struct{ AttributeValue string }
			}
		}
		s.MustAWS(&attrs, "ec2", "describe-account-attributes", "--attribute-names", "default-vpc")
		if len(attrs.AccountAttributes) != 1 || attrs.AccountAttributes[0].AttributeValues[0].AttributeValue != v.VpcId {
			t.Errorf("default-vpc attribute: %+v", attrs)
		}
	})

	t.Run("auth errors", func(t *testing.T) {
		out, err := s.Python(`
import boto3, botocore.exceptions
import os
c = boto3.client("ec2", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong")
try:
    c.describe_vpcs()
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
c = boto3.client("ec2", aws_access_key_id="AKIANOTAKEY000000000", aws_secret_access_key="x")
try:
    c.describe_vpcs()
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
`)
		if err != nil || strings.Fields(out)[0] != "SignatureDoesNotMatch" || strings.Fields(out)[1] != "AuthFailure" {
			t.Fatalf("auth errors: %v %s", err, out)
		}
	})
}

// TestEC2OtherRegion checks that a region other than the server's gets its
// own default VPC on first use, as every AWS region of an account has one.
func TestEC2OtherRegion(t *testing.T) {
	s := testenv.Start(t)
	var home, other struct{ Vpcs []ec2Vpc }
	s.MustAWS(&home, "ec2", "describe-vpcs")
	s.MustAWS(&other, "ec2", "describe-vpcs", "--region", "eu-west-1")
	if len(other.Vpcs) != 1 || other.Vpcs[0].VpcId == home.Vpcs[0].VpcId {
		t.Fatalf("eu-west-1 VPCs %+v, home %+v", other, home)
	}
	var subnets struct{ Subnets []ec2Subnet }
	s.MustAWS(&subnets, "ec2", "describe-subnets", "--region", "eu-west-1", "--filters", "Name=availability-zone,Values=eu-west-1a")
	if len(subnets.Subnets) != 1 || subnets.Subnets[0].AvailabilityZoneId != "euw1-az1" {
		t.Fatalf("eu-west-1a subnet: %+v", subnets)
	}
}
