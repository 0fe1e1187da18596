package ec2

import (
	"context"
	"encoding/xml"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// FuzzQuery feeds arbitrary form bodies to every EC2 action against a real
// store: no panic, no 5xx (clients would retry a request that can never
// succeed), and every answer well-formed XML, an error one with a code.
func FuzzQuery(f *testing.F) {
	for _, seed := range []string{
		"Action=DescribeVpcs&Filter.1.Name=tag:Name&Filter.1.Value.1=a*",
		"Action=CreateVpc&CidrBlock=10.1.0.0/16&TagSpecification.1.ResourceType=vpc&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v",
		"Action=CreateSubnet&VpcId=vpc-1&CidrBlock=10.1.1.0/24&AvailabilityZoneId=use1-az2",
		"Action=CreateSecurityGroup&GroupName=g&GroupDescription=d",
		"Action=AuthorizeSecurityGroupIngress&GroupName=default&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=80&IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0/0",
		"Action=AuthorizeSecurityGroupEgress&GroupName=default&IpPermissions.1.IpProtocol=icmp&IpPermissions.1.FromPort=-1&IpPermissions.1.Groups.1.GroupName=default",
		"Action=RevokeSecurityGroupIngress&GroupName=default&IpProtocol=-1&SourceSecurityGroupName=default",
		"Action=RevokeSecurityGroupEgress&GroupName=default&SecurityGroupRuleId.1=sgr-1",
		"Action=DescribeSecurityGroupRules&MaxResults=5&NextToken=c2dyLQ",
		"Action=DescribeNetworkInterfaces&NetworkInterfaceId.1=eni-1",
		"Action=CreateTags&ResourceId.1=sg-1&Tag.1.Key=a&Tag.1.Value=b",
		"Action=DeleteTags&ResourceId.1=vpc-1&Tag.1.Key=a",
		"Action=DescribeTags&Filter.1.Name=resource-type&Filter.1.Value.1=vpc",
		"Action=DeleteSecurityGroup&GroupName=default",
		"Action=DeleteVpc&VpcId=vpc-1",
		"Action=DeleteSubnet&SubnetId=subnet-1",
	} {
		f.Add(seed)
	}
	store, err := state.OpenSQLite(filepath.Join(f.TempDir(), "state.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	svc := &Service{Store: store, DefaultVPCCIDR: "10.77.0.0/16"}
	ctx := awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: "000000000000", Region: "us-east-1", Service: "ec2"})
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return // the router answers MalformedQueryString before us
		}
		r := httptest.NewRequest("POST", "/", strings.NewReader(body)).WithContext(ctx)
		w := httptest.NewRecorder()
		svc.ServeQuery(w, r, form)
		if w.Code >= 500 {
			t.Fatalf("%q: status %d: %s", body, w.Code, w.Body)
		}
		var doc struct {
			XMLName xml.Name
			Errors  []struct{ Code string } `xml:"Errors>Error"`
		}
		if err := xml.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%q: answer is not XML: %v\n%s", body, err, w.Body)
		}
		if w.Code != 200 && (len(doc.Errors) != 1 || doc.Errors[0].Code == "") {
			t.Fatalf("%q: error %d without a code: %s", body, w.Code, w.Body)
		}
	})
}
