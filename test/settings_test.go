package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type ecsSetting struct{ Name, Value, PrincipalArn, Type string }

func TestAccountSettings(t *testing.T) {
	s := testenv.Start(t)
	root := fmt.Sprintf("arn:aws:iam::%s:root", s.Creds.AccountID)
	role := fmt.Sprintf("arn:aws:iam::%s:role/deployer", s.Creds.AccountID)

	effective := func(args ...string) map[string]ecsSetting {
		t.Helper()
		var out struct{ Settings []ecsSetting }
		s.MustAWS(&out, append([]string{"ecs", "list-account-settings", "--effective-settings"}, args...)...)
		m := map[string]ecsSetting{}
		for _, st := range out.Settings {
			m[st.Name] = st
		}
		return m
	}

	// A new account shows AWS's defaults.
	got := effective()
	for name, want := range map[string]string{
		"serviceLongArnFormat": "enabled", "taskLongArnFormat": "enabled", "containerInstanceLongArnFormat": "enabled",
		"awsvpcTrunking": "disabled", "containerInsights": "disabled", "fargateFIPSMode": "disabled",
		"tagResourceAuthorization": "on", "fargateTaskRetirementWaitPeriod": "7", "defaultLogDriverMode": "non-blocking",
	} {
		if got[name].Value != want || got[name].PrincipalArn != root || got[name].Type != "aws_managed" {
			t.Errorf("default %s: %+v, want %s", name, got[name], want)
		}
	}
	var own struct{ Settings []ecsSetting }
	s.MustAWS(&own, "ecs", "list-account-settings")
	if len(own.Settings) != 0 {
		t.Errorf("nothing set yet, but list-account-settings shows %+v", own.Settings)
	}

	// PutAccountSettingDefault sets the account-wide value.
	var put struct{ Setting ecsSetting }
	s.MustAWS(&put, "ecs", "put-account-setting-default", "--name", "containerInsights", "--value", "enabled")
	if put.Setting != (ecsSetting{"containerInsights", "enabled", root, "user"}) {
		t.Fatalf("put-account-setting-default: %+v", put)
	}
	// New clusters follow it.
	var c struct{ Cluster ecsCluster }
	s.MustAWS(&c, "ecs", "create-cluster", "--cluster-name", "insightful")
	// (Clusters also carry their isolation setting.)
	insights := ""
	for _, st := range c.Cluster.Settings {
		if st.Name == "containerInsights" {
			insights = st.Value
		}
	}
	if insights != "enabled" {
		t.Errorf("cluster after containerInsights default: %+v", c.Cluster.Settings)
	}

	// A principal's own setting wins over the default, for that principal only.
	put.Setting = ecsSetting{}
	s.MustAWS(&put, "ecs", "put-account-setting", "--name", "containerInsights", "--value", "disabled", "--principal-arn", role)
	if put.Setting != (ecsSetting{"containerInsights", "disabled", role, "user"}) {
		t.Fatalf("put-account-setting for role: %+v", put)
	}
	if v := effective("--principal-arn", role)["containerInsights"]; v.Value != "disabled" || v.PrincipalArn != role {
		t.Errorf("role's effective containerInsights: %+v", v)
	}
	if v := effective()["containerInsights"]; v.Value != "enabled" {
		t.Errorf("root's effective containerInsights: %+v", v)
	}
	if v := effective("--principal-arn", role)["awsvpcTrunking"]; v.Value != "disabled" {
		t.Errorf("role inherits defaults: %+v", v)
	}

	// Filters and pagination.
	var filtered struct{ Settings []ecsSetting }
	s.MustAWS(&filtered, "ecs", "list-account-settings", "--effective-settings", "--name", "containerInsights", "--value", "enabled")
	if len(filtered.Settings) != 1 || filtered.Settings[0].Name != "containerInsights" {
		t.Errorf("name+value filter: %+v", filtered)
	}
	var page struct {
		Settings  []ecsSetting
		NextToken string
	}
	s.MustAWS(&page, "ecs", "list-account-settings", "--effective-settings", "--no-paginate", "--max-results", "4")
	if len(page.Settings) != 4 || page.NextToken == "" {
		t.Fatalf("first page: %+v", page)
	}
	var all struct{ Settings []ecsSetting }
	s.MustAWS(&all, "ecs", "list-account-settings", "--effective-settings", "--page-size", "4")
	if len(all.Settings) != len(got) {
		t.Errorf("CLI paginator: %d settings, want %d", len(all.Settings), len(got))
	}

	// Delete the role's setting: it falls back to the account default.
	var del struct{ Setting ecsSetting }
	s.MustAWS(&del, "ecs", "delete-account-setting", "--name", "containerInsights", "--principal-arn", role)
	if del.Setting.Value != "disabled" || del.Setting.PrincipalArn != role {
		t.Errorf("delete-account-setting: %+v", del)
	}
	if v := effective("--principal-arn", role)["containerInsights"]; v.Value != "enabled" {
		t.Errorf("after delete: %+v", v)
	}

	// Settings survive a restart.
	s.Restart()
	if v := effective()["containerInsights"]; v.Value != "enabled" || v.Type != "user" {
		t.Errorf("after restart: %+v", v)
	}

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"put-account-setting", "--name", "containerInsights", "--value", "maybe"}, "maybe"},
		{[]string{"put-account-setting", "--name", "tagResourceAuthorization", "--value", "enabled"}, "on, off"},
		{[]string{"put-account-setting-default", "--name", "fargateTaskRetirementWaitPeriod", "--value", "3"}, "0, 7, 14"},
		{[]string{"put-account-setting", "--name", "fargateTaskRetirementWaitPeriod", "--value", "14", "--principal-arn", role}, "PutAccountSettingDefault"},
		{[]string{"put-account-setting-default", "--name", "guardDutyActivate", "--value", "enabled"}, "read-only"},
		{[]string{"put-account-setting", "--name", "awsvpcTrunking", "--value", "enabled", "--principal-arn", "bob"}, "bob"},
		{[]string{"put-account-setting", "--name", "awsvpcTrunking", "--value", "enabled", "--principal-arn", "arn:aws:iam::999999999999:root"}, "another account"},
		{[]string{"list-account-settings", "--value", "enabled"}, "name"},
	} {
		code, msg := s.AWSError(append([]string{"ecs"}, c.args...)...)
		if code != "InvalidParameterException" || !strings.Contains(msg, c.msg) {
			t.Errorf("%v: %s %q", c.args, code, msg)
		}
	}
	// The CLI checks setting names itself; boto3 without that check shows
	// the server's answer.
	out, err := s.Python(`
import boto3, botocore.config, botocore.exceptions
c = boto3.client("ecs", config=botocore.config.Config(parameter_validation=False))
try:
    c.put_account_setting(name="bogusSetting", value="enabled")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"], e.response["Error"]["Message"])
`)
	if err != nil || !strings.HasPrefix(out, "InvalidParameterException bogusSetting should be one of [serviceLongArnFormat,") {
		t.Errorf("unknown setting name: %v %s", err, out)
	}
}
