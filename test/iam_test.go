package test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

// awsAs runs the aws CLI against s with other credentials.
func awsAs(t *testing.T, s *testenv.Server, key, secret, token string, args ...string) (string, string, int) {
	t.Helper()
	env := []string{}
	for _, kv := range s.Env() {
		if !strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") && !strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") && !strings.HasPrefix(kv, "AWS_SESSION_TOKEN=") {
			env = append(env, kv)
		}
	}
	env = append(env, "AWS_ACCESS_KEY_ID="+key, "AWS_SECRET_ACCESS_KEY="+secret)
	if token != "" {
		env = append(env, "AWS_SESSION_TOKEN="+token)
	}
	cmd := exec.Command("aws", append(args, "--output", "json")...)
	cmd.Env = env
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	code := 0
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

type keyPair struct{ id, secret, token string }

func mustAs(t *testing.T, s *testenv.Server, k keyPair, out any, args ...string) {
	t.Helper()
	o, e, code := awsAs(t, s, k.id, k.secret, k.token, args...)
	if code != 0 {
		t.Fatalf("aws %s as %s: exit %d\n%s", strings.Join(args, " "), k.id, code, e)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(o), out); err != nil {
			t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, o)
		}
	}
}

// errAs runs a call that must fail and returns the CLI's error text.
func errAs(t *testing.T, s *testenv.Server, k keyPair, args ...string) string {
	t.Helper()
	_, e, code := awsAs(t, s, k.id, k.secret, k.token, args...)
	if code == 0 {
		t.Fatalf("aws %s as %s succeeded; want an error", strings.Join(args, " "), k.id)
	}
	return e
}

func gantryCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(testenv.Binary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gantry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func envKeys(t *testing.T, out string) keyPair {
	t.Helper()
	var k keyPair
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "export AWS_ACCESS_KEY_ID="); ok {
			k.id = v
		}
		if v, ok := strings.CutPrefix(line, "export AWS_SECRET_ACCESS_KEY="); ok {
			k.secret = v
		}
	}
	if k.id == "" || k.secret == "" {
		t.Fatalf("no keys in gantry env output:\n%s", out)
	}
	return k
}

type callerIdentity struct{ Account, Arn, UserId string }

// TestAccountsAndKeys: two accounts on one server, each with its own keys
// (made by `gantry accounts/keys` while the server runs), see only their
// own clusters; a revoked key stops working at once.
func TestAccountsAndKeys(t *testing.T) {
	s := testenv.Start(t)
	dd := []string{"--data-dir", s.DataDir}
	def := keyPair{id: s.Creds.AccessKeyID, secret: s.Creds.SecretAccessKey}

	out := gantryCmd(t, append([]string{"accounts", "create", "team-b", "--id", "222233334444"}, dd...)...)
	if !strings.Contains(out, "222233334444") {
		t.Fatalf("accounts create: %s", out)
	}
	if ls := gantryCmd(t, append([]string{"accounts", "ls"}, dd...)...); !strings.Contains(ls, "team-b") || !strings.Contains(ls, s.Creds.AccountID) {
		t.Fatalf("accounts ls lacks an account:\n%s", ls)
	}
	if out, err := exec.Command(testenv.Binary(t), append([]string{"accounts", "create", "team-b"}, dd...)...).CombinedOutput(); err == nil {
		t.Fatalf("a second account named team-b was created: %s", out)
	}
	b := envKeys(t, gantryCmd(t, append([]string{"env", "--account", "team-b", "--endpoint", s.Endpoint}, dd...)...))
	if d := envKeys(t, gantryCmd(t, append([]string{"env", "--endpoint", s.Endpoint}, dd...)...)); d != def {
		t.Fatalf("gantry env without --account printed %v, want the default key %s", d.id, def.id)
	}

	var who callerIdentity
	mustAs(t, s, b, &who, "sts", "get-caller-identity")
	if who.Account != "222233334444" || who.Arn != "arn:aws:iam::222233334444:root" || who.UserId != "222233334444" {
		t.Fatalf("team-b caller identity: %+v", who)
	}
	mustAs(t, s, def, &who, "sts", "get-caller-identity")
	if who.Account != s.Creds.AccountID {
		t.Fatalf("default caller identity: %+v", who)
	}

	// Same cluster name in both accounts; each sees only its own.
	var ca, cb struct{ Cluster struct{ ClusterArn string } }
	mustAs(t, s, def, &ca, "ecs", "create-cluster", "--cluster-name", "shared")
	mustAs(t, s, b, &cb, "ecs", "create-cluster", "--cluster-name", "shared")
	if ca.Cluster.ClusterArn == cb.Cluster.ClusterArn || !strings.Contains(cb.Cluster.ClusterArn, ":222233334444:") {
		t.Fatalf("cluster ARNs: %s and %s", ca.Cluster.ClusterArn, cb.Cluster.ClusterArn)
	}
	mustAs(t, s, b, nil, "ecs", "create-cluster", "--cluster-name", "only-b")
	var la, lb clusterList
	mustAs(t, s, def, &la, "ecs", "list-clusters")
	mustAs(t, s, b, &lb, "ecs", "list-clusters")
	if len(la.ClusterArns) != 1 || la.ClusterArns[0] != ca.Cluster.ClusterArn {
		t.Errorf("default account lists %v", la.ClusterArns)
	}
	if len(lb.ClusterArns) != 2 || strings.Contains(strings.Join(lb.ClusterArns, " "), ":"+s.Creds.AccountID+":") {
		t.Errorf("team-b lists %v", lb.ClusterArns)
	}
	// Another account's ARN is refused from here, not answered.
	if e := errAs(t, s, def, "ecs", "describe-clusters", "--clusters", lb.ClusterArns[0], lb.ClusterArns[1]); !strings.Contains(e, "AccessDeniedException") {
		t.Errorf("default account describing team-b's clusters: %s", e)
	}

	// A second key for team-b, then revoked: it stops working at once.
	out = gantryCmd(t, append([]string{"keys", "create", "--account", "team-b"}, dd...)...)
	var k2 keyPair
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "AccessKeyId: "); ok {
			k2.id = v
		}
		if v, ok := strings.CutPrefix(line, "SecretAccessKey: "); ok {
			k2.secret = v
		}
	}
	mustAs(t, s, k2, &who, "sts", "get-caller-identity")
	if who.Account != "222233334444" {
		t.Fatalf("new key's account: %+v", who)
	}
	if ls := gantryCmd(t, append([]string{"keys", "ls", "--account", "team-b"}, dd...)...); !strings.Contains(ls, k2.id) || strings.Contains(ls, k2.secret) || strings.Contains(ls, def.id) {
		t.Fatalf("keys ls --account team-b:\n%s", ls)
	}
	gantryCmd(t, append([]string{"keys", "revoke", k2.id}, dd...)...)
	if e := errAs(t, s, k2, "ecs", "list-clusters"); !strings.Contains(e, "UnrecognizedClientException") {
		t.Errorf("revoked key on ECS: %s", e)
	}
	if e := errAs(t, s, k2, "sts", "get-caller-identity"); !strings.Contains(e, "InvalidClientTokenId") {
		t.Errorf("revoked key on STS: %s", e)
	}
	mustAs(t, s, b, nil, "ecs", "list-clusters") // the other key still works

	// An existing key pair imported into team-b.
	imp := keyPair{id: "AKIAIMPORTED0000TEST", secret: "importedSecretKey/0123456789abcdefghijklmn"}
	gantryCmd(t, append([]string{"keys", "import", "--account", "team-b", imp.id, imp.secret}, dd...)...)
	mustAs(t, s, imp, &who, "sts", "get-caller-identity")
	if who.Account != "222233334444" {
		t.Errorf("imported key's account: %+v", who)
	}

	// Secrets are not stored in the clear.
	db, _ := exec.Command("grep", "-c", "-a", b.secret, s.DataDir+"/state.db").Output()
	if strings.TrimSpace(string(db)) != "0" {
		t.Errorf("team-b's secret key is in state.db in the clear")
	}
	// After a restart (migration runs again) everything still holds.
	s.Restart()
	mustAs(t, s, b, nil, "ecs", "list-clusters")
	mustAs(t, s, def, nil, "ecs", "list-clusters")
	errAs(t, s, k2, "ecs", "list-clusters")
}

// TestIAMUsersRolesAndPolicies: IAM users and roles through the CLI, and a
// user's inline policies enforced on every call.
func TestIAMUsersRolesAndPolicies(t *testing.T) {
	s := testenv.Start(t)
	root := keyPair{id: s.Creds.AccessKeyID, secret: s.Creds.SecretAccessKey}
	acct := s.Creds.AccountID

	var u struct {
		User struct{ UserName, UserId, Arn, Path string }
	}
	s.MustAWS(&u, "iam", "create-user", "--user-name", "alice")
	if u.User.Arn != "arn:aws:iam::"+acct+":user/alice" || !strings.HasPrefix(u.User.UserId, "AIDA") || u.User.Path != "/" {
		t.Fatalf("create-user: %+v", u)
	}
	if code, _ := s.AWSError("iam", "create-user", "--user-name", "alice"); code != "EntityAlreadyExists" {
		t.Errorf("duplicate user: %s", code)
	}
	if code, _ := s.AWSError("iam", "get-user", "--user-name", "nobody"); code != "NoSuchEntity" {
		t.Errorf("get-user of a stranger: %s", code)
	}
	if code, _ := s.AWSError("iam", "create-user", "--user-name", "bad/name"); code != "ValidationError" {
		t.Errorf("bad user name: %s", code)
	}
	var users struct{ Users []struct{ UserName string } }
	s.MustAWS(&users, "iam", "list-users")
	if len(users.Users) != 1 || users.Users[0].UserName != "alice" {
		t.Errorf("list-users: %+v", users)
	}

	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecs:List*","ecs:Describe*"],"Resource":"*"},{"Effect":"Deny","Action":"ecs:CreateCluster","Resource":"*"}]}`
	s.MustAWS(nil, "iam", "put-user-policy", "--user-name", "alice", "--policy-name", "ecs-read", "--policy-document", policy)
	if code, _ := s.AWSError("iam", "put-user-policy", "--user-name", "alice", "--policy-name", "bad", "--policy-document", `{"Statement":{"Effect":"Allow","Resource":"*"}}`); code != "MalformedPolicyDocument" {
		t.Errorf("malformed policy: %s", code)
	}
	var got struct {
		UserName, PolicyName string
		PolicyDocument       struct{ Statement []map[string]any }
	}
	s.MustAWS(&got, "iam", "get-user-policy", "--user-name", "alice", "--policy-name", "ecs-read")
	if got.UserName != "alice" || len(got.PolicyDocument.Statement) != 2 {
		t.Errorf("get-user-policy: %+v", got)
	}
	var names struct{ PolicyNames []string }
	s.MustAWS(&names, "iam", "list-user-policies", "--user-name", "alice")
	if len(names.PolicyNames) != 1 || names.PolicyNames[0] != "ecs-read" {
		t.Errorf("list-user-policies: %+v", names)
	}

	var ak struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey, UserName, Status string }
	}
	s.MustAWS(&ak, "iam", "create-access-key", "--user-name", "alice")
	alice := keyPair{id: ak.AccessKey.AccessKeyId, secret: ak.AccessKey.SecretAccessKey}
	if ak.AccessKey.UserName != "alice" || ak.AccessKey.Status != "Active" || alice.secret == "" {
		t.Fatalf("create-access-key: %+v", ak)
	}

	var who callerIdentity
	mustAs(t, s, alice, &who, "sts", "get-caller-identity")
	if who.Arn != u.User.Arn || who.UserId != u.User.UserId || who.Account != acct {
		t.Errorf("alice's caller identity: %+v", who)
	}
	mustAs(t, s, alice, nil, "ecs", "list-clusters")
	e := errAs(t, s, alice, "ecs", "create-cluster", "--cluster-name", "nope")
	if !strings.Contains(e, "AccessDeniedException") || !strings.Contains(e, "User: "+u.User.Arn+" is not authorized to perform: ecs:CreateCluster") {
		t.Errorf("alice create-cluster: %s", e)
	}
	e = errAs(t, s, alice, "ecs", "run-task", "--cluster", "x", "--task-definition", "y")
	if !strings.Contains(e, "AccessDeniedException") || !strings.Contains(e, "because no identity-based policy allows the ecs:RunTask action") {
		t.Errorf("alice run-task: %s", e)
	}
	if e = errAs(t, s, alice, "iam", "list-users"); !strings.Contains(e, "(AccessDenied)") {
		t.Errorf("alice list-users: %s", e)
	}
	if e = errAs(t, s, alice, "ec2", "describe-vpcs"); !strings.Contains(e, "UnauthorizedOperation") {
		t.Errorf("alice describe-vpcs: %s", e)
	}
	// A policy change applies to the next request.
	s.MustAWS(nil, "iam", "delete-user-policy", "--user-name", "alice", "--policy-name", "ecs-read")
	if e = errAs(t, s, alice, "ecs", "list-clusters"); !strings.Contains(e, "AccessDeniedException") {
		t.Errorf("alice list-clusters without a policy: %s", e)
	}

	var keys struct {
		AccessKeyMetadata []struct{ AccessKeyId, UserName string }
	}
	s.MustAWS(&keys, "iam", "list-access-keys", "--user-name", "alice")
	if len(keys.AccessKeyMetadata) != 1 || keys.AccessKeyMetadata[0].AccessKeyId != alice.id {
		t.Errorf("list-access-keys: %+v", keys)
	}
	if code, _ := s.AWSError("iam", "delete-user", "--user-name", "alice"); code != "DeleteConflict" {
		t.Errorf("delete-user with keys: %s", code)
	}
	s.MustAWS(nil, "iam", "delete-access-key", "--user-name", "alice", "--access-key-id", alice.id)
	if e = errAs(t, s, alice, "sts", "get-caller-identity"); !strings.Contains(e, "InvalidClientTokenId") {
		t.Errorf("deleted user key: %s", e)
	}
	s.MustAWS(nil, "iam", "delete-user", "--user-name", "alice")
	if code, _ := s.AWSError("iam", "get-user", "--user-name", "alice"); code != "NoSuchEntity" {
		t.Errorf("deleted user: %s", code)
	}

	// Roles.
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}`
	var role struct {
		Role struct {
			RoleName, RoleId, Arn    string
			AssumeRolePolicyDocument struct {
				Statement []struct{ Principal map[string]string }
			}
		}
	}
	s.MustAWS(&role, "iam", "create-role", "--role-name", "task-role", "--assume-role-policy-document", trust)
	if role.Role.Arn != "arn:aws:iam::"+acct+":role/task-role" || !strings.HasPrefix(role.Role.RoleId, "AROA") ||
		len(role.Role.AssumeRolePolicyDocument.Statement) != 1 || role.Role.AssumeRolePolicyDocument.Statement[0].Principal["Service"] != "ecs-tasks.amazonaws.com" {
		t.Fatalf("create-role: %+v", role)
	}
	if code, _ := s.AWSError("iam", "create-role", "--role-name", "task-role", "--assume-role-policy-document", trust); code != "EntityAlreadyExists" {
		t.Errorf("duplicate role: %s", code)
	}
	if code, _ := s.AWSError("iam", "create-role", "--role-name", "r2", "--assume-role-policy-document", `{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}`); code != "MalformedPolicyDocument" {
		t.Errorf("trust policy without principal: %s", code)
	}
	s.MustAWS(&role, "iam", "get-role", "--role-name", "task-role")
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "task-role", "--policy-name", "p", "--policy-document", `{"Statement":{"Effect":"Allow","Action":"ecs:ListClusters","Resource":"*"}}`)
	s.MustAWS(&names, "iam", "list-role-policies", "--role-name", "task-role")
	if len(names.PolicyNames) != 1 {
		t.Errorf("list-role-policies: %+v", names)
	}
	var rp struct{ RoleName, PolicyName string }
	s.MustAWS(&rp, "iam", "get-role-policy", "--role-name", "task-role", "--policy-name", "p")
	if rp.RoleName != "task-role" || rp.PolicyName != "p" {
		t.Errorf("get-role-policy: %+v", rp)
	}
	if code, _ := s.AWSError("iam", "delete-role", "--role-name", "task-role"); code != "DeleteConflict" {
		t.Errorf("delete-role with policies: %s", code)
	}
	// Root may not assume a role that trusts only ECS tasks.
	if code, _ := s.AWSError("sts", "assume-role", "--role-arn", role.Role.Arn, "--role-session-name", "me"); code != "AccessDenied" {
		t.Errorf("assume a task role: %s", code)
	}
	s.MustAWS(nil, "iam", "delete-role-policy", "--role-name", "task-role", "--policy-name", "p")
	s.MustAWS(nil, "iam", "delete-role", "--role-name", "task-role")
	var roles struct{ Roles []any }
	s.MustAWS(&roles, "iam", "list-roles")
	if len(roles.Roles) != 0 {
		t.Errorf("list-roles after delete: %+v", roles)
	}

	// AssumeRole: temporary credentials held to the role's policies.
	s.MustAWS(&role, "iam", "create-role", "--role-name", "reader", "--assume-role-policy-document",
		`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+acct+`:root"},"Action":"sts:AssumeRole"}]}`)
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "reader", "--policy-name", "p", "--policy-document", `{"Statement":{"Effect":"Allow","Action":"ecs:List*","Resource":"*"}}`)
	var assumed struct {
		Credentials     struct{ AccessKeyId, SecretAccessKey, SessionToken, Expiration string }
		AssumedRoleUser struct{ Arn, AssumedRoleId string }
	}
	mustAs(t, s, root, &assumed, "sts", "assume-role", "--role-arn", role.Role.Arn, "--role-session-name", "s1")
	tmp := keyPair{assumed.Credentials.AccessKeyId, assumed.Credentials.SecretAccessKey, assumed.Credentials.SessionToken}
	if !strings.HasPrefix(tmp.id, "ASIA") || tmp.token == "" || assumed.AssumedRoleUser.Arn != "arn:aws:sts::"+acct+":assumed-role/reader/s1" {
		t.Fatalf("assume-role: %+v", assumed)
	}
	mustAs(t, s, tmp, &who, "sts", "get-caller-identity")
	if who.Arn != assumed.AssumedRoleUser.Arn || who.UserId != assumed.AssumedRoleUser.AssumedRoleId {
		t.Errorf("assumed caller identity: %+v", who)
	}
	mustAs(t, s, tmp, nil, "ecs", "list-clusters")
	if e = errAs(t, s, tmp, "ecs", "create-cluster", "--cluster-name", "x"); !strings.Contains(e, "AccessDeniedException") {
		t.Errorf("assumed role create-cluster: %s", e)
	}
	if e = errAs(t, s, keyPair{tmp.id, tmp.secret, ""}, "ecs", "list-clusters"); !strings.Contains(e, "UnrecognizedClientException") {
		t.Errorf("temporary key without its token: %s", e)
	}
}
