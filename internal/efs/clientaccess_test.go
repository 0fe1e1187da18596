package efs

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/iam"
)

func TestDecideClientAccess(t *testing.T) {
	const (
		acct = "123456789012"
		fsA  = "arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-0123456789abcdef0"
		role = "arn:aws:iam::123456789012:role/app"
		apA  = "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0"
	)
	allowAll := func(actions string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":[` + actions + `],
			"Condition":{"Bool":{"elasticfilesystem:AccessedViaMountTarget":"true"}}}]}`
	}
	identity := func(doc string) []*iam.Policy {
		p, err := iam.ParsePolicy(doc, false)
		if err != nil {
			t.Fatal(err)
		}
		return []*iam.Policy{p}
	}
	anon := Client{Account: acct}
	withRole := Client{Account: acct, Principal: role, SecureTransport: true}
	cases := []struct {
		name   string
		policy string
		c      Client
		want   ClientAccess
	}{
		{"no policy: everything", "", anon, All},
		{"AWS's 'prevent root access'", allowAll(`"elasticfilesystem:ClientMount","elasticfilesystem:ClientWrite"`), anon,
			ClientAccess{Mount: true, Write: true}},
		{"AWS's 'enforce read-only'", allowAll(`"elasticfilesystem:ClientMount","elasticfilesystem:ClientRootAccess"`), anon,
			ClientAccess{Mount: true, Root: true}},
		{"AWS's 'prevent anonymous access' for an anonymous client", allowAll(`"elasticfilesystem:ClientRootAccess","elasticfilesystem:ClientWrite"`), anon,
			ClientAccess{Write: true, Root: true}},
		{"wildcard action", allowAll(`"elasticfilesystem:Client*"`), anon, All},
		{"only the role: anonymous gets nothing",
			`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + role + `"},"Action":"elasticfilesystem:ClientMount"}]}`,
			anon, ClientAccess{}},
		{"only the role: the role mounts read-only",
			`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + role + `"},"Action":"elasticfilesystem:ClientMount"}]}`,
			withRole, ClientAccess{Mount: true}},
		{"the account root as principal names its roles",
			`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"elasticfilesystem:Client*","Resource":"` + fsA + `"}]}`,
			withRole, All},
		{"another resource",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:Client*","Resource":"arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-other"}]}`,
			anon, ClientAccess{}},
		{"explicit deny of writes wins",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:Client*"},
			{"Effect":"Deny","Principal":{"AWS":"` + role + `"},"Action":"elasticfilesystem:ClientWrite"}]}`,
			withRole, ClientAccess{Mount: true, Root: true}},
		{"secure transport required, plain client",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:Client*"},
			{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}`,
			anon, ClientAccess{}},
		{"secure transport required, TLS client",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:Client*"},
			{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}`,
			withRole, All},
		{"access point condition, through that access point",
			`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + role + `"},"Action":["elasticfilesystem:ClientMount","elasticfilesystem:ClientWrite"],
			"Condition":{"StringEquals":{"elasticfilesystem:AccessPointArn":"` + apA + `"}}}]}`,
			Client{Account: acct, Principal: role, AccessPointARN: apA}, ClientAccess{Mount: true, Write: true}},
		{"access point condition, without it",
			`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"` + role + `"},"Action":["elasticfilesystem:ClientMount","elasticfilesystem:ClientWrite"],
			"Condition":{"StringEquals":{"elasticfilesystem:AccessPointArn":"` + apA + `"}}}]}`,
			withRole, ClientAccess{}},
		{"an Allow in the role's own policy counts",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:ClientMount"}]}`,
			Client{Account: acct, Principal: role, RolePolicies: identity(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"elasticfilesystem:ClientWrite","Resource":"` + fsA + `"}]}`)},
			ClientAccess{Mount: true, Write: true}},
		{"a Deny in the role's own policy wins",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:Client*"}]}`,
			Client{Account: acct, Principal: role, RolePolicies: identity(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"elasticfilesystem:ClientMount","Resource":"*"}]}`)},
			ClientAccess{Write: true, Root: true}},
		{"identity policies do not apply to anonymous clients",
			`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:ClientMount"}]}`,
			Client{Account: acct, RolePolicies: identity(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"elasticfilesystem:*","Resource":"*"}]}`)},
			ClientAccess{Mount: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecideClientAccess(fsA, tc.policy, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDeniedMountMessage(t *testing.T) {
	if got, want := DeniedMountMessage("fs-1", "us-east-1", "/", true), "mount.nfs4: access denied by server while mounting 127.0.0.1:/"; got != want {
		t.Errorf("TLS: %q, want %q", got, want)
	}
	if got, want := DeniedMountMessage("fs-1", "eu-west-1", "/data", false), "mount.nfs4: access denied by server while mounting fs-1.efs.eu-west-1.amazonaws.com:/data"; got != want {
		t.Errorf("plain: %q, want %q", got, want)
	}
}

func TestParseResourcePolicyRefuses(t *testing.T) {
	for _, doc := range []string{
		`{"Statement":[{"Effect":"Allow","Action":"elasticfilesystem:ClientMount"}]}`,                                   // no principal
		`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:ClientMount","Resource":"fs-1"}]}`, // not an ARN
		`{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"elasticfilesystem:ClientMount"}]}`,
		`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"elasticfilesystem:ClientMount","Condition":{"NoSuchOp":{"a":"b"}}}]}`,
		`not json`,
	} {
		if _, err := iam.ParseResourcePolicy(doc); err == nil {
			t.Errorf("accepted %s", doc)
		}
	}
}

// EFS allows policies of up to 20,000 characters, twice IAM's limit for
// identity policies: one of 15,000 parses and decides.
func TestLargeFileSystemPolicy(t *testing.T) {
	var sts []string
	for i := 0; len(strings.Join(sts, ",")) < 15000; i++ {
		sts = append(sts, fmt.Sprintf(`{"Sid":"s%d","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/r%d"},"Action":"elasticfilesystem:ClientMount"}`, i, i))
	}
	doc := `{"Version":"2012-10-17","Statement":[` + strings.Join(sts, ",") + `]}`
	got, err := DecideClientAccess("arn:aws:elasticfilesystem:us-east-1:123456789012:file-system/fs-1", doc,
		Client{Account: "123456789012", Principal: "arn:aws:iam::123456789012:role/r7"})
	if err != nil || got != (ClientAccess{Mount: true}) {
		t.Errorf("%d-character policy: %+v %v, want mount only", len(doc), got, err)
	}
}
