package test

import (
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

// TestPolicyConditions: conditions over the keys Gantry states about a
// real request (the CLI's source address, region, transport, user name)
// are evaluated, and an unknown operator is refused when the policy is put.
func TestPolicyConditions(t *testing.T) {
	s := testenv.Start(t)
	s.MustAWS(nil, "iam", "create-user", "--user-name", "carol")
	put := func(name, doc string) {
		s.MustAWS(nil, "iam", "put-user-policy", "--user-name", "carol", "--policy-name", name, "--policy-document", doc)
	}
	// Allowed from loopback only, as carol, and never outside us-east-1
	// or over plain HTTP to IAM.
	put("from-here", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":["ecs:List*","iam:GetUser"],"Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.0/8"},"StringEquals":{"aws:username":"carol"}}},
		{"Effect":"Allow","Action":"ecs:DescribeClusters","Resource":"*","Condition":{"NotIpAddress":{"aws:SourceIp":"127.0.0.0/8"}}},
		{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringNotEquals":{"aws:RequestedRegion":"us-east-1"}}},
		{"Effect":"Deny","Action":"iam:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}`)
	var ak struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	s.MustAWS(&ak, "iam", "create-access-key", "--user-name", "carol")
	carol := keyPair{id: ak.AccessKey.AccessKeyId, secret: ak.AccessKey.SecretAccessKey}

	mustAs(t, s, carol, nil, "ecs", "list-clusters", "--region", "us-east-1")
	if e := errAs(t, s, carol, "ecs", "describe-clusters", "--region", "us-east-1"); !strings.Contains(e, "AccessDeniedException") || !strings.Contains(e, "no identity-based policy allows") {
		t.Errorf("an allow for other source addresses allowed loopback: %s", e)
	}
	if e := errAs(t, s, carol, "ecs", "list-clusters", "--region", "eu-west-1"); !strings.Contains(e, "AccessDeniedException") || !strings.Contains(e, "explicit deny") {
		t.Errorf("the region deny did not apply: %s", e)
	}
	if e := errAs(t, s, carol, "iam", "get-user"); !strings.Contains(e, "(AccessDenied)") || !strings.Contains(e, "explicit deny") {
		t.Errorf("the plain-HTTP deny did not apply: %s", e)
	}

	for _, bad := range []string{
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualz":{"aws:username":"carol"}}}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"not-an-ip"}}}}`,
	} {
		if code, msg := s.AWSError("iam", "put-user-policy", "--user-name", "carol", "--policy-name", "bad", "--policy-document", bad); code != "MalformedPolicyDocument" {
			t.Errorf("put-user-policy %s: %s %s", bad, code, msg)
		}
	}
	s.MustAWS(nil, "iam", "create-role", "--role-name", "r", "--assume-role-policy-document", ecsTasksTrust)
	if code, _ := s.AWSError("iam", "put-role-policy", "--role-name", "r", "--policy-name", "bad", "--policy-document",
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"whenever"}}}}`); code != "MalformedPolicyDocument" {
		t.Errorf("put-role-policy with a bad date: %s", code)
	}
}
