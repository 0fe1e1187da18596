package efs

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/iam"
)

// FuzzDecideClientAccess: any file system policy is either refused by
// PutFileSystemPolicy's parser with MalformedPolicyDocument, or decides
// for every kind of client without panicking; a policy the parser
// accepts never fails at mount time.
func FuzzDecideClientAccess(f *testing.F) {
	f.Add(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["elasticfilesystem:ClientMount","elasticfilesystem:ClientWrite"],"Condition":{"Bool":{"elasticfilesystem:AccessedViaMountTarget":"true"}}}]}`)
	f.Add(`{"Statement":{"Effect":"Deny","Principal":"*","Action":"*","Resource":"arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-1","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}`)
	f.Add(`{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:role/app","123456789012"]},"Action":"elasticfilesystem:Client*","NotResource":"*","Condition":{"StringEquals":{"elasticfilesystem:AccessPointArn":"x"}}}]}`)
	const fsARN = "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-1"
	f.Fuzz(func(t *testing.T, doc string) {
		if _, err := iam.ParseResourcePolicy(doc); err != nil {
			if e := awsapi.AsError(err); e.Code != "MalformedPolicyDocument" && e.Code != "LimitExceeded" {
				t.Fatalf("ParseResourcePolicy(%q): %v", doc, err)
			}
			return
		}
		for _, c := range []Client{
			{Account: "123456789012"},
			{Account: "123456789012", Principal: "arn:aws:iam::123456789012:role/app", SecureTransport: true,
				AccessPointARN: "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-1"},
		} {
			if _, err := DecideClientAccess(fsARN, doc, c); err != nil {
				t.Fatalf("accepted policy %q fails to decide: %v", doc, err)
			}
		}
	})
}
