package test

import (
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

// TestPolicyVariablesCLI: one policy for every user, scoped by
// ${aws:username} and ${aws:PrincipalAccount}: each user reaches the
// clusters named after them, and no one else's; in a 2008-10-17 policy
// the same text is literal and allows nothing.
func TestPolicyVariablesCLI(t *testing.T) {
	s := testenv.Start(t)
	for _, c := range []string{"alice-dev", "bob-dev", "carol-dev"} {
		s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", c)
	}
	policy := func(version string) string {
		return `{"Version":"` + version + `","Statement":[
			{"Effect":"Allow","Action":["ecs:ListServices","ecs:DeleteCluster"],"Resource":"arn:aws:ecs:*:${aws:PrincipalAccount}:cluster/${aws:username}-*"},
			{"Effect":"Allow","Action":"iam:GetUser","Resource":"arn:aws:iam::*:user/${aws:username}"}]}`
	}
	user := func(name, version string) keyPair {
		s.MustAWS(nil, "iam", "create-user", "--user-name", name)
		s.MustAWS(nil, "iam", "put-user-policy", "--user-name", name, "--policy-name", "own", "--policy-document", policy(version))
		var ak struct {
			AccessKey struct{ AccessKeyId, SecretAccessKey string }
		}
		s.MustAWS(&ak, "iam", "create-access-key", "--user-name", name)
		return keyPair{id: ak.AccessKey.AccessKeyId, secret: ak.AccessKey.SecretAccessKey}
	}
	alice, bob, carol := user("alice", "2012-10-17"), user("bob", "2012-10-17"), user("carol", "2008-10-17")

	mustAs(t, s, alice, nil, "ecs", "list-services", "--cluster", "alice-dev")
	mustAs(t, s, bob, nil, "ecs", "list-services", "--cluster", "bob-dev")
	mustAs(t, s, alice, nil, "iam", "get-user", "--user-name", "alice")
	for _, c := range []struct {
		k    keyPair
		args []string
	}{
		{alice, []string{"ecs", "list-services", "--cluster", "bob-dev"}},
		{alice, []string{"ecs", "delete-cluster", "--cluster", "bob-dev"}},
		{bob, []string{"ecs", "list-services", "--cluster", "alice-dev"}},
		{alice, []string{"iam", "get-user", "--user-name", "bob"}},
		// Literal in a 2008-10-17 policy: carol's own cluster is not hers.
		{carol, []string{"ecs", "list-services", "--cluster", "carol-dev"}},
	} {
		if e := errAs(t, s, c.k, c.args...); !strings.Contains(e, "AccessDenied") {
			t.Errorf("%s as %s: %s", strings.Join(c.args, " "), c.k.id, e)
		}
	}
	mustAs(t, s, alice, nil, "ecs", "delete-cluster", "--cluster", "alice-dev")
	var left struct{ ClusterArns []string }
	s.MustAWS(&left, "ecs", "list-clusters")
	if len(left.ClusterArns) != 2 || strings.Contains(strings.Join(left.ClusterArns, " "), "alice-dev") {
		t.Errorf("clusters after alice deleted hers: %v", left.ClusterArns)
	}
}
