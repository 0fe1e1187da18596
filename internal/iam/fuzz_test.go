package iam

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// FuzzParsePolicy: any document is either parsed, and then evaluates
// without panicking, or refused with an AWS error code.
func FuzzParsePolicy(f *testing.F) {
	f.Add(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`)
	f.Add(`{"Statement":{"Effect":"Deny","NotAction":"iam:*","NotResource":"arn:aws:ecs:*:*:cluster/x","Condition":{"ForAllValues:StringLike":{"aws:username":["a*","?b"]},"DateLessThanEquals":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}}`)
	f.Add(`{"Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:SourceAccount":"123456789012"}}}]}`)
	f.Fuzz(func(t *testing.T, doc string) {
		ctx := map[string][]string{"aws:username": {"alice"}, "aws:sourceip": {"10.1.2.3"}, "aws:currenttime": {"2026-01-01T00:00:00Z"}, "aws:epochtime": {"1767225600"}}
		for _, trust := range []bool{false, true} {
			p, err := ParsePolicy(doc, trust)
			if err != nil {
				if e := awsapi.AsError(err); e.Code != "MalformedPolicyDocument" && e.Code != "LimitExceeded" {
					t.Fatalf("ParsePolicy(%q): %v", doc, err)
				}
				continue
			}
			if trust {
				p.Trusts("Service", "ecs-tasks.amazonaws.com", "", "sts:AssumeRole", ctx)
			} else {
				EvaluateRequest([]*Policy{p}, Request{Action: "ecs:ListClusters", Resource: "arn:aws:ecs:us-east-1:123456789012:cluster/x", Context: ctx})
			}
		}
	})
}

// FuzzPolicyVariables: any Resource or condition value, variables and
// all, resolves and matches without panicking, and text without "${"
// matches as it always did.
func FuzzPolicyVariables(f *testing.F) {
	for _, s := range []string{"arn:aws:ecs:*:${aws:PrincipalAccount}:cluster/${aws:username}-*", "${aws:username, 'it''s'}", "${*}${?}${$}", "${", "${,}", "${ a , 'b' }", "${aws:username, 'x}"} {
		f.Add(s, "arn:aws:ecs:us-east-1:123456789012:cluster/alice-dev")
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		ctx := map[string][]string{"aws:username": {"alice"}, "aws:principalaccount": {"123456789012"}, "aws:multi": {"a", "b"}}
		matchPolicyString(pattern, s, ctx, true)
		resolveLiteral(pattern, ctx, true)
		// Without variables the rune matcher agrees with Wildcard.
		if p, ok := expand(pattern, ctx, false, true); ok && isASCII(pattern+s) && matchExpanded(p, s) != Wildcard(pattern, s) {
			t.Fatalf("%q ~ %q: matchExpanded %v, Wildcard %v", pattern, s, !Wildcard(pattern, s), Wildcard(pattern, s))
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
