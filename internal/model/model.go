// Package model is how ECS resources are kept in the state store: document
// kinds, key layout, ARNs and stored record shapes. Both the API (ecs) and the
// controller read and write through it, so neither owns the other's format.
package model

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// Document kinds. Keys start with account/region so one prefix scan lists a
// scope; see the Scope methods for each key.
const (
	KindCluster        = "ecs.cluster"        // Scope.ClusterKey -> ClusterRecord
	KindFamily         = "ecs.family"         // Scope.FamilyKey -> FamilyRecord
	KindTaskDefinition = "ecs.taskdefinition" // Scope.TaskDefinitionKey -> ecstypes.TaskDefinition
	KindTask           = "ecs.task"           // Scope.TaskKey -> TaskRecord
	KindTags           = "ecs.tags"           // resource ARN -> []ecstypes.Tag
	KindAccountSetting = "ecs.accountsetting" // Scope.Prefix()+principalArn/name -> ecstypes.Setting
	KindService        = "ecs.service"        // Scope.ServiceKey -> ServiceRecord
)

// Scope is an account and region: every ECS resource lives in exactly one.
type Scope struct {
	Account, Region string
}

func (s Scope) Prefix() string { return s.Account + "/" + s.Region + "/" }

func (s Scope) ClusterKey(name string) string { return s.Prefix() + name }

func (s Scope) FamilyKey(family string) string { return s.Prefix() + family }

// TaskDefinitionKey orders revisions numerically under the family's prefix.
func (s Scope) TaskDefinitionKey(family string, revision int32) string {
	return fmt.Sprintf("%s%s/%010d", s.Prefix(), family, revision)
}

// TaskKey groups tasks by cluster: Prefix()+cluster+"/" lists one cluster's tasks.
func (s Scope) TaskKey(cluster, id string) string { return s.Prefix() + cluster + "/" + id }

// ServiceKey groups services by cluster, like TaskKey.
func (s Scope) ServiceKey(cluster, name string) string { return s.Prefix() + cluster + "/" + name }

func (s Scope) ServiceARN(cluster, name string) string {
	return s.ARN("service/" + cluster + "/" + name)
}

// ARN builds an ECS ARN in AWS's form for a resource path.
func (s Scope) ARN(resource string) string {
	return "arn:aws:ecs:" + s.Region + ":" + s.Account + ":" + resource
}

func (s Scope) ClusterARN(name string) string { return s.ARN("cluster/" + name) }

func (s Scope) TaskDefinitionARN(family string, revision int32) string {
	return s.ARN(fmt.Sprintf("task-definition/%s:%d", family, revision))
}

func (s Scope) TaskARN(cluster, id string) string { return s.ARN("task/" + cluster + "/" + id) }

// ClusterName accepts a cluster's name or ARN; nil or empty is "default", as
// ECS treats an omitted cluster parameter.
func ClusterName(ref *string) string {
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

// EncodeToken makes an opaque pagination token from the last key returned.
func EncodeToken(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// DecodeToken reverses EncodeToken; ok is false for a token we did not make.
func DecodeToken(tok *string) (key string, ok bool) {
	if tok == nil || *tok == "" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(*tok)
	return string(b), err == nil
}

// ClusterRecord is a stored cluster. Task and service counts are not stored:
// they are counted from the tasks when described.
type ClusterRecord struct {
	Cluster ecstypes.Cluster `json:"cluster"`
}

// FamilyRecord remembers a family's last revision: revisions are never
// reused, even after a task definition is deleted.
type FamilyRecord struct {
	LastRevision int32 `json:"lastRevision"`
}

// TaskRecord is a stored task: the ECS shape as DescribeTasks returns it, and
// what the controller needs to drive it.
type TaskRecord struct {
	Task ecstypes.Task `json:"task"`
	// Host is the agent the task was placed on.
	Host string `json:"host,omitempty"`
	// StopRequested is when StopTask (or the scheduler) asked for the stop.
	StopCode      string `json:"stopCode,omitempty"`
	StoppedReason string `json:"stoppedReason,omitempty"`
	// Spec is what the agent was (or will be) asked to run, kept so a
	// restarted control plane can hand the task to an agent again.
	Spec *agent.TaskSpec `json:"spec,omitempty"`
}

// ServiceRecord is a stored service: the ECS shape (deployments and the last
// 100 events included) and the service scheduler's own bookkeeping, all of
// it here so a restarted scheduler carries on where the last one stopped.
// Running and pending counts are not stored: they are counted from the tasks.
type ServiceRecord struct {
	Service ecstypes.Service `json:"service"`
	// Steady is whether the last "reached a steady state" event still holds.
	Steady bool `json:"steady,omitempty"`
	// FailuresSince is when the run of failed task starts being counted for
	// back-off began: reset whenever the service is steady.
	FailuresSince *ecstypes.Time `json:"failuresSince,omitempty"`
	// Throttled marks that the "unable to consistently start tasks" event
	// was given for the current run of failures.
	Throttled bool `json:"throttled,omitempty"`
	// LastCompleted is the last deployment that reached COMPLETED: what a
	// circuit breaker rollback returns to, even once it has drained away.
	LastCompleted *ecstypes.Deployment `json:"lastCompleted,omitempty"`
	// DeletedAt is when the service went INACTIVE, for pruning.
	DeletedAt *ecstypes.Time `json:"deletedAt,omitempty"`
}
