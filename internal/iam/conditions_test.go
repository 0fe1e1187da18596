package iam

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// TestConditions follows the condition examples of AWS's IAM documentation
// ("IAM JSON policy elements: Condition operators" and the example
// policies for aws:SourceIp, aws:CurrentTime, aws:SecureTransport and
// aws:RequestedRegion) over the global keys Gantry supplies.
func TestConditions(t *testing.T) {
	alice := map[string][]string{
		"aws:username": {"alice"}, "aws:userid": {"AIDAEXAMPLE"}, "aws:principalarn": {"arn:aws:iam::123456789012:user/alice"},
		"aws:principalaccount": {"123456789012"}, "aws:principaltype": {"User"}, "aws:sourceip": {"192.0.2.10"},
		"aws:currenttime": {"2020-05-15T12:00:00Z"}, "aws:epochtime": {"1589544000"}, "aws:securetransport": {"false"},
		"aws:requestedregion": {"us-east-1"},
	}
	role := map[string][]string{
		"aws:userid": {"AROAEXAMPLE:task"}, "aws:principalarn": {"arn:aws:iam::123456789012:role/app-web"},
		"aws:principalaccount": {"123456789012"}, "aws:principaltype": {"AssumedRole"}, "aws:sourceip": {"198.51.100.7"},
		"aws:currenttime": {"2021-01-01T00:00:00Z"}, "aws:securetransport": {"true"}, "aws:requestedregion": {"ap-south-1"},
	}
	allowIf := func(cond string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*","Condition":` + cond + `}]}`
	}
	denyIf := func(cond string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*","Condition":` + cond + `}]}`
	}
	cases := []struct {
		name   string
		policy string
		ctx    map[string][]string
		want   Decision
	}{
		{"StringEquals on aws:username matches", allowIf(`{"StringEquals":{"aws:username":"alice"}}`), alice, Allow},
		{"StringEquals on aws:username misses", allowIf(`{"StringEquals":{"aws:username":"bob"}}`), alice, ImplicitDeny},
		{"several values are OR-ed", allowIf(`{"StringEquals":{"aws:username":["bob","alice"]}}`), alice, Allow},
		{"several keys are AND-ed", allowIf(`{"StringEquals":{"aws:username":"alice","aws:principaltype":"AssumedRole"}}`), alice, ImplicitDeny},
		{"condition keys are case-insensitive", allowIf(`{"StringEquals":{"AWS:UserName":"alice"}}`), alice, Allow},
		{"string values are case-sensitive", allowIf(`{"StringEquals":{"aws:username":"Alice"}}`), alice, ImplicitDeny},
		{"StringEqualsIgnoreCase", allowIf(`{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}`), alice, Allow},
		{"a key the request lacks fails a condition", allowIf(`{"StringEquals":{"aws:username":"alice"}}`), role, ImplicitDeny},
		{"StringNotEquals with the key absent holds", allowIf(`{"StringNotEquals":{"aws:username":"alice"}}`), role, Allow},
		{"StringNotEquals with the value present fails", allowIf(`{"StringNotEquals":{"aws:username":"alice"}}`), alice, ImplicitDeny},
		{"StringLike with *", allowIf(`{"StringLike":{"aws:userid":"AIDA*"}}`), alice, Allow},
		{"StringNotLike with *", allowIf(`{"StringNotLike":{"aws:userid":"AIDA*"}}`), role, Allow},
		{"StringEqualsIfExists holds when absent", allowIf(`{"StringEqualsIfExists":{"aws:username":"bob"}}`), role, Allow},
		{"StringEqualsIfExists still tests a present key", allowIf(`{"StringEqualsIfExists":{"aws:username":"bob"}}`), alice, ImplicitDeny},
		{"ArnLike on aws:PrincipalArn", allowIf(`{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"}}`), role, Allow},
		{"ArnEquals misses another principal", allowIf(`{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::123456789012:role/app-web"}}`), alice, ImplicitDeny},
		{"ArnNotLike", allowIf(`{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}`), alice, Allow},
		// Denies access to AWS based on the source IP (AWS's example).
		{"NotIpAddress deny spares the listed ranges", denyIf(`{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}`), alice, Allow},
		{"NotIpAddress deny hits other addresses", denyIf(`{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24"]}}`), role, ExplicitDeny},
		{"IpAddress with a single address", allowIf(`{"IpAddress":{"aws:SourceIp":"198.51.100.7"}}`), role, Allow},
		// Allows access within specific dates (AWS's example).
		{"within the dates", allowIf(`{"DateGreaterThan":{"aws:CurrentTime":"2020-04-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2020-06-30T23:59:59Z"}}`), alice, Allow},
		{"after the dates", allowIf(`{"DateGreaterThan":{"aws:CurrentTime":"2020-04-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2020-06-30T23:59:59Z"}}`), role, ImplicitDeny},
		{"DateLessThanEquals with epoch seconds", allowIf(`{"DateLessThanEquals":{"aws:CurrentTime":"1589544000"}}`), alice, Allow},
		{"NumericLessThan on aws:EpochTime", allowIf(`{"NumericLessThan":{"aws:EpochTime":1600000000}}`), alice, Allow},
		{"NumericGreaterThanEquals on aws:EpochTime misses", allowIf(`{"NumericGreaterThanEquals":{"aws:EpochTime":"1600000000"}}`), alice, ImplicitDeny},
		{"NumericEquals", allowIf(`{"NumericEquals":{"aws:EpochTime":"1589544000.0"}}`), alice, Allow},
		// Denies requests not sent over TLS (AWS's aws:SecureTransport example).
		{"Bool deny of plain HTTP", denyIf(`{"Bool":{"aws:SecureTransport":"false"}}`), alice, ExplicitDeny},
		{"Bool deny spares TLS", denyIf(`{"Bool":{"aws:SecureTransport":false}}`), role, Allow},
		// Denies access to AWS based on the requested Region (AWS's example).
		{"StringNotEquals region deny spares the listed", denyIf(`{"StringNotEquals":{"aws:RequestedRegion":["eu-central-1","us-east-1"]}}`), alice, Allow},
		{"StringNotEquals region deny hits others", denyIf(`{"StringNotEquals":{"aws:RequestedRegion":["eu-central-1","us-east-1"]}}`), role, ExplicitDeny},
		{"Null true: key absent", allowIf(`{"Null":{"aws:username":"true"}}`), role, Allow},
		{"Null true: key present", allowIf(`{"Null":{"aws:username":"true"}}`), alice, ImplicitDeny},
		{"Null false: key present", allowIf(`{"Null":{"aws:username":"false"}}`), alice, Allow},
		{"aws:PrincipalAccount", allowIf(`{"StringEquals":{"aws:PrincipalAccount":"123456789012"}}`), role, Allow},
		{"ForAnyValue with the key absent fails", allowIf(`{"ForAnyValue:StringEquals":{"aws:username":"alice"}}`), role, ImplicitDeny},
		{"ForAnyValue matches one", allowIf(`{"ForAnyValue:StringEquals":{"aws:username":["x","alice"]}}`), alice, Allow},
		{"ForAllValues with the key absent holds", allowIf(`{"ForAllValues:StringEquals":{"aws:username":"alice"}}`), role, Allow},
		{"ForAllValues with a value outside fails", allowIf(`{"ForAllValues:StringEquals":{"aws:username":"bob"}}`), alice, ImplicitDeny},
	}
	for _, c := range cases {
		p, err := ParsePolicy(c.policy, false)
		if err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		if got := EvaluateRequest([]*Policy{p}, Request{Action: "ecs:ListClusters", Resource: "*", Context: c.ctx}); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestConditionsRejected(t *testing.T) {
	for _, cond := range []string{
		`{"StringEqualz":{"aws:username":"a"}}`,
		`{"ForSomeValues:StringEquals":{"aws:username":"a"}}`,
		`{"NullIfExists":{"aws:username":"true"}}`,
		`{"NumericLessThan":{"aws:EpochTime":"soon"}}`,
		`{"DateGreaterThan":{"aws:CurrentTime":"yesterday"}}`,
		`{"IpAddress":{"aws:SourceIp":"300.1.2.3/8"}}`,
		`{"Bool":{"aws:SecureTransport":"maybe"}}`,
		`{"StringEquals":{"aws:username":[]}}`,
		`{"StringEquals":{"aws:username":{"a":"b"}}}`,
		`{"StringEquals":"aws:username"}`,
	} {
		doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":` + cond + `}]}`
		_, err := ParsePolicy(doc, false)
		if e := awsapi.AsError(err); err == nil || e.Code != "MalformedPolicyDocument" {
			t.Errorf("condition %s: %v, want MalformedPolicyDocument", cond, err)
		}
	}
}
