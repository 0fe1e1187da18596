package ecs

import (
	"context"
	"errors"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/execstream"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/ssmstream"
	"github.com/gantry-dev/gantry/internal/state"
)

func (s *Service) execOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"ExecuteCommand": awsapi.Op(s.executeCommand),
	}
}

// AWS's answers, word for word where AWS's are known.
const (
	execNotEnabled = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn't running. Wait and try the command again or run a new task with execute command enabled and try again."
	execInternal   = "The execute command failed due to an internal error. Try again later."
)

// executeCommand is ECS Exec: it checks the task, has the task's agent
// prepare the command and returns the session. Where AWS's session is for
// the SSM Session Manager plugin, Gantry's streamUrl is a websocket the
// agent serves (package execstream), admitted once with tokenValue;
// `gantry exec` is its client.
func (s *Service) executeCommand(ctx context.Context, in *ecstypes.ExecuteCommandRequest) (*ecstypes.ExecuteCommandResponse, error) {
	if ecstypes.Deref(in.Task) == "" {
		return nil, awsapi.InvalidParameter("Task can not be blank.")
	}
	if ecstypes.Deref(in.Command) == "" {
		return nil, awsapi.InvalidParameter("Command can not be blank.")
	}
	if !ecstypes.Deref(in.Interactive) {
		return nil, awsapi.InvalidParameter("Interactive is the only mode supported currently.")
	}
	args, err := execstream.SplitCommand(*in.Command)
	if err != nil {
		return nil, awsapi.InvalidParameter("Command is not valid: %v.", err)
	}
	if len(args) == 0 {
		return nil, awsapi.InvalidParameter("Command can not be blank.")
	}
	sc := scopeOf(ctx)
	var rec *model.TaskRecord
	var cluster *ecstypes.Cluster
	err = s.Store.View(ctx, func(tx state.Tx) error {
		c, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		cluster = c
		rec, _, err = getTask(tx, sc, ecstypes.Deref(c.ClusterName), *in.Task)
		return err
	})
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, awsapi.InvalidParameter("The referenced task was not found.")
	}
	t := &rec.Task
	if !ecstypes.Deref(t.EnableExecuteCommand) || ecstypes.Deref(t.LastStatus) != "RUNNING" || rec.Spec == nil {
		return nil, awsapi.InvalidParameter(execNotEnabled)
	}
	var target *ecstypes.Container
	name := ecstypes.Deref(in.Container)
	switch {
	case name != "":
		for _, c := range t.Containers {
			if ecstypes.Deref(c.Name) == name {
				target = c
			}
		}
		if target == nil {
			return nil, awsapi.InvalidParameter("The container %s does not exist in the task.", name)
		}
	case len(t.Containers) == 1:
		target = t.Containers[0]
	default:
		return nil, awsapi.InvalidParameter("The container name must be specified when the task has more than one container.")
	}
	if ecstypes.Deref(target.LastStatus) != "RUNNING" {
		return nil, awsapi.InvalidParameter(execNotEnabled)
	}
	if s.Controller == nil || s.Controller.Agent == nil {
		return nil, awsapi.Errorf("TargetNotConnectedException", execInternal)
	}
	sess, err := s.Controller.Agent.OpenExec(ctx, agent.ExecRequest{
		TaskID:    rec.Spec.TaskID,
		Container: ecstypes.Deref(target.Name),
		Command:   args,
	})
	if err != nil {
		if !errors.Is(err, agent.ErrExecTargetNotRunning) && s.Log != nil {
			s.Log.Warn("ExecuteCommand: agent", "task", rec.Spec.TaskID, "err", err)
		}
		return nil, awsapi.Errorf("TargetNotConnectedException", execInternal)
	}
	return &ecstypes.ExecuteCommandResponse{
		ClusterArn:    cluster.ClusterArn,
		ContainerArn:  target.ContainerArn,
		ContainerName: target.Name,
		Interactive:   ecstypes.Bool(true),
		TaskArn:       t.TaskArn,
		Session: &ecstypes.Session{
			SessionId: ecstypes.String(sess.SessionID),
			// The SSM data channel (package ssmstream), which AWS's
			// session-manager-plugin speaks and which also hands
			// execstream clients (`gantry exec`) to the agent's stream.
			StreamUrl:  ecstypes.String(ssmstream.StreamURL(sess.StreamURL)),
			TokenValue: ecstypes.String(sess.Token),
		},
	}, nil
}
