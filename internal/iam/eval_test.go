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

// TestPolicyVariables follows IAM's policy reference on variables: in
// Resource and in string/ARN condition values, resolved from the
// request's keys; defaults; the ${*} ${?} ${$} escapes; nothing in a
// 2008-10-17 policy; no value: no match.
func TestPolicyVariables(t *testing.T) {
	const acct = "123456789012"
	alice := principalContext(acct, "arn:aws:iam::"+acct+":user/alice", "AIDAALICE", "User", "alice")
	alice["aws:sourceip"] = []string{"10.1.2.3"}
	role := principalContext(acct, "arn:aws:iam::"+acct+":role/app", "AROAAPP:task1", "AssumedRole", "")
	cluster := func(name string) string { return "arn:aws:ecs:us-east-1:" + acct + ":cluster/" + name }
	own := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:${aws:PrincipalAccount}:cluster/${aws:username}-*"}}`
	cases := []struct {
		name     string
		policy   string
		ctx      map[string][]string
		resource string
		want     Decision
	}{
		{"${aws:username} in Resource: own cluster", own, alice, cluster("alice-dev"), Allow},
		{"${aws:username} in Resource: another's", own, alice, cluster("bob-dev"), ImplicitDeny},
		{"${aws:PrincipalAccount} in Resource: another account", own, alice, "arn:aws:ecs:us-east-1:210987654321:cluster/alice-dev", ImplicitDeny},
		{"a role has no aws:username: the Resource matches nothing", own, role, cluster("-dev"), ImplicitDeny},
		{"names are case-insensitive, spaces ignored", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${ AWS:UserName }"}}`, alice, cluster("alice"), Allow},
		{"a default stands in for a missing key", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username, 'shared'}"}}`, role, cluster("shared"), Allow},
		{"the default is not used when the key is there", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username, 'shared'}"}}`, alice, cluster("shared"), ImplicitDeny},
		{"'' in a default is one quote", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username, 'it''s'}"}}`, role, cluster("it's"), Allow},
		{"${*} is a literal star", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/a${*}"}}`, alice, cluster("a*"), Allow},
		{"${*} is no wildcard", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/a${*}"}}`, alice, cluster("abc"), ImplicitDeny},
		{"${?} is a literal question mark", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/a${?}"}}`, alice, cluster("ab"), ImplicitDeny},
		{"${$} is a literal dollar", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${$}{aws:username}"}}`, alice, cluster("${aws:username}"), Allow},
		{"2008-10-17: variables are literal text", `{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username}"}}`, alice, cluster("alice"), ImplicitDeny},
		{"no Version: variables are literal text", `{"Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username}"}}`, alice, cluster("${aws:username}"), Allow},
		{"an unterminated variable is literal", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username"}}`, alice, cluster("${aws:username"), Allow},
		{"in a StringEquals condition", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringEquals":{"aws:userid":"${aws:userid}"}}}}`, alice, "*", Allow},
		{"in a StringLike condition, with wildcards around it", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/${aws:username}"}}}}`, alice, "*", Allow},
		{"in an ArnLike condition", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::${aws:PrincipalAccount}:role/*"}}}}`, role, "*", Allow},
		{"a Deny on another's user id leaves one's own", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalArn":"arn:aws:iam::${aws:PrincipalAccount}:user/${aws:username}"}}}]}`, alice, "*", Allow},
		{"StringNotEquals against a missing variable holds: the Deny applies", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"},{"Effect":"Deny","Action":"ecs:*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalArn":"arn:aws:iam::${aws:PrincipalAccount}:user/${aws:username}"}}}]}`, role, "*", ExplicitDeny},
		{"${aws:SourceIp} in a condition", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/ip-${aws:SourceIp}"}}`, alice, cluster("ip-10.1.2.3"), Allow},
		{"a value substituted is literal: no wildcard from the request", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username}"}}`, map[string][]string{"aws:username": {"a*"}}, cluster("abc"), ImplicitDeny},
		{"a multivalued key is no variable", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecs:*","Resource":"arn:aws:ecs:*:*:cluster/${aws:username}"}}`, map[string][]string{"aws:username": {"a", "b"}}, cluster("a"), ImplicitDeny},
	}
	for _, c := range cases {
		p, err := ParsePolicy(c.policy, false)
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		if got := EvaluateRequest([]*Policy{p}, Request{Action: "ecs:DescribeClusters", Resource: c.resource, Context: c.ctx}); got != c.want {
			t.Errorf("%s: %s = %v, want %v", c.name, c.resource, got, c.want)
		}
	}
}
