package ecs

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// Document kinds in the state store, and how their keys are built. Keys start
// with account/region so one prefix scan lists a scope.
const (
	KindCluster        = "ecs.cluster"        // key: scope/name
	KindTaskDefinition = "ecs.taskdefinition" // key: scope/family/%010d(revision)
	KindTask           = "ecs.task"           // key: scope/clusterName/taskID
	KindTags           = "ecs.tags"           // key: resource ARN
	KindAccountSetting = "ecs.accountsetting" // key: scope/principalArn/name
)

func (s scope) prefix() string { return s.Account + "/" + s.Region + "/" }

func (s scope) clusterKey(name string) string { return s.prefix() + name }

func (s scope) taskDefinitionKey(family string, revision int32) string {
	return fmt.Sprintf("%s%s/%010d", s.prefix(), family, revision)
}

func (s scope) taskKey(cluster, id string) string { return s.prefix() + cluster + "/" + id }

// ARNs in AWS's form.
func (s scope) arn(resource string) string {
	return "arn:aws:ecs:" + s.Region + ":" + s.Account + ":" + resource
}

func (s scope) clusterARN(name string) string { return s.arn("cluster/" + name) }

func (s scope) taskDefinitionARN(family string, revision int32) string {
	return s.arn(fmt.Sprintf("task-definition/%s:%d", family, revision))
}

func (s scope) taskARN(cluster, id string) string { return s.arn("task/" + cluster + "/" + id) }

// clusterName accepts a cluster's name or ARN, defaulting to "default" as
// ECS does when the parameter is omitted.
func clusterName(ref *string) string {
	if ref == nil || *ref == "" {
		return "default"
	}
	r := *ref
	if strings.HasPrefix(r, "arn:") {
		if i := strings.LastIndex(r, ":cluster/"); i >= 0 {
			return r[i+len(":cluster/"):]
		}
	}
	return r
}

// Pagination tokens are opaque to clients: the last key returned, encoded.
func encodeToken(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

func decodeToken(tok *string) (string, bool) {
	if tok == nil || *tok == "" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(*tok)
	return string(b), err == nil
}
