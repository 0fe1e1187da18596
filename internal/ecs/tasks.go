package ecs

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/controller"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

func (s *Service) taskOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"RunTask":       awsapi.Op(s.runTask),
		"StopTask":      awsapi.Op(s.stopTask),
		"DescribeTasks": awsapi.Op(s.describeTasks),
		"ListTasks":     awsapi.Op(s.listTasks),
	}
}

// taskKeyFor finds a task's key from its ARN or id within a cluster; ok is
// false when the reference cannot name a task of that cluster.
func taskKeyFor(sc model.Scope, cluster, ref string) (string, bool) {
	id := ref
	if strings.HasPrefix(ref, "arn:") {
		parts := strings.SplitN(ref, ":", 6)
		if len(parts) != 6 || parts[3] != sc.Region || parts[4] != sc.Account {
			return "", false
		}
		path, ok := strings.CutPrefix(parts[5], "task/")
		if !ok {
			return "", false
		}
		// task/CLUSTER/ID, or the old task/ID form without the cluster.
		if c, rest, ok := strings.Cut(path, "/"); ok {
			if c != cluster {
				return "", false
			}
			path = rest
		}
		id = path
	}
	if id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return sc.TaskKey(cluster, id), true
}

func getTask(tx state.Tx, sc model.Scope, cluster, ref string) (*model.TaskRecord, string, error) {
	key, ok := taskKeyFor(sc, cluster, ref)
	if !ok {
		return nil, "", nil
	}
	var rec model.TaskRecord
	found, err := tx.Get(model.KindTask, key, &rec)
	if err != nil || !found {
		return nil, key, err
	}
	return &rec, key, nil
}

func (s *Service) stopTask(ctx context.Context, in *ecstypes.StopTaskRequest) (*ecstypes.StopTaskResponse, error) {
	if ecstypes.Deref(in.Task) == "" {
		return nil, awsapi.InvalidParameter("Task can not be blank.")
	}
	if len(ecstypes.Deref(in.Reason)) > 255 {
		return nil, awsapi.InvalidParameter("Reason must be at most 255 characters.")
	}
	sc := scopeOf(ctx)
	var rec *model.TaskRecord
	stopNow := false
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		r, key, err := getTask(tx, sc, ecstypes.Deref(cluster.ClusterName), *in.Task)
		if err != nil {
			return err
		}
		if r == nil {
			return awsapi.InvalidParameter("The referenced task was not found.")
		}
		rec, stopNow = r, false
		if ecstypes.Deref(r.Task.DesiredStatus) == "STOPPED" {
			return nil
		}
		reason := ecstypes.Deref(in.Reason)
		if reason == "" {
			reason = "Task stopped by user"
		}
		r.StopCode, r.StoppedReason = controller.StopUserInitiated, reason
		t := &r.Task
		t.DesiredStatus = ecstypes.String("STOPPED")
		t.StopCode = ecstypes.String(controller.StopUserInitiated)
		t.StoppedReason = ecstypes.String(reason)
		t.StoppingAt = ecstypes.At(s.now())
		t.Version = ecstypes.Int64(ecstypes.Deref(t.Version) + 1)
		draining, err := s.deactivateForUser(tx, sc, ecstypes.Deref(cluster.ClusterName), r)
		if err != nil {
			return err
		}
		stopNow = !draining
		return tx.Put(model.KindTask, key, r)
	})
	if err != nil {
		return nil, err
	}
	if stopNow && s.Controller != nil {
		rec = s.Controller.StopTask(ctx, rec)
	}
	if ecstypes.Deref(rec.Task.LastStatus) == "DEACTIVATING" {
		s.wakeScheduler()
	}
	t := rec.Task
	return &ecstypes.StopTaskResponse{Task: &t}, nil
}

// tasksOut is RunTask's and DescribeTasks' answer; unlike the generated
// shape it keeps empty lists, which AWS always sends.
type tasksOut struct {
	Tasks    []*ecstypes.Task    `json:"tasks"`
	Failures []*ecstypes.Failure `json:"failures"`
}

type listTasksOut struct {
	TaskArns  []string `json:"taskArns"`
	NextToken *string  `json:"nextToken,omitempty"`
}

func (s *Service) describeTasks(ctx context.Context, in *ecstypes.DescribeTasksRequest) (*tasksOut, error) {
	withTags := false
	for _, f := range in.Include {
		if f != "TAGS" {
			return nil, awsapi.InvalidParameter("Invalid include value '%s'. Valid values: TAGS.", f)
		}
		withTags = true
	}
	if len(in.Tasks) == 0 {
		return nil, awsapi.InvalidParameter("Tasks cannot be empty.")
	}
	if len(in.Tasks) > 100 {
		return nil, awsapi.InvalidParameter("Tasks can have at most 100 items.")
	}
	sc := scopeOf(ctx)
	out := &tasksOut{Tasks: []*ecstypes.Task{}, Failures: []*ecstypes.Failure{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, ref := range in.Tasks {
			r, key, err := getTask(tx, sc, ecstypes.Deref(cluster.ClusterName), ref)
			if err != nil {
				return err
			}
			if r == nil {
				out.Failures = append(out.Failures, &ecstypes.Failure{Arn: ecstypes.String(ref), Reason: ecstypes.String("MISSING")})
				continue
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			t := r.Task
			if withTags {
				if t.Tags, err = ResourceTags(tx, ecstypes.Deref(t.TaskArn)); err != nil {
					return err
				}
				if t.Tags == nil {
					t.Tags = []*ecstypes.Tag{}
				}
			}
			out.Tasks = append(out.Tasks, &t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Service) listTasks(ctx context.Context, in *ecstypes.ListTasksRequest) (*listTasksOut, error) {
	if in.Family != nil && in.ServiceName != nil {
		return nil, awsapi.InvalidParameter("Family and serviceName are mutually exclusive: specify one or the other.")
	}
	if err := enumParam("desiredStatus", in.DesiredStatus, "DesiredStatus"); err != nil {
		return nil, err
	}
	if err := enumParam("launchType", in.LaunchType, "LaunchType"); err != nil {
		return nil, err
	}
	limit, err := pageSize(in.MaxResults)
	if err != nil {
		return nil, err
	}
	after, ok := model.DecodeToken(in.NextToken)
	if !ok {
		return nil, awsapi.InvalidParameter("Invalid nextToken.")
	}
	desired := ecstypes.Deref(in.DesiredStatus)
	if desired == "" {
		desired = "RUNNING"
	}
	match := func(t *ecstypes.Task) bool {
		switch {
		case ecstypes.Deref(t.DesiredStatus) != desired:
			return false
		case in.StartedBy != nil && ecstypes.Deref(t.StartedBy) != *in.StartedBy:
			return false
		case in.LaunchType != nil && ecstypes.Deref(t.LaunchType) != *in.LaunchType:
			return false
		case in.ServiceName != nil && ecstypes.Deref(t.Group) != "service:"+*in.ServiceName:
			return false
		case in.ContainerInstance != nil:
			// Fargate tasks run on no container instance.
			return false
		case in.Family != nil:
			family, _, _ := model.ParseTaskDefinitionRef(ecstypes.Deref(t.TaskDefinitionArn))
			return family == *in.Family
		}
		return true
	}
	sc := scopeOf(ctx)
	out := &listTasksOut{TaskArns: []string{}}
	err = s.Store.View(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		prefix := sc.TaskKey(ecstypes.Deref(cluster.ClusterName), "")
		if after != "" && !strings.HasPrefix(after, prefix) {
			return awsapi.InvalidParameter("Invalid nextToken.")
		}
		last := ""
		return tx.Scan(model.KindTask, prefix, after, 0, func(key string, data []byte) error {
			var r model.TaskRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			if !match(&r.Task) {
				return nil
			}
			if len(out.TaskArns) == limit {
				out.NextToken = ecstypes.String(model.EncodeToken(last))
				return state.ErrStop
			}
			out.TaskArns = append(out.TaskArns, ecstypes.Deref(r.Task.TaskArn))
			last = key
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
