package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type ecsTags struct {
	Tags []struct{ Key, Value string }
}

func (t ecsTags) String() string {
	var parts []string
	for _, tag := range t.Tags {
		parts = append(parts, tag.Key+"="+tag.Value)
	}
	return strings.Join(parts, ",")
}

func TestTags(t *testing.T) {
	s := testenv.Start(t)
	prefix := fmt.Sprintf("arn:aws:ecs:%s:%s:", s.Creds.Region, s.Creds.AccountID)
	cluster := prefix + "cluster/tagged"
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "tagged", "--tags", "key=a,value=1")

	list := func(arn string) string {
		t.Helper()
		var out ecsTags
		s.MustAWS(&out, "ecs", "list-tags-for-resource", "--resource-arn", arn)
		return out.String()
	}

	if got := list(cluster); got != "a=1" {
		t.Fatalf("tags from create-cluster: %q", got)
	}
	s.MustAWS(nil, "ecs", "tag-resource", "--resource-arn", cluster, "--tags", "key=b,value=2", "key=a,value=changed", "key=empty,value=")
	if got := list(cluster); got != "a=changed,b=2,empty=" {
		t.Fatalf("after tag-resource: %q", got)
	}
	s.MustAWS(nil, "ecs", "untag-resource", "--resource-arn", cluster, "--tag-keys", "a", "not-there")
	if got := list(cluster); got != "b=2,empty=" {
		t.Fatalf("after untag-resource: %q", got)
	}

	t.Run("task definition", func(t *testing.T) {
		stdout, stderr, code := s.AWS("ecs", "register-task-definition", "--family", "tagfam",
			"--container-definitions", `[{"name":"app","image":"busybox","essential":true}]`,
			"--requires-compatibilities", "FARGATE", "--network-mode", "awsvpc", "--cpu", "256", "--memory", "512",
			"--tags", "key=owner,value=me")
		if code != 0 {
			if strings.Contains(stderr, "UnknownOperationException") {
				t.Skip("RegisterTaskDefinition is not served yet")
			}
			t.Fatalf("register-task-definition: %s %s", stdout, stderr)
		}
		td := prefix + "task-definition/tagfam:1"
		if got := list(td); got != "owner=me" {
			t.Fatalf("task definition tags: %q", got)
		}
		s.MustAWS(nil, "ecs", "tag-resource", "--resource-arn", td, "--tags", "key=x,value=y")
		if got := list(td); got != "owner=me,x=y" {
			t.Fatalf("after tagging task definition: %q", got)
		}
		if code, _ := s.AWSError("ecs", "list-tags-for-resource", "--resource-arn", prefix+"task-definition/tagfam:9"); code != "ClientException" {
			t.Errorf("missing revision: %s", code)
		}
	})

	t.Run("errors", func(t *testing.T) {
		many := []string{"ecs", "tag-resource", "--resource-arn", cluster, "--tags"}
		for i := 0; i < 49; i++ {
			many = append(many, fmt.Sprintf("key=k%d,value=v", i))
		}
		for _, c := range []struct {
			args []string
			code string
			msg  string
		}{
			{[]string{"tag-resource", "--resource-arn", prefix + "cluster/nope", "--tags", "key=a,value=b"}, "ClusterNotFoundException", "Cluster not found."},
			{[]string{"list-tags-for-resource", "--resource-arn", prefix + "cluster/nope"}, "ClusterNotFoundException", "Cluster not found."},
			{[]string{"list-tags-for-resource", "--resource-arn", "arn:aws:ecs:eu-west-3:111122223333:cluster/tagged"}, "AccessDeniedException", "no resource-based policy"},
			{[]string{"list-tags-for-resource", "--resource-arn", "not-an-arn"}, "InvalidParameterException", "The ARN provided is invalid."},
			{[]string{"list-tags-for-resource", "--resource-arn", prefix + "task/tagged/0123456789abcdef0123456789abcdef"}, "InvalidParameterException", ""},
			{[]string{"tag-resource", "--resource-arn", cluster, "--tags", "key=aws:owner,value=x"}, "InvalidParameterException", "aws:"},
			{[]string{"tag-resource", "--resource-arn", cluster, "--tags", "key=AWS:owner,value=x"}, "InvalidParameterException", "aws:"},
			{[]string{"untag-resource", "--resource-arn", cluster, "--tag-keys", "aws:foo"}, "InvalidParameterException", "aws:"},
			{[]string{"tag-resource", "--resource-arn", cluster, "--tags", "key=" + strings.Repeat("k", 129) + ",value=x"}, "InvalidParameterException", "128"},
			{[]string{"tag-resource", "--resource-arn", cluster, "--tags", "key=k,value=" + strings.Repeat("v", 257)}, "InvalidParameterException", "256"},
			{[]string{"tag-resource", "--resource-arn", cluster, "--tags", "key=bad#char,value=x"}, "InvalidParameterException", ""},
			{[]string{"create-cluster", "--cluster-name", "x", "--tags", "key=aws:x,value=1"}, "InvalidParameterException", "aws:"},
			// 2 tags already on the cluster + 49 new ones is over the limit of 50.
			{many[1:], "InvalidParameterException", "50"},
		} {
			code, msg := s.AWSError(append([]string{"ecs"}, c.args...)...)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Errorf("%v: %s %q, want %s %q", c.args[:3], code, msg, c.code, c.msg)
			}
		}
		if got := list(cluster); got != "b=2,empty=" {
			t.Fatalf("failed calls changed tags: %q", got)
		}
		// Exactly 50 is allowed.
		s.MustAWS(nil, many[:len(many)-1]...)
		var out ecsTags
		s.MustAWS(&out, "ecs", "list-tags-for-resource", "--resource-arn", cluster)
		if len(out.Tags) != 50 {
			t.Fatalf("want 50 tags, got %d", len(out.Tags))
		}
	})
}
