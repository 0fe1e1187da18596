package iam

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// TestEvaluate follows the cases of AWS's "Policy evaluation logic" for
// identity-based policies in one account: default deny, an Allow allows,
// an explicit Deny anywhere wins; Action/Resource wildcards; NotAction and
// NotResource.
func TestEvaluate(t *testing.T) {
	const cluster = "arn:aws:ecs:us-east-1:123456789012:cluster/prod-a"
	cases := []struct {
		name             string
		policies         []string
		action, resource string
		want             Decision
	}{
		{"no policy: implicit deny", nil, "ecs:ListClusters", "*", ImplicitDeny},
		{"allow matches", []string{`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"}}`}, "ecs:ListClusters", "*", Allow},
		{"allow for another action only", []string{`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"}}`}, "ecs:CreateCluster", "*", ImplicitDeny},
		{"action prefix wildcard", []string{`{"Statement":[{"Effect":"Allow","Action":["ecs:List*","ecs:Describe*"],"Resource":"*"}]}`}, "ecs:ListTasks", "*", Allow},
		{"action wildcard does not cross services", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]}`}, "ecr:ListImages", "*", ImplicitDeny},
		{"actions are case-insensitive", []string{`{"Statement":[{"Effect":"Allow","Action":"ECS:listclusters","Resource":"*"}]}`}, "ecs:ListClusters", "*", Allow},
		{"? matches one character", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:ListTask?","Resource":"*"}]}`}, "ecs:ListTasks", "*", Allow},
		{"? needs exactly one", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:ListTask?","Resource":"*"}]}`}, "ecs:ListTask", "*", ImplicitDeny},
		{"* allows everything", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`}, "iam:CreateUser", "*", Allow},
		{"explicit deny in the same policy wins", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:CreateCluster","Resource":"*"}]}`}, "ecs:CreateCluster", "*", ExplicitDeny},
		{"explicit deny in another policy wins", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`,
			`{"Statement":[{"Effect":"Deny","Action":"ecs:Delete*","Resource":"*"}]}`}, "ecs:DeleteCluster", "*", ExplicitDeny},
		{"deny of other actions leaves an allow", []string{
			`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`,
			`{"Statement":[{"Effect":"Deny","Action":"ecs:Delete*","Resource":"*"}]}`}, "ecs:CreateCluster", "*", Allow},
		{"deny alone is still a deny", []string{`{"Statement":[{"Effect":"Deny","Action":"ecs:ListClusters","Resource":"*"}]}`}, "ecs:ListClusters", "*", ExplicitDeny},
		{"resource wildcard matches", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:123456789012:cluster/prod-*"}]}`}, "ecs:DescribeClusters", cluster, Allow},
		{"resource wildcard misses", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:123456789012:cluster/dev-*"}]}`}, "ecs:DescribeClusters", cluster, ImplicitDeny},
		{"resources are case-sensitive", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:123456789012:cluster/PROD-*"}]}`}, "ecs:DescribeClusters", cluster, ImplicitDeny},
		{"a specific resource does not match an unknown (*) resource", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"` + cluster + `"}]}`}, "ecs:ListClusters", "*", ImplicitDeny},
		{"NotAction allow: everything but IAM", []string{`{"Statement":[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]}`}, "ecs:RunTask", "*", Allow},
		{"NotAction allow: not IAM itself", []string{`{"Statement":[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]}`}, "iam:CreateUser", "*", ImplicitDeny},
		{"NotAction deny: deny all but ecs", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"ecs:*","Resource":"*"}]}`}, "logs:GetLogEvents", "*", ExplicitDeny},
		{"NotResource deny spares the named resource", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:*","NotResource":"` + cluster + `"}]}`}, "ecs:DescribeClusters", cluster, Allow},
		{"NotResource deny hits others", []string{`{"Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:*","NotResource":"` + cluster + `"}]}`}, "ecs:DescribeClusters", "arn:aws:ecs:us-east-1:123456789012:cluster/dev", ExplicitDeny},
		{"an Allow with a Condition Gantry cannot evaluate does not allow", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}`}, "ecs:ListClusters", "*", ImplicitDeny},
		{"a Deny whose condition key is absent does not apply (AWS: use ...IfExists)", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}]}`}, "ecs:ListClusters", "*", Allow},
		{"BoolIfExists denies when the key is absent", []string{`{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}`}, "ecs:ListClusters", "*", ExplicitDeny},
	}
	for _, c := range cases {
		var pols []*Policy
		for _, d := range c.policies {
			p, err := ParsePolicy(d, false)
			if err != nil {
				t.Fatalf("%s: parse %s: %v", c.name, d, err)
			}
			pols = append(pols, p)
		}
		if got := Evaluate(pols, c.action, c.resource); got != c.want {
			t.Errorf("%s: %s on %s = %v, want %v", c.name, c.action, c.resource, got, c.want)
		}
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, doc := range []string{
		``, `not json`, `[]`, `{}`,
		`{"Version":"2012-10-17"}`,
		`{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`,
		`{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"ListClusters","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"cluster/x"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","NotAction":"ecs:*","Resource":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}}`,
		`{"Statement":{"Effect":"Allow","Action":7,"Resource":"*"}}`,
	} {
		_, err := ParsePolicy(doc, false)
		if e := awsapi.AsError(err); err == nil || e.Code != "MalformedPolicyDocument" {
			t.Errorf("ParsePolicy(%q) = %v, want MalformedPolicyDocument", doc, err)
		}
	}
	if _, err := ParsePolicy(`{"Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}}`, true); err == nil {
		t.Error("a trust policy without Principal was accepted")
	}
}

func TestTrust(t *testing.T) {
	task := &Role{AssumeRolePolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}`}
	if !task.TrustsService("ecs-tasks.amazonaws.com", nil) || task.TrustsService("ec2.amazonaws.com", nil) {
		t.Error("task role trust is wrong")
	}
	p, err := ParsePolicy(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"sts:AssumeRole"}]}`, true)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Trusts("AWS", "arn:aws:iam::111111111111:user/alice", "111111111111", "sts:AssumeRole", nil) {
		t.Error("an account's root principal should trust its users")
	}
	if p.Trusts("AWS", "arn:aws:iam::222222222222:root", "222222222222", "sts:AssumeRole", nil) {
		t.Error("another account was trusted")
	}
}
